-- The detector's events (CONTRACTS.md): the jsonl line as it is, every other column extracted from
-- it by its DEFAULT (a modern server computes them for the rows a view writes).
CREATE TABLE reqin_events
(
raw_json String,
event_time DateTime DEFAULT parseDateTimeBestEffortOrZero(JSONExtractString(raw_json, 'time')),
time_ns UInt64 DEFAULT JSONExtractUInt(raw_json, 'time_ns'),
event_id String DEFAULT JSONExtractString(raw_json, 'event_id'),
severity LowCardinality(String) DEFAULT JSONExtractString(raw_json, 'severity'),
kind LowCardinality(String) DEFAULT JSONExtractString(raw_json, 'kind'),
type LowCardinality(String) DEFAULT JSONExtractString(raw_json, 'type'),
module LowCardinality(String) DEFAULT JSONExtractString(raw_json, 'module'),
rule LowCardinality(String) DEFAULT JSONExtractString(raw_json, 'rule'),
summary String DEFAULT JSONExtractString(raw_json, 'summary'),
parent_correlation_id String DEFAULT JSONExtractString(raw_json, 'parent_correlation_id'),
root_correlation_id String DEFAULT JSONExtractString(raw_json, 'root_correlation_id'),
src_ip String DEFAULT JSONExtractString(raw_json, 'src_ip'),
ja4 String DEFAULT JSONExtractString(raw_json, 'ja4'),
host String DEFAULT JSONExtractString(raw_json, 'host'),
data String DEFAULT JSONExtractRaw(raw_json, 'data'),
correlation_tags String DEFAULT JSONExtractRaw(raw_json, 'correlation_tags')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (toDate(event_time), src_ip, event_time);
