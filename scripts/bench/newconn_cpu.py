#!/usr/bin/env python3
"""What does one new TLS connection cost httpd, in CPU? Paired runs, CPU read from schedstat.

overhead.py's new-connection ratio moves by ±0.035 from one run to the next on a shared
two-core machine, and its CPU column comes in clock ticks. This measures the same thing closer:
each variant's httpd (overhead.py's configurations, event MPM, TLS) serves `--requests` new
connections per run (h2load, 4 clients, `Connection: close`), the variants one after the other
in an order that rotates from one repeat to the next, and each run's CPU is the sum of
`/proc/<pid>/task/*/schedstat` (nanoseconds of every thread of every httpd process). Printed
per variant: the median req/s and CPU per connection, and against the first variant (and the
second, if there are three or more) the median of the paired differences with its quartiles.

A variant is `name=v[:module[:directives]]`: `v` one of overhead.py's a, b, c, e, or `s` (the
module in `sensor` mode with no sensor running: every line an orphan, no fingerprint work);
`module` another build of libmod_reqin_log.so; `directives` lines added to its httpd.conf,
separated by `;` (e.g. `e=e::ReqinLogExportEnv Off`).

`--pin` puts every httpd thread on CPU 1 and h2load on CPU 0: the client's handshakes then
neither share httpd's core nor its L2, which makes the paired differences about twice as tight
(and the ratio of req/s a measure of httpd alone). Needs root, like overhead.py.

Two servers of the same build can differ by 20 µs or more per connection for the whole of a
run (seen with the module loaded, not without; cause unknown): `--instances N` starts N servers
of each variant, and a variant's figure of one repeat is the mean of its N servers' runs, so a
difference of a few µs is not one server's luck.

    python3 scripts/bench/newconn_cpu.py --pin --instances 3 --repeats 20 a=a b=b e=e
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ov  # noqa: E402  (the same httpd configurations)


def cpu_ns(pids):
    """Nanoseconds on CPU of every thread of `pids` (schedstat's first field)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def server(spec, root):
    """The httpd of one `name=v[:module[:directives]]` variant."""
    name, _, rest = spec.partition("=")
    variant, _, rest = rest.partition(":")
    module, _, directives = rest.partition(":")
    if not name or variant not in ("a", "b", "c", "e", "s"):
        sys.exit(f"{spec}: not name=VARIANT[:MODULE[:DIRECTIVES]] with VARIANT one of a b c e s")
    ov.MODULE = Path(module) if module else ov.TARGET / "libmod_reqin_log.so"
    if variant in "ces" and not ov.MODULE.exists():
        sys.exit(f"{spec}: {ov.MODULE} not found: run `cargo build --release -p mod_reqin_log`"
                 + (" -p ja4sensor -p ja4sensor-pcap" if variant == "c" else ""))
    s = ov.Server("c" if variant == "s" else variant, Path(root) / name)
    if variant == "s":
        s.start_sensor = lambda: None
    if directives:
        s.conf.write_text(s.conf.read_text() + "\n" + directives.replace(";", "\n") + "\n")
    return name, s


def quartiles(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[len(xs) // 4], xs[(3 * len(xs)) // 4]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--requests", type=int, default=2000, help="new connections per run")
    ap.add_argument("--pin", action="store_true", help="httpd on CPU 1, h2load on CPU 0")
    ap.add_argument("--instances", type=int, default=1, help="servers per variant")
    ap.add_argument("--all", action="store_true", help="print every run's CPU per connection")
    ap.add_argument("variants", nargs="*", default=["a=a", "b=b", "e=e"])
    args = ap.parse_args()
    if len(args.variants) < 2:
        sys.exit("give at least two variants: the first is the baseline")
    ov.require_tools(*(("taskset",) if args.pin else ()))
    with tempfile.TemporaryDirectory(prefix="reqin-newconn-") as tmp:
        os.chmod(tmp, 0o755)  # httpd children (www-data) serve files from below it
        names = [spec.partition("=")[0] for spec in args.variants]
        if len(set(names)) != len(names):
            sys.exit("variant names must differ")
        # Every server of every variant: (variant name, instance) -> Server.
        servers = {}
        for spec in args.variants:
            for i in range(args.instances):
                name, s = server(spec, Path(tmp) / str(i))
                servers[(name, i)] = s
        plain_run = ov.run
        if args.pin:
            ov.run = lambda cmd, **kw: plain_run(
                (["taskset", "-c", "0"] + cmd) if cmd[0] == "h2load" else cmd, **kw)
        try:
            for s in servers.values():
                s.start()
                if args.pin:
                    for pid in s.httpd_pids():
                        subprocess.run(["taskset", "-a", "-p", "-c", "1", str(pid)],
                                       check=True, capture_output=True)
            for s in servers.values():  # TLS session cache, page cache, first requests
                ov.h2load(s.url(), "h1", 1000, 8, 1, Path(tmp) / "warm.log")
                ov.new_connection_run(s, 500, Path(tmp) / "warm.log")
            keys = list(servers)
            runs = {k: [] for k in names}
            for rep in range(args.repeats):
                this = {k: [] for k in names}
                for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
                    s = servers[key]
                    pids = s.httpd_pids()
                    before = cpu_ns(pids)
                    r = ov.h2load(s.url(), "h1", args.requests, 4, 1, Path(tmp) / "d.log",
                                  extra=("-H", "Connection: close"))
                    this[key[0]].append((r["rps"], (cpu_ns(pids) - before) / 1000 / args.requests))
                for k in names:
                    runs[k].append(tuple(statistics.fmean(x) for x in zip(*this[k])))
        finally:
            for s in servers.values():
                s.stop()
    base, second = names[0], names[1]
    print(f"{args.repeats} runs of {args.requests} new connections per variant and server, "
          f"{args.instances} server(s) per variant"
          f"{', httpd pinned to CPU 1, h2load to CPU 0' if args.pin else ''}")
    for k in names:
        rps = statistics.median(r for r, _ in runs[k])
        cpu = statistics.median(c for _, c in runs[k])
        line = f"{k:10} {rps:7.0f} req/s  {cpu:6.1f} µs CPU/connection"
        for other in (base, second) if len(names) > 2 else (base,):
            if other == k or (other == second and k == base):
                continue
            ratio = statistics.median(b[0] / a[0] for a, b in zip(runs[other], runs[k]))
            med, q1, q3 = quartiles([b[1] - a[1] for a, b in zip(runs[other], runs[k])])
            line += f"  | − {other}: {med:+.1f} µs (quartiles {q1:+.1f} {q3:+.1f}), req/s ×{ratio:.3f}"
        print(line)
        if args.all:
            print("           " + " ".join(f"{c:.0f}" for _, c in runs[k]))


if __name__ == "__main__":
    main()
