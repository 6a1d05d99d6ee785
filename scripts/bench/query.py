#!/usr/bin/env python3
"""`make bench`: ja4sensor query / timeline against seed 004's targets and against `grep -F`.

1. Seed 004's targets, measured on the generated log of the tests (sensor/query/tests/common/
   gen.rs, via `examples/gen_log`): tag search over 10 000 events (< 10 ms), timeline of a
   connection of >= 1 000 entries (< 100 ms), memory for 10 000 events (< 10 MB). Each is the
   wall time of the whole `ja4sensor` process (start-up included), median of --repeats runs,
   and its peak RSS (wait4's ru_maxrss).
2. At scale: `query --tag` over a generated log of about 1M lines in one file, against
   `LC_ALL=C grep -a -F '"tag_investigation_id":"INC-12345"'` on the same file in the same run
   (page cache warm for both, output to a file on the same disk for both, runs alternated):
   MB/s and the ratio (target >= 0.5x grep), and our peak RSS (target <= 32 MiB). Then a JA4 (a
   fifth of the lines match: the parser's cost), an address, a time window (no prefilter: every
   line parsed), and four rotated files read by 1 and 2 threads.

Needs release builds: `cargo build --release -p ja4sensor && cargo build --release -p
ja4sensor-query --example gen_log` (make bench does both), and GNU time (`make deps`). Prints a markdown table for
BENCHMARKS.md. Usage: query.py [--lines 1000000] [--repeats 5] [--dir /var/tmp/...] [--keep]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target/release/ja4sensor")
GEN = os.path.join(ROOT, "target/release/examples/gen_log")
TAG = "investigation_id=INC-12345"
TAG_TEXT = '"tag_investigation_id":"INC-12345"'
# The tag as an event holds it (inside `correlation_tags`).
EVENT_TAG_TEXT = '"investigation_id":"INC-12345"'
CURL_JA4 = "t13d3112h1_e8f1e7e78f70_6bebaf5329ac"
# Requests per connection in the generated log: 1..6, mean 3.5.
REQUESTS_PER_CONN = 3.5


TIME = "/usr/bin/time"
# grep byte by byte, as ours reads (no locale decoding).
ENV_C = dict(os.environ, LC_ALL="C")


def run(cmd, out_path=os.devnull, env=None):
    """Runs cmd with stdout to out_path: (wall seconds, exit code). No wrapper in between."""
    with open(out_path, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        wall = time.perf_counter() - t0
    return wall, p.returncode


def peak_rss_kib(cmd, out_path=os.devnull, env=None):
    """Peak RSS of cmd, KiB, as GNU time reports it (its own small process forks and execs cmd:
    a child forked from this Python process would count the interpreter's pages too)."""
    with open(out_path, "wb") as out:
        p = subprocess.run([TIME, "-f", "%M", *cmd], stdout=out, stderr=subprocess.PIPE, env=env)
    if p.returncode not in (0, 1):
        sys.exit(f"{cmd}: exit {p.returncode}: {p.stderr.decode()}")
    return int(p.stderr.decode().strip().splitlines()[-1])


def median_run(cmd, repeats, out_path=os.devnull, env=None):
    """Median wall time of `repeats` runs, and the peak RSS of one more run."""
    walls = []
    for _ in range(repeats):
        w, code = run(cmd, out_path, env)
        if code not in (0, 1):
            sys.exit(f"{cmd}: exit {code}")
        walls.append(w)
    return statistics.median(walls), peak_rss_kib(cmd, out_path, env)


def gen(dir_, connections, max_requests, rotations, gzip_files):
    os.makedirs(dir_, exist_ok=True)
    out = subprocess.run([GEN, dir_, str(connections), str(max_requests), str(rotations),
                          str(gzip_files)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def lines_of(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the generated logs go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    for b in (BIN, GEN):
        if not os.path.exists(b):
            sys.exit(f"{b} missing: cargo build --release -p ja4sensor && "
                     "cargo build --release -p ja4sensor-query --example gen_log")
    base = a.dir or tempfile.mkdtemp(prefix="ja4sensor-query-bench-")
    rows = []
    try:
        # --- 1. seed 004's targets ------------------------------------------------------
        small = os.path.join(base, "seed")
        info = gen(os.path.join(small, "events"), 300, 750, 0, 0)
        events = info["events"][0]
        ten_k = os.path.join(small, "events-10k.jsonl")
        with open(events, "rb") as src, open(ten_k, "wb") as dst:
            for i, line in enumerate(src):
                if i == 10_000:
                    break
                dst.write(line)
        n_events = lines_of(ten_k)
        if n_events < 10_000:
            sys.exit(f"only {n_events} events generated")
        matches = os.path.join(small, "matches.out")
        grep_matches = os.path.join(small, "grep.out")
        ours_cmd = [BIN, "query", "-q", "--events", ten_k, "--tag", TAG]
        # The floor any tool pays for this answer (start a process, read 5.5 MB, write 2.5 MB
        # into a file): grep -F of the tag's text in the same file, alternated run by run.
        grep_cmd = ["grep", "-a", "-F", EVENT_TAG_TEXT, ten_k]
        o_walls, g_walls = [], []
        for _ in range(a.repeats * 4):
            w, code = run(ours_cmd, matches)
            if code not in (0, 1):
                sys.exit(f"{ours_cmd}: exit {code}")
            o_walls.append(w)
            g_walls.append(run(grep_cmd, grep_matches, ENV_C)[0])
        wall, rss = statistics.median(o_walls), peak_rss_kib(ours_cmd, matches)
        found = lines_of(matches)
        rows.append(("tag search over %d events (%d matches), whole process, answer to a file; "
                     "grep -F of the same text: %.2f ms (%d lines)"
                     % (n_events, found, statistics.median(g_walls) * 1e3, lines_of(grep_matches)),
                     "< 10 ms", "%.2f ms" % (wall * 1e3), "%.1f MiB" % (rss / 1024)))
        rows.append(("memory for %d events (peak RSS of that query)" % n_events, "< 10 MB",
                     "%.1f MiB" % (rss / 1024), ""))
        # A log of about 10 000 lines whose first connection has 750 requests.
        info = gen(os.path.join(small, "timeline"), 30, 750, 0, 0)
        events = info["events"][0]
        conn = info["suspect_conn"]
        tl_out = os.path.join(small, "timeline.out")
        log = info["logs"][0]
        wall, rss = median_run([BIN, "timeline", "-q", "--json", "--conn-id", conn, "--events",
                                events, log], a.repeats * 4, tl_out)
        entries = lines_of(tl_out)
        rows.append(("timeline of one connection: %d entries (requests + events) from %d lines + %d events"
                     % (entries, lines_of(log), lines_of(events)),
                     "< 100 ms", "%.2f ms" % (wall * 1e3), "%.1f MiB" % (rss / 1024)))
        if entries < 1000:
            sys.exit(f"the timeline has {entries} entries, fewer than 1000")

        # --- 2. at scale: one ~1M-line file ---------------------------------------------
        big = os.path.join(base, "big")
        info = gen(big, int(a.lines / REQUESTS_PER_CONN), 6, 0, 0)
        log = info["logs"][0]
        size = os.path.getsize(log)
        n_lines = info["lines"]
        warm([log])
        grep_out, ours_out = os.path.join(big, "grep.out"), os.path.join(big, "ours.out")

        def versus(name, ours_cmd, grep_text, target):
            g_walls, o_walls = [], []
            for _ in range(a.repeats):
                w, _ = run(["grep", "-a", "-F", grep_text, log], grep_out, ENV_C)
                g_walls.append(w)
                w, code = run(ours_cmd, ours_out)
                if code not in (0, 1):
                    sys.exit(f"{ours_cmd}: exit {code}")
                o_walls.append(w)
            o_rss = [peak_rss_kib(ours_cmd, ours_out)]
            g, o = statistics.median(g_walls), statistics.median(o_walls)
            ours_n, grep_n = lines_of(ours_out), lines_of(grep_out)
            rows.append((
                "%s over %d lines, %.0f MB: ours %.0f MB/s (%d exact matches), grep -F %.0f MB/s (%d lines)"
                % (name, n_lines, size / 1e6, size / o / 1e6, ours_n, size / g / 1e6, grep_n),
                target, "%.2fx grep (%.2f s vs %.2f s)" % (g / o, o, g),
                "%.1f MiB" % (max(o_rss) / 1024)))
            return max(o_rss)

        rss = versus("query --tag", [BIN, "query", "-q", "--tag", TAG, log], TAG_TEXT,
                     ">= 0.5x grep, RSS <= 32 MiB")
        rows.append(("peak RSS of query --tag over the %.0f MB file" % (size / 1e6), "<= 32 MiB",
                     "%.1f MiB" % (rss / 1024), ""))
        versus("query --ja4 (a fifth of the lines match)",
               [BIN, "query", "-q", "--ja4", CURL_JA4, log], '"ja4":"%s"' % CURL_JA4, "")
        versus("query --ip", [BIN, "query", "-q", "--ip", "203.0.113.66", log],
               '"src_ip":"203.0.113.66"', "")
        # A window holding little: no needle, every line parsed for its time.
        t0 = "2026-11-25T07:40:00Z"
        wall, rss = median_run([BIN, "query", "-q", "--since", t0, "--until",
                                "2026-11-25T07:41:00Z", log], a.repeats, ours_out)
        rows.append(("query --since/--until (no prefilter: every line parsed), %d matches"
                     % lines_of(ours_out), "", "%.0f MB/s (%.2f s)" % (size / wall / 1e6, wall),
                     "%.1f MiB" % (rss / 1024)))
        shutil.rmtree(big)

        # --- 3. rotated files, in parallel ----------------------------------------------
        rot = os.path.join(base, "rotated")
        info = gen(rot, int(a.lines / REQUESTS_PER_CONN / 2), 6, 3, 0)
        total = sum(os.path.getsize(p) for p in info["logs"])
        warm(info["logs"])
        rot_out = os.path.join(rot, "ours.out")
        for threads in (1, 2):
            wall, rss = median_run([BIN, "query", "-q", "--threads", str(threads), "--tag", TAG,
                                    *info["logs"]], a.repeats, rot_out)
            rows.append(("query --tag over 4 files, %.0f MB, %d thread(s)" % (total / 1e6, threads),
                         "", "%.0f MB/s (%.2f s)" % (total / wall / 1e6, wall),
                         "%.1f MiB" % (rss / 1024)))
    finally:
        if not a.keep and not a.dir:
            shutil.rmtree(base, ignore_errors=True)
    print("| what | target | measured | peak RSS |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
