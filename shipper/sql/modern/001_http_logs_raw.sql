-- Seed 001's http_logs_raw, verbatim.
CREATE TABLE http_logs_raw
(
raw_json String
)
ENGINE = MergeTree
ORDER BY tuple();
