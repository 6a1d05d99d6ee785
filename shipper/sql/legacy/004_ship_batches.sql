-- The shipper's dedup record: one row per batch, written by the inbox's view in the same INSERT
-- as the batch's rows.
CREATE TABLE ship_batches
(
    batch_id String,
    rows UInt64,
    inserted_at DateTime
)
ENGINE = MergeTree
ORDER BY batch_id;
