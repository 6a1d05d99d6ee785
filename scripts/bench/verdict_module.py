#!/usr/bin/env python3
"""What does the verdict lookup add to a request in httpd, in instructions?

Variant (c) of instructions.py (mod_reqin_log + the sensor, event MPM, httpd -X under
callgrind, one connection at a time), three ways:

  off    ReqinLogVerdictTable Off: the module without a table
  empty  a verdict table the detector created, with no verdict in it
  full   the same table with 32 768 live verdicts (half its slots), none for this client
  hit    the full table and one more verdict, for this client (127.0.0.1): what a refused
         or challenged client's requests pay (not a target)

Only what runs inside httpd's `post_read_request` hooks is counted (callgrind's
`--toggle-collect=ap_run_post_read_request`), where the lookup lives: the request line, the
log phase and httpd's own timers (whose count depends on how long a run takes under valgrind)
stay out, so the difference between the variants is the lookup's. Each figure is instructions
per keep-alive request: the difference of two runs with different request counts, divided by
that difference. The table is written by the example `verdict_lookups write` (correlate-lib).
Needs root, valgrind and release builds.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import instructions as ins  # noqa: E402
import overhead as ov  # noqa: E402

EXAMPLE = ov.TARGET / "examples" / "verdict_lookups"


def per_request(table, tmp, small, large):
    totals = []
    for n in (small, large):
        server = ov.Server("c", Path(tmp) / f"{table}-{n}")
        path = server.ring_dir / "ja4sensor.verdicts"
        if table == "off":
            extra = "ReqinLogVerdictTable Off\n"
        else:
            count = {"empty": 0, "full": 32768, "hit": 32768}[table]
            client = ["127.0.0.1"] if table == "hit" else []
            subprocess.run([str(EXAMPLE), "write", str(path), str(count), *client], check=True,
                           stdout=subprocess.DEVNULL)
            extra = f'ReqinLogVerdictTable "{path}"\n'
        server.conf.write_text(server.conf.read_text() + "\n" + extra)
        with server.under_valgrind("callgrind", 4, "--toggle-collect=ap_run_post_read_request") as out_dir:
            log = server.root / "h2load.log"
            ov.h2load(server.url(), "h1", ins.WARMUP_CONNECTIONS, 1, 1, log,
                      extra=("-H", "Connection: close"))
            ov.h2load(server.url(), "h1", n, 1, 1, log)
        totals.append(sum(ins.total_instructions(f) for f in out_dir.glob("out.*")))
    return (totals[1] - totals[0]) / (large - small)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, nargs=2, default=[100, 1000], metavar=("SMALL", "LARGE"))
    args = ap.parse_args()
    if not EXAMPLE.exists():
        sys.exit(f"{EXAMPLE} not found: cargo build --release -p correlate-lib --example verdict_lookups")
    results = {}
    with tempfile.TemporaryDirectory(prefix="reqin-verdict-") as tmp:
        os.chmod(tmp, 0o755)
        for table in ("off", "empty", "full", "hit"):
            results[table] = per_request(table, tmp, *args.requests)
            print(f"{table}: {results[table]:.0f} instructions per keep-alive request",
                  file=sys.stderr, flush=True)
    print("| verdict table | post_read_request instructions / keep-alive request | added to `off` |")
    print("|---|---:|---:|")
    for table, v in results.items():
        print(f"| {table} | {v:,.0f} | {v - results['off']:+,.0f} |")


if __name__ == "__main__":
    main()
