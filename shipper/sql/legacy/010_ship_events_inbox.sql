-- What the shipper inserts the detector's events into: ship_inbox's twin (005), same deadline.
CREATE TABLE ship_events_inbox
(
    batch_id String,
    raw_json String,
    deadline UInt32,
    live UInt8 DEFAULT throwIf(toUInt32(now()) > deadline)
)
ENGINE = Null;
