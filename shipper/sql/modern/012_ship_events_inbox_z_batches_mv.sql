-- The events' batch ids go to the same ledger as the log's, last within the INSERT (see 008).
CREATE MATERIALIZED VIEW ship_events_inbox_z_batches_mv TO ship_batches AS
SELECT batch_id, count() AS rows, now() AS inserted_at
FROM ship_events_inbox
GROUP BY batch_id;
