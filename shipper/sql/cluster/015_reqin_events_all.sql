-- The detector's events of every shard (see 013).
CREATE TABLE reqin_events_all AS reqin_events
ENGINE = Distributed({cluster}, {database}, reqin_events, cityHash64(src_ip));
