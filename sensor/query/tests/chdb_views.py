"""The query tools' modern views (shipper/sql/modern/020-029, after every migration before them)
on a current ClickHouse engine, in-process (chdb, the project's .venv): the lines shipped the way
the shipper ships them, the events into reqin_events, then each question's answer. Called by
clickhouse_sql.rs with one JSON file: {"migrations": [paths in order], "reqin_events_fixture":
SQL or null, "lines": [...], "events": [rows], "questions": [[name, sql], ...]}. Prints one JSON
object: {"engine": version, name: answer text, ...}."""

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
    spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
    s = session.Session()
    q = lambda sql, fmt="TSV": s.query(sql, fmt).bytes().decode()
    out = {"engine": q("SELECT version()").strip()}
    q("CREATE DATABASE IF NOT EXISTS views")
    q("USE views")
    fixture = spec.get("reqin_events_fixture")
    for path in spec["migrations"]:
        name = pathlib.Path(path).name
        if fixture and name >= "020":
            q(fixture)
            fixture = None
        for stmt in statements(pathlib.Path(path).read_text()):
            q(stmt)
    now = int(q("SELECT toUInt32(now())").strip())
    rows = "\n".join(json.dumps({"batch_id": "chdb:0-1", "raw_json": l, "deadline": now + 120})
                     for l in spec["lines"])
    q("INSERT INTO ship_inbox (batch_id, raw_json, deadline) FORMAT JSONEachRow\n" + rows)
    events = "\n".join(json.dumps(e) for e in spec["events"])
    q("INSERT INTO reqin_events FORMAT JSONEachRow\n" + events)
    n = q("SELECT count() FROM reqin_requests").strip()
    assert n == str(len(spec["lines"])), f"reqin_requests has {n} rows"
    for name, sql in spec["questions"]:
        # The question carries its FORMAT clause; chdb's own format argument is then ignored.
        out[name] = q(sql, "JSONEachRow")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
