#!/usr/bin/env python3
"""Does `ja4sensor ship` keep up with a busy server? httpd + mod_reqin_log + sensor under the
keep-alive load of overhead.py (h2load, HTTP/1.1, 8 clients) for `--duration` seconds (5 min by
default) with the shipper beside it, tailing the module's log into a private clickhouse-server
(Debian's 18.16) on the same machine. Every second the shipper's /metrics is read: `lag_seconds`
(age of the oldest byte not yet confirmed by ClickHouse) and `lag_bytes`. Reports p50/p99/max lag,
the trend of the lag over the run (least-squares slope, seconds of lag per minute), how long the
last lines took to land once the load stopped, and c/a of that run: the same h2load load against
httpd without the module (a) right before, req/s of (c) with module, sensor and shipper over (a).

Reuses overhead.py's Server (the same httpd config, TLS, MPM settings and sensor start).
Needs root and release builds: `make bench` builds them (the shipper: `cargo build --release -p
reqin-shipper`). `--markdown` prints the lines for BENCHMARKS.md.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (same directory)

SHIPPER = overhead.TARGET / "reqin-ship"


class ClickHouse:
    """A private clickhouse-server on free loopback ports, its config and data in `root`."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port, tcp, inter = (overhead.free_port() for _ in range(3))
        d = self.root
        (d / "config.xml").write_text(f"""<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{self.http_port}</http_port><tcp_port>{tcp}</tcp_port><interserver_http_port>{inter}</interserver_http_port>
  <listen_host>127.0.0.1</listen_host><path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path><format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config><default_profile>default</default_profile>
  <default_database>default</default_database><mark_cache_size>104857600</mark_cache_size>
</yandex>
""")
        (d / "users.xml").write_text("""<yandex><profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas></yandex>
""")
        self.proc = subprocess.Popen(["clickhouse-server", f"--config-file={d}/config.xml"], cwd=d,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                if self.query("SELECT 1") == "1":
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("clickhouse-server did not start")

    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def query(self, sql):
        with urllib.request.urlopen(urllib.request.Request(self.url() + "/", data=sql.encode()), timeout=60) as r:
            return r.read().decode().strip()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def metrics(port):
    """The shipper's /metrics as {name: float}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.split()
                out[k.removeprefix("reqin_ship_")] = float(v)
        return out


def h2load_for(url, seconds, clients, log_file):
    """h2load, HTTP/1.1 keep-alive, for `seconds`: req/s."""
    cmd = ["h2load", "--h1", "-D", str(seconds), "--warm-up-time=2", "-c", str(clients), "-m", "1", "-t", "1",
           f"--log-file={log_file}", url]
    out = overhead.run(cmd).stdout
    for line in out.splitlines():
        if line.startswith("finished in"):
            return float(line.split(",")[1].split()[0])
    raise RuntimeError(f"h2load gave no rate:\n{out}")


def slope_per_minute(samples):
    """Least-squares slope of lag (s) against time (s), times 60."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    ml = sum(l for _, l in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 60 * sum((t - mt) * (l - ml) for t, l in samples) / var if var else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=300, help="seconds of load with the shipper (c)")
    ap.add_argument("--baseline-duration", type=int, default=60, help="seconds of the same load on (a)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    for f in (overhead.MODULE, overhead.SENSOR, SHIPPER):
        if not f.exists():
            sys.exit(f"{f} not found: run `cargo build --release -p mod_reqin_log -p ja4sensor -p ja4sensor-pcap -p reqin-shipper`")
    with tempfile.TemporaryDirectory(prefix="reqin-shiplag-") as tmp:
        os.chmod(tmp, 0o755)
        ch = ClickHouse(Path(tmp) / "clickhouse")
        servers = {v: overhead.Server(v, Path(tmp) / v) for v in "ac"}
        shipper = None
        try:
            for s in servers.values():
                s.start()
            c = servers["c"]
            metrics_port = overhead.free_port()
            cfg = Path(tmp) / "ship.yml"
            cfg.write_text(
                "ship:\n"
                f"  clickhouse:\n    url: {ch.url()}\n"
                f"  input:\n    path: {json.dumps(str(c.log) + '*')}\n"
                f"  checkpoint_path: {json.dumps(str(Path(tmp) / 'ship.checkpoint'))}\n"
                f"  dead_letter_path: {json.dumps(str(Path(tmp) / 'ship.deadletter'))}\n"
                f"  metrics:\n    addr: 127.0.0.1:{metrics_port}\n    log_interval_s: 30\n")
            overhead.run([str(SHIPPER), "--config", str(cfg), "--init-schema"])
            ship_log = open(Path(tmp) / "shipper.log", "w")
            shipper = subprocess.Popen([str(SHIPPER), "--config", str(cfg)], stderr=ship_log)
            for v, s in servers.items():
                overhead.h2load(s.url(), "h1", 2000, args.clients, 1, Path(tmp) / "warm.log")
            # The warm-up's lines shipped: the shipper starts the run caught up.
            time.sleep(1.5)  # the module's orphan delay
            warm = sum(1 for _ in open(c.log, "rb"))
            deadline = time.monotonic() + 60
            while int(ch.query("SELECT count() FROM http_logs_raw")) < warm:
                if time.monotonic() > deadline:
                    sys.exit(f"the shipper did not ship the warm-up's {warm} lines:\n"
                             + (Path(tmp) / "shipper.log").read_text()[-3000:])
                time.sleep(0.2)
            rps_a = h2load_for(servers["a"].url(), args.baseline_duration, args.clients, Path(tmp) / "a.log")
            samples, stop = [], threading.Event()
            shipper_pid, ch_pid = shipper.pid, ch.proc.pid
            cpu0 = (overhead.cpu_seconds([shipper_pid]), overhead.cpu_seconds([ch_pid]))

            def sample():
                t0 = time.monotonic()
                while not stop.is_set():
                    try:
                        m = metrics(metrics_port)
                        samples.append((time.monotonic() - t0, m["lag_seconds"], m["lag_bytes"], m["rows_shipped_total"]))
                    except OSError:
                        pass
                    stop.wait(1.0 - (time.monotonic() - t0) % 1.0)

            sampler = threading.Thread(target=sample)
            sampler.start()
            t_load = time.monotonic()
            rps_c = h2load_for(c.url(), args.duration, args.clients, Path(tmp) / "c.log")
            load_s = time.monotonic() - t_load
            cpu1 = (overhead.cpu_seconds([shipper_pid]), overhead.cpu_seconds([ch_pid]))
            # After the load: until the shipper is caught up again.
            t_end = time.monotonic()
            while time.monotonic() - t_end < 120:
                m = metrics(metrics_port)
                if m["lag_bytes"] == 0:
                    break
                time.sleep(0.1)
            drain_s = time.monotonic() - t_end
            stop.set()
            sampler.join()
            time.sleep(1.5)  # the module's orphan delay: its last lines are written after it
            deadline = time.monotonic() + 60
            lines = sum(1 for _ in open(c.log, "rb"))
            while int(ch.query("SELECT count() FROM http_logs_raw")) < lines and time.monotonic() < deadline:
                time.sleep(0.2)
            rows = int(ch.query("SELECT count() FROM http_logs_raw"))
            line_bytes = c.log.stat().st_size / max(1, lines)
        finally:
            if shipper:
                shipper.send_signal(signal.SIGTERM)
                shipper.wait(timeout=60)
            for s in servers.values():
                s.stop()
            ch.stop()
    during = [s for s in samples if s[0] <= load_s]
    lags = sorted(s[1] for s in during)
    q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))] if lags else float("nan")
    trend = slope_per_minute([(s[0], s[1]) for s in during])
    shipped_rate = (during[-1][3] - during[0][3]) / max(1e-9, during[-1][0] - during[0][0]) if len(during) > 1 else 0
    result = {
        "rps_a": rps_a, "rps_c": rps_c, "c_over_a": rps_c / rps_a, "samples": len(during),
        "lag_p50": q(0.50), "lag_p99": q(0.99), "lag_max": lags[-1] if lags else float("nan"),
        "trend_s_per_min": trend, "drain_s": drain_s, "lines": lines, "rows": rows,
        "line_bytes": line_bytes, "shipped_rows_per_s": shipped_rate,
        "shipper_cpu": (cpu1[0] - cpu0[0]) / load_s, "clickhouse_cpu": (cpu1[1] - cpu0[1]) / load_s,
    }
    if args.markdown:
        print(f"| {args.duration} s | {rps_a:.0f} | {rps_c:.0f} | **{rps_c / rps_a:.3f}** | {shipped_rate:.0f} "
              f"| {q(0.50):.3f} | **{q(0.99):.3f}** | {result['lag_max']:.3f} | {trend:+.4f} | {drain_s:.1f} "
              f"| {rows}/{lines} | {result['shipper_cpu']:.2f} / {result['clickhouse_cpu']:.2f} |")
    else:
        print(json.dumps(result, indent=1))
    if rows != lines:
        sys.exit(f"{rows} rows in ClickHouse for {lines} lines in the log")


if __name__ == "__main__":
    main()
