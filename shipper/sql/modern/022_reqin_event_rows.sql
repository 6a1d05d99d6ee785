-- The detector's events (reqin_events) with the same names and client address forms as
-- reqin_requests: the event's own id as correlation_id, the address normalised and as a number
-- for CIDR tests (IPv4StringToNumOrDefault: 0 for IPv6 and empty addresses). Tags:
-- JSONExtractString(correlation_tags, '<key>').
CREATE VIEW reqin_event_rows AS
SELECT
    root_correlation_id,
    parent_correlation_id,
    event_id AS correlation_id,
    time_ns,
    event_time,
    severity,
    kind,
    type,
    module,
    rule,
    summary,
    replaceRegexpOne(JSONExtractString(raw_json, 'src_ip'), '^::ffff:', '') AS src_ip,
    IPv4StringToNumOrDefault(src_ip) AS src_ip_num,
    ja4,
    host,
    data,
    correlation_tags,
    raw_json
FROM reqin_events;
