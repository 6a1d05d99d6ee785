#!/usr/bin/env python3
"""Sensor live (issue 8, item 4): the highest new-handshake rate ja4sensor sustains on lo with no
kernel drop and every handshake in the ring. Not a test: part of `make bench`.

A raw IP socket replays real ClientHellos of the JA4 corpus (the ones sensor_gen_pcap.py uses) as
new connections on 127.0.0.1: for each, a Linux SYN, the hello (every fourth one split in two
segments, so reassembly is on the path) and a FIN, each from its own client 4-tuple
(127.a.b.c:port). Nothing listens on the port, so the kernel answers with resets the sensor
does not capture (they go to the client). The sensor runs as in production (`ja4sensor run -i lo`,
default pcap buffer); after each step the ring header's counters say how many handshakes it
published and how many packets the kernel dropped. Steps double the rate until a step loses a
handshake or the sender cannot go faster; the table shows every step.

Needs root (raw socket, pcap on lo) and a release build of the sensor.
"""

import argparse
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import RING_DIR, cpu_seconds, free_port, start_sensor  # noqa: E402
from sensor_gen_pcap import DEFAULT_CORPUS, SYN_OPTIONS, collect_hellos, ip_packet  # noqa: E402

SYN, FIN_ACK, PSH_ACK = 0x02, 0x11, 0x18
LOOPBACK = socket.inet_aton("127.0.0.1")
# correlate-lib/src/ring/layout.rs: header words, counters from word 16 in SensorCounter order.
W_COUNTERS = 16
PACKETS_SEEN, KERNEL_DROPS, HELLOS_PARSED, RING_WRITES = 0, 1, 2, 5


def packet(src, sport, dport, seq, flags, payload, options=b""):
    return ip_packet(src, LOOPBACK, sport, dport, seq, flags, payload, options)


def handshakes(first, count, dport, hellos):
    """Packets of `count` new connections, numbered from `first` (distinct 4-tuples)."""
    out = []
    for i in range(first, first + count):
        hello = hellos[i % len(hellos)]
        src = bytes([127, 1 + (i >> 16) % 254, (i >> 8) & 255, (i & 255) or 1])
        sport = 1024 + (i * 7919) % 64000
        isn = (i * 2654435761) & 0xFFFFFFFF
        seq = (isn + 1) & 0xFFFFFFFF
        conn = [packet(src, sport, dport, isn, SYN, b"", SYN_OPTIONS)]
        if i % 4 == 3:
            half = len(hello) // 2
            conn.append(packet(src, sport, dport, seq, PSH_ACK, hello[:half]))
            conn.append(packet(src, sport, dport, (seq + half) & 0xFFFFFFFF, PSH_ACK, hello[half:]))
        else:
            conn.append(packet(src, sport, dport, seq, PSH_ACK, hello))
        conn.append(packet(src, sport, dport, (seq + len(hello)) & 0xFFFFFFFF, FIN_ACK, b""))
        out.append(conn)
    return out


class RingHeader:
    def __init__(self, path):
        self.f = open(path, "rb")
        self.m = mmap.mmap(self.f.fileno(), 4096, prot=mmap.PROT_READ)

    def counter(self, n):
        return struct.unpack_from("<Q", self.m, (W_COUNTERS + n) * 8)[0]


def send_at(raw, conns, rate):
    """Sends connection after connection at `rate` per second; returns the rate achieved."""
    start = time.monotonic()
    for n, conn in enumerate(conns):
        for p in conn:
            raw.sendto(p, ("127.0.0.1", 0))
        if n % 200 == 199:
            ahead = (n + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return len(conns) / (time.monotonic() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start-rate", type=int, default=2000, help="handshakes per second of the first step")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each step")
    ap.add_argument("--max-steps", type=int, default=8)
    args = ap.parse_args()
    hellos = collect_hellos(DEFAULT_CORPUS)
    port = free_port()
    rows = []
    with tempfile.TemporaryDirectory(prefix="reqin-rate-", dir=RING_DIR) as tmp:
        ring = Path(tmp) / "ring"
        sensor = start_sensor(port, ring, Path(tmp) / "sensor.log")
        try:
            time.sleep(0.5)
            header = RingHeader(ring)
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            rate, first = args.start_rate, 0
            for _ in range(args.max_steps):
                count = int(rate * args.seconds)
                conns = handshakes(first, count, port, hellos)
                first += count
                before = [header.counter(c) for c in (RING_WRITES, KERNEL_DROPS, HELLOS_PARSED)]
                cpu_before = cpu_seconds([sensor.pid])
                achieved = send_at(raw, conns, rate)
                time.sleep(2.5)  # the sensor publishes its counters every second
                after = [header.counter(c) for c in (RING_WRITES, KERNEL_DROPS, HELLOS_PARSED)]
                # Per handshake: SYN, hello (one or two segments) and FIN, all of the sensor's work.
                cpu_us = (cpu_seconds([sensor.pid]) - cpu_before) * 1e6 / count
                writes, drops, parsed = (a - b for a, b in zip(after, before))
                rows.append((rate, achieved, count, writes, drops, cpu_us))
                print(f"target {rate:>7} hs/s, sent {achieved:>9.0f} hs/s: {count} handshakes, "
                      f"{writes} in the ring, {drops} kernel drops, {cpu_us:.1f} µs of sensor CPU "
                      f"each", file=sys.stderr)
                if writes < count or drops or achieved < 0.9 * rate:
                    break
                rate *= 2
        finally:
            sensor.send_signal(signal.SIGTERM)
            sensor.wait(timeout=10)
    print("| offered (handshakes/s) | sent (handshakes/s) | handshakes | in the ring | kernel drops "
          "| sensor CPU µs/handshake | one core would sustain (handshakes/s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for rate, achieved, count, writes, drops, cpu_us in rows:
        capacity = f"{1e6 / cpu_us:,.0f}" if cpu_us > 0 else "n/a"
        print(f"| {rate:,} | {achieved:,.0f} | {count:,} | {writes:,} | {drops} | {cpu_us:.1f} | {capacity} |")
    best = max((a for r, a, c, w, d, _ in rows if w >= c and d == 0), default=0)
    print(f"\nHighest rate with every handshake in the ring and no kernel drop: **{best:,.0f} handshakes/s**"
          + (" (the sender's limit, not the sensor's)" if rows and rows[-1][1] < 0.9 * rows[-1][0]
             and rows[-1][3] >= rows[-1][2] and rows[-1][4] == 0 else ""))


if __name__ == "__main__":
    main()
