-- Seed 001's http_logs of every shard (see 013).
CREATE TABLE http_logs_all AS http_logs
ENGINE = Distributed({cluster}, {database}, http_logs, cityHash64(src_ip));
