-- The gap before each request of a connection: since the previous request, the first one since
-- the ClientHello (NULL for a first request without a handshake), as `ja4sensor timeline`
-- prints it. Requests of a connection in (time_ns, sequence_number) order.
CREATE VIEW reqin_request_gaps AS
SELECT
    root_correlation_id,
    tupleElement(r, 3) AS correlation_id,
    tupleElement(r, 2) AS sequence_number,
    tupleElement(r, 1) AS time_ns,
    if(i = 1 AND hello = 0, NULL, toInt64(tupleElement(r, 1)) - toInt64(if(i = 1, hello, tupleElement(rs[i - 1], 1)))) AS gap_ns
FROM
(
    SELECT
        root_correlation_id,
        minIf(b_timestamp, b_timestamp > 0) AS hello,
        arraySort(groupArray((time_ns, sequence_number, correlation_id))) AS rs
    FROM reqin_requests
    WHERE root_correlation_id != ''
    GROUP BY root_correlation_id
)
ARRAY JOIN rs AS r, arrayEnumerate(rs) AS i;
