"""Brute-force reference for `ja4sensor query` / `timeline` / `report` (the numbers): reads every
line of every file with Python's own gzip and json modules, no prefilter, no parallelism, and
answers from the rules of the README (written again here, not imported). Called by
tests/reference.rs; times are given as Unix nanoseconds.

usage:
  reference.py query    --logs F... [--events F...] [selectors] [--needle TEXT]
  reference.py timeline --logs F... [--events F...] [selectors]
  reference.py counts   --logs F... [--events F...] [--since NS] [--until NS]

query:    stdout = the matching lines, in file order; stderr = JSON counts of skipped lines
          (those holding --needle that are not a JSON object; partial last lines; overlong).
timeline: stdout = one JSON object per entry.
counts:   stdout = JSON {"requests", "correlated", "events"} in the window.
"""

import argparse
import calendar
import datetime
import gzip
import ipaddress
import json
import sys

MAX_LINE = 1024 * 1024


def read_lines(path, counts):
    with open(path, "rb") as f:
        magic = f.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    parts = data.split(b"\n")
    last = parts.pop()  # after the final "\n": empty, or a line not finished
    if last:
        counts["partial"] += 1
    for line in parts:
        if not line:
            continue
        if len(line) > MAX_LINE:
            counts["overlong"] += 1
            continue
        yield line


def parse(line):
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        obj = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def rfc3339_ns(text):
    if not isinstance(text, str):
        return None
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    dt = dt.astimezone(datetime.timezone.utc)
    return calendar.timegm(dt.timetuple()) * 10**9 + dt.microsecond * 1000


def line_time(o):
    t = o.get("time")
    if not isinstance(t, str):
        t = o.get("timestamp")
    return rfc3339_ns(t)


def event_time(o):
    t = o.get("time_ns")
    if isinstance(t, int) and not isinstance(t, bool) and t >= 0:
        return t
    return rfc3339_ns(o.get("time"))


def norm_ip(text):
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return None
    if a.version == 6 and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def norm_net(text):
    net = ipaddress.ip_network(text, strict=False)
    if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
        net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    return net


def matches(o, role, a):
    if role == "log":
        req_key, conn_key = "request_id", "conn_id"
    else:
        req_key, conn_key = "parent_correlation_id", "root_correlation_id"
    if a.request_id is not None and o.get(req_key) != a.request_id:
        return False
    if a.conn_id is not None and o.get(conn_key) != a.conn_id:
        return False
    if a.ja4 is not None and o.get("ja4") != a.ja4:
        return False
    for tag in a.tag:
        k, v = tag.split("=", 1)
        if k.startswith("tag_"):
            k = k[4:]
        if role == "log":
            if o.get("tag_" + k) != v:
                return False
        else:
            tags = o.get("correlation_tags")
            if not isinstance(tags, dict) or tags.get(k) != v:
                return False
    if a.ip is not None:
        net = norm_net(a.ip)
        keys = ["src_ip", "useragent_ip"] if role == "log" else ["src_ip"]
        hit = False
        for k in keys:
            v = o.get(k)
            if isinstance(v, str):
                addr = norm_ip(v)
                if addr is not None and addr.version == net.version and addr in net:
                    hit = True
        if not hit:
            return False
    if a.since is not None or a.until is not None:
        t = line_time(o) if role == "log" else event_time(o)
        if t is None:
            return False
        if a.since is not None and t < a.since:
            return False
        if a.until is not None and t >= a.until:
            return False
    return True


def files(a):
    return [(p, "log") for p in a.logs] + [(p, "events") for p in (a.events or [])]


def cmd_query(a):
    counts = {"partial": 0, "overlong": 0, "hostile_with_needle": 0, "matched": 0}
    needle = a.needle.encode() if a.needle else None
    out = sys.stdout.buffer
    for path, role in files(a):
        for line in read_lines(path, counts):
            o = parse(line)
            if o is None:
                if needle is not None and needle in line:
                    counts["hostile_with_needle"] += 1
                continue
            if matches(o, role, a):
                counts["matched"] += 1
                out.write(line + b"\n")
    out.flush()
    sys.stderr.write(json.dumps(counts) + "\n")


def seq_of(o):
    for k in ("sequence_number", "keepalives"):
        v = o.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


def cmd_timeline(a):
    counts = {"partial": 0, "overlong": 0}
    only_conn = (a.conn_id is not None and not a.tag and a.ja4 is None and a.ip is None
                 and a.request_id is None and a.since is None and a.until is None)
    if only_conn:
        roots = {a.conn_id}
    else:
        roots = set()
        for path, role in files(a):
            for line in read_lines(path, counts):
                o = parse(line)
                if o is not None and matches(o, role, a):
                    r = o.get("conn_id" if role == "log" else "root_correlation_id")
                    if isinstance(r, str) and r:
                        roots.add(r)
    per_root = {}
    for path, role in files(a):
        for line in read_lines(path, counts):
            o = parse(line)
            if o is None:
                continue
            r = o.get("conn_id" if role == "log" else "root_correlation_id")
            if not isinstance(r, str) or r not in roots:
                continue
            text = line.decode("utf-8").strip(" \t\r\n")
            if role == "log":
                t = line_time(o)
                if t is None:
                    continue
                hello = o.get("b_timestamp")
                if not (isinstance(hello, int) and not isinstance(hello, bool) and hello > 0):
                    hello = None
                sid = o.get("stream_id")
                rid = o.get("request_id")
                per_root.setdefault(r, ([], []))[0].append({
                    "t": t, "seq": seq_of(o), "hello": hello, "line": text,
                    "stream": sid if isinstance(sid, int) and not isinstance(sid, bool) else None,
                    "id": rid if isinstance(rid, str) else None,
                })
            else:
                t = event_time(o)
                if t is None:
                    continue
                eid, parent = o.get("event_id"), o.get("parent_correlation_id")
                per_root.setdefault(r, ([], []))[1].append({
                    "t": t, "line": text,
                    "id": eid if isinstance(eid, str) else None,
                    "parent": parent if isinstance(parent, str) else None,
                })
    big = 2**64
    timelines = []
    for root, (reqs, evs) in per_root.items():
        reqs.sort(key=lambda q: (q["t"], big if q["seq"] is None else q["seq"]))
        entries = []
        hellos = [q for q in reqs if q["hello"] is not None]
        prev = None
        if hellos:
            h = min(hellos, key=lambda q: q["hello"])
            entries.append(dict(entry="handshake", t=h["hello"], line=h["line"]))
            prev = h["hello"]
        elif reqs:
            entries.append(dict(entry="connection", t=reqs[0]["t"], line=reqs[0]["line"]))
        known = {q["id"] for q in reqs if q["id"] is not None}
        by_parent, loose = {}, []
        ev_key = lambda e: (e["t"], 0 if e["id"] is None else 1, e["id"] or "")
        for e in evs:
            if e["parent"] is not None and e["parent"] in known:
                by_parent.setdefault(e["parent"], []).append(e)
            else:
                loose.append(e)
        loose.sort(key=ev_key)
        for l in by_parent.values():
            l.sort(key=ev_key)

        def event_entry(e, seq, gap):
            return dict(entry="event", t=e["t"], line=e["line"], id=e["id"], parent=e["parent"],
                        seq=seq, gap=gap)

        li = 0
        for q in reqs:
            while li < len(loose) and loose[li]["t"] < q["t"]:
                entries.append(event_entry(loose[li], None, None))
                li += 1
            entries.append(dict(entry="request", t=q["t"], line=q["line"], id=q["id"],
                                seq=q["seq"], stream=q["stream"],
                                gap=None if prev is None else q["t"] - prev))
            prev = q["t"]
            for e in by_parent.pop(q["id"], []) if q["id"] is not None else []:
                entries.append(event_entry(e, q["seq"], e["t"] - q["t"]))
        entries.extend(event_entry(e, None, None) for e in loose[li:])
        timelines.append((entries[0]["t"] if entries else big, root, entries))
    timelines.sort(key=lambda x: (x[0], x[1]))
    for _, root, entries in timelines:
        for e in entries:
            print(json.dumps({
                "root": root, "entry": e["entry"], "time_ns": e["t"], "id": e.get("id"),
                "parent": e.get("parent"), "seq": e.get("seq"), "stream": e.get("stream"),
                "gap": e.get("gap"), "line": e["line"],
            }, ensure_ascii=False))


def cmd_counts(a):
    counts = {"partial": 0, "overlong": 0}
    n = {"requests": 0, "correlated": 0, "events": 0}
    for path, role in files(a):
        for line in read_lines(path, counts):
            o = parse(line)
            if o is None or not matches(o, role, a):
                continue
            if role == "log":
                if line_time(o) is None:
                    continue
                n["requests"] += 1
                if o.get("correlated") is True:
                    n["correlated"] += 1
            elif event_time(o) is not None:
                n["events"] += 1
    print(json.dumps(n))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["query", "timeline", "counts"])
    p.add_argument("--logs", nargs="*", default=[])
    p.add_argument("--events", nargs="*", default=[])
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--ja4")
    p.add_argument("--ip")
    p.add_argument("--request-id", dest="request_id")
    p.add_argument("--conn-id", dest="conn_id")
    p.add_argument("--since", type=int)
    p.add_argument("--until", type=int)
    p.add_argument("--needle")
    a = p.parse_args()
    {"query": cmd_query, "timeline": cmd_timeline, "counts": cmd_counts}[a.cmd](a)


if __name__ == "__main__":
    main()
