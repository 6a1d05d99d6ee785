-- What the shipper inserts into: stores nothing, its views fan the block out (one INSERT, so
-- the rows and their batch id land together or not at all).
-- `deadline` (Unix seconds, server clock) is set by the shipper for each attempt; `live` is
-- computed once per block, before any view runs, and fails the whole INSERT when the attempt
-- reaches the server after its deadline: a request that sat in a frozen server's socket buffer
-- while the shipper gave up and re-checked can never land later as a duplicate.
CREATE TABLE ship_inbox
(
    batch_id String,
    raw_json String,
    deadline UInt32,
    live UInt8 DEFAULT throwIf(toUInt32(now()) > deadline)
)
ENGINE = Null;
