-- Every column spelled out (18.x views compute no DEFAULT). visitParamExtract* takes the first
-- `"key":` of the text, wherever it is, so the top-level keys are read from the line with its
-- `data` and `correlation_tags` objects (objects of scalars) blanked out: a `ja4` inside `data`
-- cannot be taken for the event's. Those two are cut out of the line as they are.
CREATE MATERIALIZED VIEW ship_events_inbox_a_mv TO reqin_events AS
SELECT
    raw_json,
    parseDateTimeBestEffortOrZero(visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'time')) AS event_time,
    visitParamExtractUInt(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'time_ns') AS time_ns,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'event_id') AS event_id,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'severity') AS severity,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'kind') AS kind,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'type') AS type,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'module') AS module,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'rule') AS rule,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'summary') AS summary,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'parent_correlation_id') AS parent_correlation_id,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'root_correlation_id') AS root_correlation_id,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'src_ip') AS src_ip,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'ja4') AS ja4,
    visitParamExtractString(replaceRegexpAll(raw_json, '"(data|correlation_tags)":\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\}', '"\\1":0'), 'host') AS host,
    extract(raw_json, '"data":(\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\})') AS data,
    extract(raw_json, '"correlation_tags":(\\{("(\\\\.|[^"\\\\])*"|[^"{}])*\\})') AS correlation_tags
FROM ship_events_inbox;
