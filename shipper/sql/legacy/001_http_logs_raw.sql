-- Seed 001's http_logs_raw, verbatim (MergeTree ... ORDER BY tuple() runs on 18.x too).
CREATE TABLE http_logs_raw
(
raw_json String
)
ENGINE = MergeTree
ORDER BY tuple();
