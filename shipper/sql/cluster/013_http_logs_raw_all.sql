-- With `ship.clickhouse.cluster`: the whole fleet's rows, read through every shard. {cluster} and
-- {database} are filled in by --init-schema. The sharding key is the client address (the same
-- key as the other tables): a writer that inserts here sends one client's lines to one shard.
-- The shipper itself writes whole batches into one node's local tables (README "Many web
-- servers": exactly once needs a batch and its id on one node).
CREATE TABLE http_logs_raw_all AS http_logs_raw
ENGINE = Distributed({cluster}, {database}, http_logs_raw, cityHash64(visitParamExtractString(raw_json, 'src_ip')));
