-- Written last within the INSERT: the server pushes a block to a table's views in name order
-- (18.x keeps them in a sorted set), hence the `z`. Should an earlier view fail, the batch id is
-- not recorded and the batch is sent again (a duplicate, never a loss); the reverse order could
-- record a batch whose rows never landed.
CREATE MATERIALIZED VIEW ship_inbox_z_batches_mv TO ship_batches AS
SELECT batch_id, count() AS rows, now() AS inserted_at
FROM ship_inbox
GROUP BY batch_id;
