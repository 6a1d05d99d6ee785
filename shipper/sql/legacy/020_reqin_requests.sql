-- `ja4sensor query` in SQL: one row per request of http_logs with the fields of the correlated
-- line that seed 001's columns lack (CONTRACTS.md: request_id, sequence_number, stream_id, tags,
-- tcp_os, ja4_client, the User-Agent), read from raw_json, named as seed 004 names them. The
-- client address is normalised (`::ffff:a.b.c.d` is the IPv4 client of a dual-stack listener)
-- and given as a number for CIDR tests (0 for IPv6 and empty addresses). time_ns is the line's `time` (microseconds) in ns.
-- Tags: visitParamExtractString(raw_json, 'tag_<key>').
CREATE VIEW reqin_requests AS
SELECT
    conn_id AS root_correlation_id,
    visitParamExtractString(raw_json, 'request_id') AS correlation_id,
    toUInt32(visitParamExtractUInt(raw_json, 'sequence_number')) AS sequence_number,
    toUInt32(visitParamExtractUInt(raw_json, 'stream_id')) AS stream_id,
    time,
    toUInt64(time) * 1000000000 + toUInt64OrZero(substring(time_str, 21, 6)) * 1000 AS time_ns,
    replaceRegexpOne(visitParamExtractString(raw_json, 'src_ip'), '^::ffff:', '') AS src_ip,
    IPv4StringToNum(src_ip) AS src_ip_num,
    replaceRegexpOne(visitParamExtractString(raw_json, 'useragent_ip'), '^::ffff:', '') AS useragent_ip,
    IPv4StringToNum(useragent_ip) AS useragent_ip_num,
    src_port,
    dst_ip,
    dst_port,
    correlated,
    visitParamExtractString(raw_json, 'orphan_reason') AS orphan_reason,
    method,
    host,
    path,
    query,
    http_version,
    toUInt16(visitParamExtractUInt(raw_json, 'status')) AS status,
    visitParamExtractString(raw_json, 'header_User-Agent') AS user_agent,
    ja4,
    visitParamExtractString(raw_json, 'ja4_client') AS ja4_client,
    tls_version,
    tls_sni,
    visitParamExtractString(raw_json, 'tls_alpn') AS tls_alpn,
    ip_meta_ttl,
    visitParamExtractString(raw_json, 'tcp_os') AS tcp_os,
    b_timestamp,
    syn_to_clienthello_ms,
    raw_json
FROM http_logs;
