-- 18.x neither computes the DEFAULT columns a view leaves out nor cascades views (a view on
-- http_logs_raw would not see rows that reached it through another view), so on a legacy server
-- the inbox fills http_logs itself, every column spelled out as in 002_http_logs.sql.
-- Consequence: rows inserted straight into http_logs_raw by another writer do not reach http_logs
-- on a legacy server; insert through ship_inbox.
CREATE MATERIALIZED VIEW ship_inbox_b_http_logs_mv TO http_logs AS
SELECT
    raw_json,
    visitParamExtractString(raw_json, 'time') AS time_str,
    visitParamExtractString(raw_json, 'timestamp') AS timestamp_str,
    parseDateTimeBestEffortOrZero(time_str) AS time,
    toDate(time) AS log_date,
    visitParamExtractString(raw_json, 'src_ip') AS src_ip,
    toUInt16(visitParamExtractUInt(raw_json, 'src_port')) AS src_port,
    visitParamExtractString(raw_json, 'dst_ip') AS dst_ip,
    toUInt16(visitParamExtractUInt(raw_json, 'dst_port')) AS dst_port,
    visitParamExtractBool(raw_json, 'correlated') AS correlated,
    toUInt16(visitParamExtractUInt(raw_json, 'keepalives')) AS keepalives,
    visitParamExtractString(raw_json, 'method') AS method,
    visitParamExtractString(raw_json, 'scheme') AS scheme,
    visitParamExtractString(raw_json, 'host') AS host,
    visitParamExtractString(raw_json, 'path') AS path,
    visitParamExtractString(raw_json, 'query') AS query,
    visitParamExtractString(raw_json, 'http_version') AS http_version,
    visitParamExtractString(raw_json, 'orphan_side') AS orphan_side,
    visitParamExtractUInt(raw_json, 'a_timestamp') AS a_timestamp,
    visitParamExtractUInt(raw_json, 'b_timestamp') AS b_timestamp,
    visitParamExtractString(raw_json, 'conn_id') AS conn_id,
    visitParamExtractBool(raw_json, 'ip_meta_df') AS ip_meta_df,
    toUInt32(visitParamExtractUInt(raw_json, 'ip_meta_id')) AS ip_meta_id,
    toUInt32(visitParamExtractUInt(raw_json, 'ip_meta_total_length')) AS ip_meta_total_length,
    toUInt8(visitParamExtractUInt(raw_json, 'ip_meta_ttl')) AS ip_meta_ttl,
    visitParamExtractString(raw_json, 'tcp_meta_options') AS tcp_meta_options,
    toUInt32(visitParamExtractUInt(raw_json, 'tcp_meta_window_size')) AS tcp_meta_window_size,
    toInt32(visitParamExtractInt(raw_json, 'syn_to_clienthello_ms')) AS syn_to_clienthello_ms,
    visitParamExtractString(raw_json, 'tls_version') AS tls_version,
    visitParamExtractString(raw_json, 'tls_sni') AS tls_sni,
    visitParamExtractString(raw_json, 'ja3') AS ja3,
    visitParamExtractString(raw_json, 'ja3_hash') AS ja3_hash,
    visitParamExtractString(raw_json, 'ja4') AS ja4,
    raw_json AS extra
FROM ship_inbox;
