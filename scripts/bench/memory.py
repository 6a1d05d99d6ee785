#!/usr/bin/env python3
"""Memory, measured (issue 8, item 5). Not a test: part of `make bench`.

1. ja4sensor with 100 000 pending flows: the sensor captures lo while a raw socket sends
   100 000 SYNs from distinct client 4-tuples (127.a.b.c:port) to a port nothing listens on,
   the SYN flood of never-completing handshakes. Reports the sensor's peak RSS (VmHWM) split into
   its private memory and the shared ring pages it touched, and its flow counters.
2. httpd child RSS growth over 1 000 000 requests: the event-MPM httpd of overhead.py's variant
   (c) (module + sensor), h2load over TLS (h2, kept-alive connections); each child's RSS after a
   warm-up and after the million requests.
3. The heap behind that RSS: one httpd process (`apache2 -X`) of variants (a) and (c) under
   valgrind's massif, snapshots timed in milliseconds; the live heap (malloc'd bytes plus their
   overhead) from the end of a warm-up to the end of the requests. RSS also moves with glibc's
   arenas and the pools' free lists; the heap says whether anything accumulates.

Needs root (raw socket, pcap on lo, httpd) and release builds (`make bench` builds them).
"""

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_rate import SYN, SYN_OPTIONS, packet  # noqa: E402
from overhead import RING_DIR, Server, free_port, h2load, start_sensor  # noqa: E402


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def sensor_pending_flows(flows, rate):
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="reqin-mem-", dir=RING_DIR) as tmp:
        ring = Path(tmp) / "ring"
        log = Path(tmp) / "sensor.log"
        sensor = start_sensor(port, ring, log, {"RUST_LOG": "info"})
        try:
            time.sleep(0.5)
            idle_kib = status_kib(sensor.pid, "VmRSS")
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            start = time.monotonic()
            rnd = random.Random(8)
            for n in range(flows):
                # Distinct 4-tuples: the client address walks 127.1.0.0/16, the port 1024-65535.
                src = f"127.{1 + (n >> 16) % 254}.{(n >> 8) & 0xFF}.{n & 0xFF or 1}"
                sport = 1024 + rnd.randrange(64000)
                raw.sendto(packet(socket.inet_aton(src), sport, port, n + 1, SYN, b"", SYN_OPTIONS), ("127.0.0.1", 0))
                if rate and n % 1000 == 999:
                    ahead = (n + 1) / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            sent_s = time.monotonic() - start
            time.sleep(2.0)
            hwm = status_kib(sensor.pid, "VmHWM")
            anon = status_kib(sensor.pid, "RssAnon")
            shmem = status_kib(sensor.pid, "RssShmem")
            rss = status_kib(sensor.pid, "VmRSS")
        finally:
            sensor.send_signal(signal.SIGTERM)
            sensor.wait(timeout=10)
        counters = [l for l in log.read_text().splitlines() if "flows" in l or "drop" in l][-2:]
    return {"flows": flows, "sent_s": sent_s, "idle_kib": idle_kib, "hwm_kib": hwm, "rss_kib": rss,
            "anon_kib": anon, "shmem_kib": shmem, "counters": counters}


def children(parent_pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent_pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def child_rss(pids):
    return {p: status_kib(p, "VmRSS") for p in pids if Path(f"/proc/{p}").exists()}


def httpd_child_growth(variant, requests, warmup):
    with tempfile.TemporaryDirectory(prefix="reqin-mem-") as tmp:
        os.chmod(tmp, 0o755)
        server = Server(variant, Path(tmp) / variant)
        # Two children that live through the whole run (no spare-thread reaping, no recycling).
        server.conf.write_text(server.conf.read_text() + "\nServerLimit 2\nMaxSpareThreads 64\nMaxConnectionsPerChild 0\n")
        server.start()
        try:
            pid_file = server.root / "httpd.pid"
            for _ in range(100):
                if pid_file.exists() and pid_file.read_text().strip():
                    break
                time.sleep(0.05)
            parent = int(pid_file.read_text())
            h2load(server.url(), "h2", warmup, 8, 10, Path(tmp) / "w.log")
            pids = children(parent)
            before = child_rss(pids)
            done = 0
            step = 100_000
            series = []
            while done < requests:
                n = min(step, requests - done)
                h2load(server.url(), "h2", n, 8, 10, Path(tmp) / "h.log")
                done += n
                series.append((done, sum(child_rss(pids).values())))
            time.sleep(1.5)
            after = child_rss(pids)
            still = children(parent)
            lines = sum(1 for _ in open(server.log)) if server.log.exists() else 0
        finally:
            server.stop()
    return {"before": before, "after": after, "same_children": still == pids, "lines": lines,
            "requests": requests + warmup, "series": series}


IDLE_S = 3


def httpd_heap(variant, requests, warmup):
    """Live heap of `apache2 -X` under massif, from the end of the warm-up to the end of the run."""
    with tempfile.TemporaryDirectory(prefix="reqin-heap-") as tmp:
        os.chmod(tmp, 0o755)
        server = Server(variant, Path(tmp) / variant)
        with server.under_valgrind("massif", 8, "--time-unit=ms", "--max-snapshots=500") as out_dir:
            # Idle pauses around the warm-up and the run: massif's clock starts with the
            # process, not with us, so the phases are found as the gaps in its snapshots.
            time.sleep(IDLE_S)
            h2load(server.url(), "h1", warmup, 4, 1, Path(tmp) / "w.log")
            time.sleep(IDLE_S)
            h2load(server.url(), "h1", requests, 4, 1, Path(tmp) / "h.log")
            time.sleep(IDLE_S)
        lines = sum(1 for _ in open(server.log)) if server.log.exists() else 0
        text = "".join(f.read_text() for f in out_dir.glob("out.*"))
    snaps = [(int(t), int(h) + int(e)) for t, h, e in
             re.findall(r"time=(\d+)\nmem_heap_B=(\d+)\nmem_heap_extra_B=(\d+)", text)]
    # The last two pauses: the one after the warm-up and the one after the run.
    gaps = [i for i in range(1, len(snaps)) if snaps[i][0] - snaps[i - 1][0] >= IDLE_S * 1000 * 0.8]
    if len(gaps) < 2:
        raise RuntimeError(f"{variant}: massif's snapshots show {len(gaps)} of the idle pauses")
    run = [b / 1024 for _, b in snaps[gaps[-2] - 1:gaps[-1]]]
    return {"first": run[0], "last": run[-1], "min": min(run), "max": max(run), "snapshots": len(run),
            "lines": lines}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--syn-rate", type=int, default=20_000, help="SYNs per second (0: as fast as possible)")
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--warmup", type=int, default=20_000)
    ap.add_argument("--heap-requests", type=int, default=100_000,
                    help="requests for the massif heap profile (0: skip it)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    s = sensor_pending_flows(args.flows, args.syn_rate)
    # (a) the same httpd without the module, for what httpd, mod_ssl and mod_http2 grow alone.
    base = httpd_child_growth("a", args.requests, args.warmup)
    h = httpd_child_growth("c", args.requests, args.warmup)
    mib = lambda k: k / 1024
    out = []
    out.append(f"- ja4sensor, {s['flows']:,} SYNs of never-completing handshakes in {s['sent_s']:.1f} s: "
               f"peak RSS (VmHWM) **{mib(s['hwm_kib']):.1f} MiB** (target ≤ 64 MiB; idle before the flood "
               f"{mib(s['idle_kib']):.1f} MiB; after: {mib(s['anon_kib']):.1f} MiB private + "
               f"{mib(s['shmem_kib']):.1f} MiB of ring pages)")
    for c in s["counters"]:
        out.append(f"  - sensor log: `{c.split(']')[-1].strip()}`")
    for name, run in (("(a) no module", base), ("(c) module + sensor", h)):
        growth = [run["after"].get(p, 0) - kib for p, kib in run["before"].items()]
        out.append(f"- httpd {name}, {len(growth)} children: RSS after {args.warmup:,} warm-up requests "
                   + ", ".join(f"{mib(k):.1f}" for k in run["before"].values())
                   + f" MiB; growth over {args.requests:,} more: "
                   + ", ".join(f"**{g} KiB**" for g in growth) + " (target ≤ 1024 KiB per child)")
        out.append("  - children's total RSS along the run: " + ", ".join(
            f"{n // 1000}k: {mib(kib):.1f} MiB" for n, kib in run["series"]))
        out.append(f"  - same children throughout: {run['same_children']}; log lines written: {run['lines']:,} "
                   f"of {run['requests']:,} requests")
    if args.heap_requests:
        for name, v in (("(a) no module", "a"), ("(c) module + sensor", "c")):
            heap = httpd_heap(v, args.heap_requests, 2_000)
            out.append(f"- heap of one httpd {name} under massif over {args.heap_requests:,} keep-alive requests "
                       f"after 2,000 warm-up: {heap['first']:.0f} KiB → **{heap['last']:.0f} KiB** "
                       f"(min {heap['min']:.0f}, max {heap['max']:.0f} KiB in {heap['snapshots']} snapshots)"
                       + (f"; log lines {heap['lines']:,}" if v == "c" else ""))
    print("\n".join(out))


if __name__ == "__main__":
    main()
