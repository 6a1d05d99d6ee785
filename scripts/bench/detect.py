#!/usr/bin/env python3
"""`ja4sensor detect --replay` throughput and peak memory, every module on, over a generated log.

    python3 scripts/bench/detect.py [--lines 1000000] [--keys 100000] [--repeats 3]

The log: `--lines` correlated lines shaped like mod_reqin_log's (the module's field names, ~900
bytes each), from `--keys` distinct client addresses (the threshold rules track each: that many
keys), 40 User-Agents, the JA4s of the shipped client map plus 300 unknown ones; 1 line in 5 a
Chrome-on-Windows User-Agent over curl's handshake (a mismatch event each), 1 in 5 an unknown
JA4 with a User-Agent the map cannot judge, the rest honest; 1 in 10 a 4xx on /login.

Measured in the same run, on the same file (page cache warm, best of --repeats):
- baseline: the shipper's per-line work, read + validate (`--example ship_validate`: the shared
  follower's read_lines in batches of 500 and the shipper's JSON-object check of each line);
- detect: `ja4sensor detect --replay FILE` with report, fingerprint_mismatch, threshold (three
  rules, max_keys = --keys) and new_fingerprint on, events to a jsonl file.
Lines/s and peak RSS (getrusage of the child) of each; the replay runs on one thread.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"

CHROME_WIN = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
# Honest User-Agents per client family of the map (Linux ones: the generated SYNs say TTL 64).
UAS = {
    "chromium": [f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36" for v in range(110, 125)],
    "firefox": [f"Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0" for v in range(110, 120)],
    "curl": [f"curl/7.{v}.0" for v in range(80, 90)],
    "wget": ["Wget/1.21.3"],
    "python-requests": ["python-requests/2.31.0"],
    "go": ["Go-http-client/1.1"],
}
OTHER_UAS = ["okhttp/4.9.0", "Mozilla/5.0 (compatible; Googlebot/2.1)", "python-httpx/0.27.0"]


def clients_map():
    rows = {}
    for line in (ROOT / "sensor/detect/data/clients.csv").read_text().splitlines():
        if line.startswith("#") or line.startswith("ja4,"):
            continue
        ja4, client = line.split(",")[:2]
        rows.setdefault(client, []).append(ja4)
    return rows


def generate(path, lines, keys, seed=7):
    rnd = random.Random(seed)
    cmap = clients_map()
    curl_ja4 = cmap["curl"][0]
    unknown = [f"t13d{rnd.randrange(1000, 9999)}h2_{rnd.getrandbits(48):012x}_{rnd.getrandbits(48):012x}" for _ in range(300)]
    ips = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(keys)]
    t0 = 1_795_592_400_000_000  # µs
    with open(path, "w") as f:
        for n in range(lines):
            t = t0 + n * 200  # 5000 lines/s of log time
            secs, us = divmod(t, 1_000_000)
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{us:06d}Z"
            r = n % 10
            if r < 2:
                # A mismatch by design: Chrome on Windows claimed over curl's handshake.
                ua, ja4 = CHROME_WIN.format(v=120), curl_ja4
            elif r < 4:
                ua, ja4 = rnd.choice(OTHER_UAS), rnd.choice(unknown)
            else:
                family = rnd.choice(sorted(UAS))
                ua, ja4 = rnd.choice(UAS[family]), rnd.choice(cmap[family])
            path_, status = ("/login", 401) if r == 5 else (f"/p/{rnd.randrange(1000)}", 200)
            conn = f"Xk3pZ0aQd1xRkT2M-{n // 3:x}"
            o = {
                "time": ts, "timestamp": ts, "src_ip": ips[n % keys], "src_port": 30000 + n % 30000,
                "dst_ip": "192.0.2.1", "dst_port": 443, "correlated": True, "keepalives": n % 3 + 1,
                "method": "GET", "scheme": "https", "host": f"site{n % 7}.example", "path": path_,
                "query": "a=1&b=2", "http_version": "HTTP/2", "status": status, "bytes_sent": 1234,
                "duration_us": 412, "header_User-Agent": ua, "header_Accept-Language": "en-US,en;q=0.9",
                "ip_meta_ttl": 52, "ip_meta_total_length": 60, "ip_meta_id": n % 65536, "ip_meta_df": True,
                "tcp_meta_window_size": 64240, "tcp_meta_mss": 1460, "tcp_meta_window_scale": 8,
                "tcp_meta_options": "MSS,SAckOK,Timestamps,NOP,WScale", "conn_id": conn,
                "request_id": f"{conn}-{n % 3 + 1}", "sequence_number": n % 3 + 1, "sensor_id": "s1",
                "tls_version": "1.3", "tls_sni": "site.example", "tls_alpn": "h2", "ja4": ja4,
                "ja3": "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,0-23-65281-10-11-35-16-5-13-18-51-45-43-27-17513-21,29-23-24,0",
                "ja3_hash": "cd08e31494f9531f560d64c695473da9", "syn_to_clienthello_ms": 3,
                "a_timestamp": t * 1000, "b_timestamp": t * 1000 - 2_000_000, "tag_env": "bench",
            }
            f.write(json.dumps(o, separators=(",", ":")))
            f.write("\n")


CONFIG = """
detect:
  stats_interval_s: 3600
  clients: [{clients}]
  metrics: {{enabled: false}}
  modules:
    new_fingerprint: {{state_path: {dir}/fp, max_entries: 100000}}
    threshold:
      max_keys: {keys}
      rules:
        - {{name: per-ip, key: [src_ip], count: 50, window_ms: 10000, quiet_ms: 60000}}
        - {{name: ja4-host, key: [ja4, host], count: 1000, window_ms: 10000, quiet_ms: 60000}}
        - name: login-4xx
          key: [src_ip]
          count: 5
          window_ms: 60000
          when: [{{field: path, prefix: /login}}, {{field: status, status_class: 4xx}}]
  listeners:
    - {{type: jsonl, path: {dir}/events.jsonl}}
"""


def measure(cmd):
    """Runs `cmd` in a fresh Python child so that ru_maxrss is the command's own peak."""
    code = (
        "import resource,subprocess,sys,time,json;t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);s=time.perf_counter()-t;"
        "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(json.dumps([p.returncode,s,u.ru_utime+u.ru_stime,u.ru_maxrss,p.stdout+p.stderr]))"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True).stdout
    rc, secs, cpu, rss_kib, text = json.loads(out)
    if rc != 0:
        sys.exit(f"{cmd}: exit {rc}\n{text}")
    return secs, cpu, rss_kib / 1024, text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sensor, baseline = RELEASE / "ja4sensor", RELEASE / "examples" / "ship_validate"
    for b in (sensor, baseline):
        if not b.exists():
            sys.exit(f"{b} missing: cargo build --release -p ja4sensor && cargo build --release -p ja4sensor-detect --examples")
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as d:
        d = Path(d)
        log = d / "reqin.log"
        t = time.perf_counter()
        generate(log, args.lines, args.keys)
        size = log.stat().st_size
        print(f"generated {args.lines} lines, {size / 2**20:.0f} MiB ({size / args.lines:.0f} B/line) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        cfg = d / "detect.yml"
        cfg.write_text(CONFIG.format(clients=ROOT / "sensor/detect/data/clients.csv", dir=d, keys=args.keys))
        log.read_bytes()  # warm the page cache for both
        best = {}
        for _ in range(args.repeats):
            for name, cmd in (("baseline", [str(baseline), str(log)]),
                              ("detect", [str(sensor), "detect", "--config", str(cfg), "--replay", str(log)])):
                (d / "events.jsonl").unlink(missing_ok=True)
                secs, cpu, rss, text = measure(cmd)
                if name not in best or cpu < best[name][1]:
                    best[name] = (secs, cpu, rss, text.strip().splitlines()[-1])
        print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores shared: CPU time is the fairer measure)")
        for name, (secs, cpu, rss, last) in best.items():
            print(f"{name:9} {args.lines / cpu:>10,.0f} lines/CPU-s  {args.lines / secs:>10,.0f} lines/s wall"
                  f"  {cpu:6.2f} CPU-s {secs:6.2f} s  peak RSS {rss:6.1f} MiB   ({last})")
        b, x = best["baseline"][1], best["detect"][1]
        print(f"detect / baseline CPU time: {x / b:.2f}  (detect rate = {b / x:.2f} x the shipper's read+validate rate)")


if __name__ == "__main__":
    main()
