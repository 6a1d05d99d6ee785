-- Rows reach http_logs_raw exactly as seed 001 stores them; http_logs follows through
-- http_logs_mv (views cascade on a modern server).
CREATE MATERIALIZED VIEW ship_inbox_a_raw_mv TO http_logs_raw AS
SELECT raw_json FROM ship_inbox;
