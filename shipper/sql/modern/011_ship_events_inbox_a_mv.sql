-- Only raw_json: the server computes every other column of reqin_events from its DEFAULT.
CREATE MATERIALIZED VIEW ship_events_inbox_a_mv TO reqin_events AS
SELECT raw_json FROM ship_events_inbox;
