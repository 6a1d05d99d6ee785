-- `ja4sensor timeline` in SQL: every entry of every connection, one row each: the handshake
-- (or, without one, the connection at its first request), each request, each event of the
-- detector (reqin_event_rows, pointing at its request and connection). Order a connection's rows
-- with ORDER BY root_correlation_id, time_ns, rank, sequence_number; the gaps between requests
-- are in reqin_request_gaps. Example (everything one address did):
--   SELECT * FROM reqin_timeline WHERE root_correlation_id IN
--     (SELECT root_correlation_id FROM reqin_requests WHERE src_ip = '203.0.113.66')
--   ORDER BY root_correlation_id, time_ns, rank, sequence_number
CREATE VIEW reqin_timeline AS
SELECT
    toString(root_correlation_id) AS root_correlation_id,
    toString(if(hello_ns > 0, 'handshake', 'connection')) AS entry,
    toUInt8(0) AS rank,
    toUInt64(if(hello_ns > 0, hello_ns, first_request_ns)) AS time_ns,
    toString('') AS correlation_id,
    toString('') AS parent_correlation_id,
    toUInt32(0) AS sequence_number,
    toUInt32(0) AS stream_id,
    toString(src_ip) AS src_ip,
    toString(ja4) AS ja4,
    toString(if(hello_ns > 0,
        concat('TLS ', tls_version, ' sni=', tls_sni, ' alpn=', tls_alpn, ' ja4=', ja4, ' client=', ja4_client, ' ttl=', toString(ip_meta_ttl), ' os=', tcp_os),
        concat('no handshake record orphan_reason=', orphan_reason))) AS what
FROM reqin_connections
UNION ALL
SELECT
    toString(root_correlation_id),
    toString('request'),
    toUInt8(1),
    toUInt64(time_ns),
    toString(correlation_id),
    toString(''),
    toUInt32(sequence_number),
    toUInt32(stream_id),
    toString(src_ip),
    toString(ja4),
    toString(concat(method, ' ', host, path, if(query = '', '', concat('?', query)), ' ', http_version, ' ', toString(status), ' ua=', user_agent))
FROM reqin_requests
WHERE root_correlation_id != ''
UNION ALL
SELECT
    toString(root_correlation_id),
    toString('event'),
    toUInt8(2),
    toUInt64(time_ns),
    toString(correlation_id),
    toString(parent_correlation_id),
    toUInt32(0),
    toUInt32(0),
    toString(src_ip),
    toString(ja4),
    toString(concat(severity, ' ', type, ' rule=', rule, ': ', summary))
FROM reqin_event_rows
WHERE root_correlation_id != '';
