-- Seed 001's http_logs for servers older than 23 (Debian's 18.16): same columns and order key;
-- visitParamExtract* for JSONExtract*, String for IPv4 and JSON, String for LowCardinality(String)
-- (experimental there), parseDateTimeBestEffortOrZero so a line without `time` cannot fail an
-- insert. visitParamExtract* reads flat objects with compact separators: our lines are exactly that.
CREATE TABLE http_logs
(
raw_json String,
time_str String DEFAULT visitParamExtractString(raw_json, 'time'),
timestamp_str String DEFAULT visitParamExtractString(raw_json, 'timestamp'),
time DateTime DEFAULT parseDateTimeBestEffortOrZero(time_str),
log_date Date DEFAULT toDate(time),
src_ip String DEFAULT visitParamExtractString(raw_json, 'src_ip'),
src_port UInt16 DEFAULT toUInt16(visitParamExtractUInt(raw_json, 'src_port')),
dst_ip String DEFAULT visitParamExtractString(raw_json, 'dst_ip'),
dst_port UInt16 DEFAULT toUInt16(visitParamExtractUInt(raw_json, 'dst_port')),
correlated UInt8 DEFAULT visitParamExtractBool(raw_json, 'correlated'),
keepalives UInt16 DEFAULT toUInt16(visitParamExtractUInt(raw_json, 'keepalives')),
method String DEFAULT visitParamExtractString(raw_json, 'method'),
scheme String DEFAULT visitParamExtractString(raw_json, 'scheme'),
host String DEFAULT visitParamExtractString(raw_json, 'host'),
path String DEFAULT visitParamExtractString(raw_json, 'path'),
query String DEFAULT visitParamExtractString(raw_json, 'query'),
http_version String DEFAULT visitParamExtractString(raw_json, 'http_version'),
orphan_side String DEFAULT visitParamExtractString(raw_json, 'orphan_side'),
a_timestamp UInt64 DEFAULT visitParamExtractUInt(raw_json, 'a_timestamp'),
b_timestamp UInt64 DEFAULT visitParamExtractUInt(raw_json, 'b_timestamp'),
conn_id String DEFAULT visitParamExtractString(raw_json, 'conn_id'),
ip_meta_df UInt8 DEFAULT visitParamExtractBool(raw_json, 'ip_meta_df'),
ip_meta_id UInt32 DEFAULT toUInt32(visitParamExtractUInt(raw_json, 'ip_meta_id')),
ip_meta_total_length UInt32 DEFAULT toUInt32(visitParamExtractUInt(raw_json, 'ip_meta_total_length')),
ip_meta_ttl UInt8 DEFAULT toUInt8(visitParamExtractUInt(raw_json, 'ip_meta_ttl')),
tcp_meta_options String DEFAULT visitParamExtractString(raw_json, 'tcp_meta_options'),
tcp_meta_window_size UInt32 DEFAULT toUInt32(visitParamExtractUInt(raw_json, 'tcp_meta_window_size')),
syn_to_clienthello_ms Int32 DEFAULT toInt32(visitParamExtractInt(raw_json, 'syn_to_clienthello_ms')),
tls_version String DEFAULT visitParamExtractString(raw_json, 'tls_version'),
tls_sni String DEFAULT visitParamExtractString(raw_json, 'tls_sni'),
ja3 String DEFAULT visitParamExtractString(raw_json, 'ja3'),
ja3_hash String DEFAULT visitParamExtractString(raw_json, 'ja3_hash'),
ja4 String DEFAULT visitParamExtractString(raw_json, 'ja4'),
extra String DEFAULT raw_json
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(log_date)
ORDER BY (log_date, dst_ip, src_ip, time);
