#!/usr/bin/env python3
"""What does a request cost httpd, in instructions? The noise-free companion of overhead.py.

On a shared two-core machine, req/s and CPU-time ratios move by several percent between runs.
Instructions do not: this runs each variant's httpd single-process (`apache2 -X`, event MPM,
TLS) under callgrind and drives it with h2load over one connection at a time:

  a  no request logging at all (the module not loaded)
  b  a JSON CustomLog with fields comparable to ours (mod_log_config, escaped by httpd)
  c  mod_reqin_log + ja4sensor capturing lo (every request joined with its handshake)
  e  mod_reqin_log with `ReqinLogFingerprint inline` (httpd's own SYN and ClientHello, no sensor)

Each figure is the difference between two runs that differ only in the number of requests,
divided by that difference, so start-up, the first connections and shutdown cancel out:
instructions per keep-alive request, and per request on a new TLS connection (`Connection:
close`, handshake included). The sensor runs outside valgrind; only httpd is counted (kernel
work is not: callgrind counts user-space instructions). Needs root and valgrind (`make deps`),
and release builds (`make bench` builds them).
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ov  # noqa: E402  (the same httpd configurations)

WARMUP_CONNECTIONS = 20


def total_instructions(path):
    for line in open(path):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{path}: no instruction total")


def run_once(variant, tmp, requests, new_connections):
    """Total instructions of one httpd -X lifetime serving `requests` after the warm-up."""
    server = ov.Server(variant, Path(tmp) / f"{variant}-{requests}-{int(new_connections)}")
    # One process with a few threads: fewer idle threads mean less start-up to cancel out.
    with server.under_valgrind("callgrind", 4) as out_dir:
        log = server.root / "h2load.log"
        close = ("-H", "Connection: close")
        ov.h2load(server.url(), "h1", WARMUP_CONNECTIONS, 1, 1, log, extra=close)
        ov.h2load(server.url(), "h1", requests, 1, 1, log, extra=close if new_connections else ())
    lines = server.lines() if variant in "bce" else None
    if lines is not None and len(lines) != WARMUP_CONNECTIONS + requests:
        raise RuntimeError(f"{variant}: {len(lines)} lines for {WARMUP_CONNECTIONS + requests} requests")
    # Only the measured requests are checked: a warm-up connection may have reached the
    # listening socket while httpd (slow under valgrind) was still starting, before the sensor
    # saw it or post_config set TCP_SAVE_SYN.
    measured = lines[WARMUP_CONNECTIONS:] if lines is not None else []
    if variant == "c" and not all(l.get("correlated") for l in measured):
        raise RuntimeError("c: a request was not correlated")
    if variant == "e" and not all(l.get("fingerprint_source") == "inline" and "tcp_meta_options" in l
                                  for l in measured):
        raise RuntimeError("e: a request had no inline fingerprint with its SYN fields")
    return sum(total_instructions(f) for f in out_dir.glob("out.*"))


def per_request(variant, tmp, small, large, new_connections):
    a = run_once(variant, tmp, small, new_connections)
    b = run_once(variant, tmp, large, new_connections)
    return (b - a) / (large - small)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, nargs=2, default=[100, 1000], metavar=("SMALL", "LARGE"),
                    help="keep-alive requests of the two runs")
    ap.add_argument("--connections", type=int, nargs=2, default=[20, 100], metavar=("SMALL", "LARGE"),
                    help="new connections of the two runs")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--variants", default="abce", help="which variants to count (default abce)")
    args = ap.parse_args()
    for tool in ("valgrind", "h2load", "apache2", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run `make deps`")
    for f in (ov.MODULE, ov.SENSOR, ov.CAPTURE):
        if not f.exists():
            sys.exit(f"{f} not found: run `cargo build --release -p mod_reqin_log -p ja4sensor -p ja4sensor-pcap`")
    results = {}
    with tempfile.TemporaryDirectory(prefix="reqin-instr-") as tmp:
        os.chmod(tmp, 0o755)
        for v in args.variants:
            results[v] = (per_request(v, tmp, *args.requests, False),
                          per_request(v, tmp, *args.connections, True))
            print(f"{v}: {results[v][0]:.0f} instructions per keep-alive request, "
                  f"{results[v][1]:.0f} per request on a new connection", file=sys.stderr, flush=True)
    names = {"a": "(a) no logging", "b": "(b) JSON CustomLog", "c": "(c) mod_reqin_log + sensor",
             "e": "(e) mod_reqin_log inline"}
    if args.markdown:
        print("| variant | instructions / keep-alive request | instructions / new-connection request |")
        print("|---|---:|---:|")
        for v, (ka, nc) in results.items():
            print(f"| {names[v]} | {ka:,.0f} | {nc:,.0f} |")
    else:
        for v, (ka, nc) in results.items():
            print(f"{names[v]:30} {ka:12,.0f} {nc:14,.0f}")
    if "a" not in results:
        return
    for i, label in ((0, "keep-alive"), (1, "new connection")):
        a = results["a"][i]
        parts = [f"{v} − a = {results[v][i] - a:+,.0f} ({(results[v][i] - a) / a:+.1%})"
                 for v in results if v != "a"]
        print(f"- {label}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
