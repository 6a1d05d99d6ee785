-- Seed 000: "raw JSON stored, then parsed by materialized views". Only raw_json is selected:
-- a modern server computes every other column from its DEFAULT expression.
CREATE MATERIALIZED VIEW http_logs_mv TO http_logs AS SELECT raw_json FROM http_logs_raw;
