-- One row per connection (seed 004's root): its handshake as the sensor saw it (the ClickHello
-- time `b_timestamp`, 0 for a connection without one: plain HTTP, orphans), its first and last
-- request and how many there were. `ja4sensor timeline` starts each connection with this.
CREATE VIEW reqin_connections AS
SELECT
    root_correlation_id,
    min(time_ns) AS first_request_ns,
    max(time_ns) AS last_request_ns,
    count() AS requests,
    minIf(b_timestamp, b_timestamp > 0) AS hello_ns,
    any(src_ip) AS src_ip,
    any(src_port) AS src_port,
    any(dst_ip) AS dst_ip,
    any(dst_port) AS dst_port,
    anyIf(ja4, ja4 != '') AS ja4,
    anyIf(ja4_client, ja4_client != '') AS ja4_client,
    anyIf(tls_version, tls_version != '') AS tls_version,
    anyIf(tls_sni, tls_sni != '') AS tls_sni,
    anyIf(tls_alpn, tls_alpn != '') AS tls_alpn,
    maxIf(ip_meta_ttl, b_timestamp > 0) AS ip_meta_ttl,
    anyIf(tcp_os, tcp_os != '') AS tcp_os,
    anyIf(orphan_reason, orphan_reason != '') AS orphan_reason
FROM reqin_requests
WHERE root_correlation_id != ''
GROUP BY root_correlation_id;
