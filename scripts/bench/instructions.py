#!/usr/bin/env python3
"""What does a request cost httpd, in instructions? The noise-free companion of overhead.py.

On a shared two-core machine, req/s and CPU-time ratios move by several percent between runs.
Instructions do not: this runs each variant's httpd single-process (`apache2 -X`, event MPM,
TLS) under cachegrind and drives it with h2load over one connection at a time:

  a  no request logging at all (the module not loaded)
  b  a JSON CustomLog with fields comparable to ours (mod_log_config, escaped by httpd)
  c  mod_reqin_log + ja4sensor capturing lo (every request joined with its handshake)
  e  mod_reqin_log with `ReqinLogFingerprint inline` (httpd's own SYN and ClientHello, no sensor)

Each figure is the difference between two runs that differ only in the number of requests,
divided by that difference, so start-up, the first connections and shutdown cancel out:
instructions per keep-alive request, and per request on a new TLS connection (`Connection:
close`, handshake included). The sensor runs outside valgrind; only httpd is counted (kernel
work is not: valgrind counts user-space instructions). Needs root and valgrind (`make deps`),
and release builds (`make bench` builds them).

On a new connection the handshake's cryptography pushes everything else out of the core's
caches, so what a module costs there is less its instructions than the memory lines its code
and data bring back. cachegrind also simulates the caches: the last level is given the size of
one core's L2 here (read from sysfs), and its misses per new-connection request (instruction
and data, read and write) are the fourth column — deterministic too.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ov  # noqa: E402  (the same httpd configurations)

WARMUP_CONNECTIONS = 20


# cachegrind's events with --cache-sim=yes; the L2-sized last level's misses are the IL/DL ones.
L2_MISS_EVENTS = ("ILmr", "DLmr", "DLmw")


def l2_cache_bytes():
    """One core's L2 (sysfs), 512 KiB if the kernel does not say; cachegrind wants a power of 2."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                n = int(size.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
                return 1 << (n.bit_length() - 1)
        except (OSError, ValueError):
            pass
    return 512 << 10


def totals(path):
    """{event: total} of one cachegrind output file."""
    events = None
    for line in open(path):
        if line.startswith("events:"):
            events = line.split()[1:]
        if line.startswith(("summary:", "totals:")) and events:
            return dict(zip(events, (int(x) for x in line.split()[1:])))
    raise RuntimeError(f"{path}: no totals")


def run_once(variant, tmp, requests, new_connections):
    """(instructions, simulated L2 misses) of one httpd -X lifetime serving `requests` after
    the warm-up."""
    server = ov.Server(variant, Path(tmp) / f"{variant}-{requests}-{int(new_connections)}")
    l2 = f"{l2_cache_bytes()},8,64"
    # One process with a few threads: fewer idle threads mean less start-up to cancel out.
    with server.under_valgrind("cachegrind", 4, "--cache-sim=yes", f"--LL={l2}") as out_dir:
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
    counts = [totals(f) for f in out_dir.glob("out.*")]
    return (sum(c["Ir"] for c in counts), sum(c[e] for c in counts for e in L2_MISS_EVENTS))


def per_request(variant, tmp, small, large, new_connections):
    """(instructions, simulated L2 misses) per request."""
    a = run_once(variant, tmp, small, new_connections)
    b = run_once(variant, tmp, large, new_connections)
    return tuple((y - x) / (large - small) for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, nargs=2, default=[100, 1000], metavar=("SMALL", "LARGE"),
                    help="keep-alive requests of the two runs")
    ap.add_argument("--connections", type=int, nargs=2, default=[20, 100], metavar=("SMALL", "LARGE"),
                    help="new connections of the two runs")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--variants", default="abce", help="which variants to count (default abce)")
    args = ap.parse_args()
    ov.require_tools("valgrind")
    for f in (ov.MODULE, ov.SENSOR, ov.CAPTURE):
        if not f.exists():
            sys.exit(f"{f} not found: run `cargo build --release -p mod_reqin_log -p ja4sensor -p ja4sensor-pcap`")
    results = {}
    with tempfile.TemporaryDirectory(prefix="reqin-instr-") as tmp:
        os.chmod(tmp, 0o755)
        for v in args.variants:
            (ka, _), (nc, misses) = (per_request(v, tmp, *args.requests, False),
                                     per_request(v, tmp, *args.connections, True))
            results[v] = (ka, nc, misses)
            print(f"{v}: {ka:.0f} instructions per keep-alive request, {nc:.0f} per request on a "
                  f"new connection ({misses:.0f} L2 misses)", file=sys.stderr, flush=True)
    names = {"a": "(a) no logging", "b": "(b) JSON CustomLog", "c": "(c) mod_reqin_log + sensor",
             "e": "(e) mod_reqin_log inline"}
    l2_kib = l2_cache_bytes() >> 10
    if args.markdown:
        print("| variant | instructions / keep-alive request | instructions / new-connection request "
              f"| {l2_kib} KiB L2 misses / new-connection request (simulated) |")
        print("|---|---:|---:|---:|")
        for v, (ka, nc, misses) in results.items():
            print(f"| {names[v]} | {ka:,.0f} | {nc:,.0f} | {misses:,.0f} |")
    else:
        for v, (ka, nc, misses) in results.items():
            print(f"{names[v]:30} {ka:12,.0f} {nc:14,.0f} {misses:10,.0f}")
    if "a" not in results:
        return
    for i, label in ((0, "keep-alive"), (1, "new connection"), (2, f"{l2_kib} KiB L2 misses, new connection")):
        a = results["a"][i]
        parts = [f"{v} − a = {results[v][i] - a:+,.0f} ({(results[v][i] - a) / a:+.1%})"
                 for v in results if v != "a"]
        print(f"- {label}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
