-- The detector's events (CONTRACTS.md): the jsonl line as it is, and the columns a query needs,
-- filled by ship_events_inbox's view (011: an 18.x view computes no DEFAULT). String for
-- LowCardinality(String) as in 002. `data` and `correlation_tags` hold the JSON text of those
-- objects.
CREATE TABLE reqin_events
(
raw_json String,
event_time DateTime,
time_ns UInt64,
event_id String,
severity String,
kind String,
type String,
module String,
rule String,
summary String,
parent_correlation_id String,
root_correlation_id String,
src_ip String,
ja4 String,
host String,
data String,
correlation_tags String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (toDate(event_time), src_ip, event_time);
