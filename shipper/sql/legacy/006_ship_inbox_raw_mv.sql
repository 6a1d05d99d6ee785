-- Rows reach http_logs_raw exactly as seed 001 stores them; on a legacy server http_logs is filled by 007_ship_inbox_http_logs_mv.
CREATE MATERIALIZED VIEW ship_inbox_a_raw_mv TO http_logs_raw AS
SELECT raw_json FROM ship_inbox;
