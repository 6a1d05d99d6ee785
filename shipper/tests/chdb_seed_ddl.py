"""Seed 001's own DDL (shipper/sql/modern, verbatim) on a current ClickHouse engine, in-process
(chdb): our correlated lines, inserted the way the shipper inserts them, must populate every
column of http_logs; the detector's events, inserted the way the shipper inserts them, every column
of reqin_events. Called by chdb_seed_ddl.rs; usage: chdb_seed_ddl.py SQL_DIR LINES_FILE EVENTS_FILE."""

import json
import pathlib
import sys

from chdb import session


def statements(sql):
    """Same rule as shipper/src/schema.rs: a statement ends with a `;` that ends a line."""
    out, cur = [], []
    for line in sql.splitlines():
        if line.rstrip().endswith(";"):
            cur.append(line.rstrip()[:-1])
            out.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    out.append("\n".join(cur))
    return [s.strip() for s in out
            if any(l.strip() and not l.strip().startswith("--") for l in s.splitlines())]


def main():
    sql_dir, lines_file = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    events_file = pathlib.Path(sys.argv[3])
    s = session.Session()
    q = lambda sql: s.query(sql, "TSV").bytes().decode().strip()
    print("engine", q("SELECT version()"))
    q("CREATE DATABASE IF NOT EXISTS seed")
    q("USE seed")
    for f in sorted(sql_dir.glob("*.sql")):
        for stmt in statements(f.read_text()):
            q(stmt)
        print("applied", f.name)
    lines = [l for l in lines_file.read_text().splitlines() if l]
    now = int(q("SELECT toUInt32(now())"))
    insert = "INSERT INTO ship_inbox (batch_id, raw_json, deadline) FORMAT JSONEachRow\n"
    # An attempt arriving after its deadline is refused whole, before any view writes.
    stale = json.dumps({"batch_id": "chdb:stale", "raw_json": lines[0], "deadline": now - 10})
    try:
        q(insert + stale)
        raise AssertionError("a stale insert was accepted")
    except Exception as e:  # chdb raises its own error type
        if "stale insert was accepted" in str(e):
            raise
    assert q("SELECT count() FROM http_logs_raw") == "0", "stale insert left rows"
    assert q("SELECT count() FROM ship_batches") == "0", "stale insert left a batch record"
    body = "\n".join(json.dumps({"batch_id": "chdb:0-1", "raw_json": l, "deadline": now + 60})
                     for l in lines)
    q(insert + body)
    n = len(lines)
    assert q("SELECT count(), uniqExact(raw_json) FROM http_logs_raw") == f"{n}\t{n}", "raw rows"
    assert q("SELECT count() FROM http_logs") == str(n), "http_logs rows (views cascade)"
    assert q("SELECT batch_id, rows FROM ship_batches") == f"chdb:0-1\t{n}", "batch record"
    cols = q("SELECT name, type FROM system.columns WHERE database = 'seed' AND table = 'http_logs' "
             "ORDER BY position").splitlines()
    assert len(cols) == 34, cols  # seed 001: raw_json + 33 extracted columns
    correlated = "path = '/item/7'"
    empty = []
    for c in cols:
        name, typ = c.split("\t", 1)
        if name == "orphan_side":  # set on orphans only, checked below
            continue
        if typ == "JSON":
            ok = q(f"SELECT length(JSONAllPaths({name})) > 10 FROM http_logs WHERE {correlated}")
        else:
            ok = q(f"SELECT {name} != defaultValueOfArgumentType({name}) FROM http_logs WHERE {correlated}")
        if ok != "1":
            empty.append(name)
    assert not empty, f"columns left at their default for a correlated line: {empty}"
    print(q("SELECT time, src_ip, dst_ip, src_port, correlated, ip_meta_ttl, syn_to_clienthello_ms, "
            f"a_timestamp, b_timestamp, ja4 FROM http_logs WHERE {correlated}"))
    assert q("SELECT orphan_side, correlated FROM http_logs WHERE path = '/item/5000'") == "A\t0"
    print(f"ok: {n} lines, {len(cols)} http_logs columns populated")
    events = [l for l in events_file.read_text().splitlines() if l]
    body = "\n".join(json.dumps({"batch_id": "chdb:events:0-1", "raw_json": l, "deadline": now + 60})
                     for l in events)
    q("INSERT INTO ship_events_inbox (batch_id, raw_json, deadline) FORMAT JSONEachRow\n" + body)
    m = len(events)
    assert q("SELECT count(), uniqExact(event_id) FROM reqin_events") == f"{m}\t{m}", "event rows"
    assert q("SELECT rows FROM ship_batches WHERE batch_id = 'chdb:events:0-1'") == str(m), "event batch"
    ecols = q("SELECT name FROM system.columns WHERE database = 'seed' AND table = 'reqin_events' "
              "ORDER BY position").splitlines()
    assert len(ecols) == 17, ecols  # CONTRACTS.md: raw_json + 16 extracted columns
    ev = json.loads(events[7])
    row = json.loads(s.query(f"SELECT * FROM reqin_events WHERE event_id = '{ev['event_id']}'",
                             "JSONEachRow").bytes().decode())
    for k in ("severity", "kind", "type", "module", "rule", "summary", "parent_correlation_id",
              "root_correlation_id", "src_ip", "ja4", "host"):
        assert row[k] == ev[k], (k, row[k], ev[k])
    assert str(row["time_ns"]) == str(ev["time_ns"]), row["time_ns"]
    assert row["event_time"] == ev["time"][:19].replace("T", " "), row["event_time"]
    for k in ("data", "correlation_tags"):
        assert json.loads(row[k]) == ev[k], (k, row[k])
    print(f"ok: {m} events, {len(ecols)} reqin_events columns populated")


if __name__ == "__main__":
    main()
