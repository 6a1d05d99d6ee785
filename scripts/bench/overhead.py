#!/usr/bin/env python3
"""What does mod_reqin_log cost a server? Side-by-side, same run, same machine, same client.

Starts three private httpd instances from httpd-conf/test/httpd.conf.in (event MPM, TLS,
keep-alive) on free loopback ports, one after the other, and drives each with h2load:

  a  no request logging at all (the module not loaded)
  b  a JSON CustomLog with fields comparable to ours (mod_log_config, escaped by httpd)
  c  mod_reqin_log + ja4sensor capturing lo (every request joined with its handshake)
  e  mod_reqin_log with `ReqinLogFingerprint inline`: the same fields from httpd's own
     TCP_SAVED_SYN and ClientHello, no sensor, no capture

for HTTP/1.1 and h2 over kept-alive connections, then (d) one new TLS connection per request
(the worst case for the sensor), for (a), (b), (c) and (e) interleaved, the order rotating from
one repeat to the next: share of lines fingerprinted and req/s against (a), with (b), httpd's
own logging, as the yardstick of what writing a line per request costs at all. A run's ratio is
the median of its interleaved pairs; the 95 % interval beside it (bootstrap over the pairs) says
how far that median can be trusted: `--repeats` more pairs narrow it.

Runs are interleaved (a b c a b c ...) and the median of the repeats is reported, so slow drift
of the machine hits every variant alike. Besides req/s and latency, each run reports the CPU
time httpd (all its processes) and the sensor spent per request, read from /proc: on a small
machine where the client shares the cores, that is the steadier answer to "what does it cost". Prints a table; `--markdown` prints it for
BENCHMARKS.md. Needs root (pcap on lo, httpd binding as root), release builds of the module and
the sensor (`make bench` builds them).
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", TOP / "target")) / "release"
MODULE = TARGET / "libmod_reqin_log.so"
SENSOR = TARGET / "ja4sensor"
# What `ja4sensor run` executes (the capture, linked to libpcap), next to it.
CAPTURE = TARGET / "ja4sensor-pcap"
TEMPLATE = TOP / "httpd-conf/test/httpd.conf.in"
# Where the ring lives in production (the sensor's default /dev/shm/ja4sensor.ring): tmpfs. A ring
# on a disk file system would add page-cache writeback to every publish.
RING_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Comparable to our line: time, both ends of the connection, the request, status, size, duration
# and the User-Agent, as JSON. httpd escapes quotes, backslashes and control bytes in %r/%{}i.
JSON_LOGFORMAT = (
    'LogFormat "{\\"time\\":\\"%{%Y-%m-%dT%H:%M:%S}t.%{usec_frac}tZ\\",\\"src_ip\\":\\"%a\\",'
    '\\"src_port\\":%{remote}p,\\"dst_ip\\":\\"%A\\",\\"dst_port\\":%{local}p,\\"method\\":\\"%m\\",'
    '\\"host\\":\\"%{Host}i\\",\\"path\\":\\"%U\\",\\"query\\":\\"%q\\",\\"http_version\\":\\"%H\\",'
    '\\"status\\":%>s,\\"bytes_sent\\":%B,\\"duration_us\\":%D,\\"header_User-Agent\\":\\"%{User-Agent}i\\"}" reqin_json'
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sensor(port, ring, log_path, extra_env=None, group=None):
    """`ja4sensor run` on lo for `port`, publishing into `ring` (owned by `group` if given);
    returns once the ring exists."""
    sensor = subprocess.Popen(
        [str(SENSOR), "run", "--interface", "lo", "--ports", str(port), "--ring", str(ring)]
        + (["--ring-group", group] if group else []),
        stdout=subprocess.DEVNULL, stderr=open(log_path, "w"), env={**os.environ, **(extra_env or {})})
    for _ in range(200):
        if Path(ring).exists():
            break
        time.sleep(0.05)
    return sensor


def cpu_seconds(pids):
    """utime + stime of `pids` and all their threads, in seconds (0 for a vanished pid)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Server:
    """One private httpd variant (and, for `c`, the sensor feeding its ring)."""

    def __init__(self, variant, root):
        self.variant = variant
        self.root = Path(root)
        self.tls_port = free_port()
        self.http_port = free_port()
        self.log = self.root / "reqin.log"
        self.ring_dir = Path(tempfile.mkdtemp(prefix=f"reqin-bench-{variant}-", dir=RING_DIR))
        os.chmod(self.ring_dir, 0o755)
        self.ring = self.ring_dir / "ja4sensor.ring"
        self.sensor = None
        docroot = self.root / "htdocs"
        docroot.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        os.chmod(docroot, 0o755)
        # A small static file, the usual bot target.
        (docroot / "index.html").write_text("<html><body>hello</body></html>\n" * 8)
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-keyout", str(self.root / "key.pem"), "-out", str(self.root / "cert.pem")])
        os.chmod(self.root / "key.pem", 0o644)
        text = TEMPLATE.read_text()
        for k, v in {
            "@SERVER_ROOT@": self.root, "@MODULES_DIR@": "/usr/lib/apache2/modules", "@MPM@": "event",
            "@REQIN_MODULE@": MODULE, "@LISTEN_TLS@": self.tls_port, "@LISTEN_HTTP@": self.http_port,
            "@CERT@": self.root / "cert.pem", "@KEY@": self.root / "key.pem", "@REQIN_LOG@": self.log,
            "@RING@": self.ring, "@DOCROOT@": docroot,
        }.items():
            text = text.replace(k, str(v))
        if variant not in "ce":
            text = "\n".join(l for l in text.splitlines()
                              if "reqin_log_module" not in l
                              and not l.lstrip().startswith(("ReqinLog", "JsonSockLog")))
            text = text.replace(" reqin_log:debug", "")
        if variant == "b":
            text += "\n" + JSON_LOGFORMAT + f'\nCustomLog "{self.log}" reqin_json\n'
        if variant == "c":
            text += "\nReqinLogFingerprint sensor\n"
        if variant == "e":
            text += "\nReqinLogFingerprint inline\n"
        # The benchmark measures the request path, not debug logging.
        text = text.replace("reqin_log:debug", "reqin_log:warn")
        # Enough workers that the server, not the pool, is measured.
        text += "\nStartServers 2\nThreadsPerChild 32\nMaxRequestWorkers 128\nMaxKeepAliveRequests 0\n"
        self.conf = self.root / "httpd.conf"
        self.conf.write_text(text)

    def start_sensor(self):
        """The sensor for this server's TLS port; returns once its ring (group www-data) exists."""
        self.sensor = start_sensor(self.tls_port, self.ring, self.root / "sensor.log", group="www-data")

    def stop_sensor(self):
        """Stops the sensor, if any, and removes the ring's directory."""
        if self.sensor:
            self.sensor.send_signal(signal.SIGTERM)
            self.sensor.wait(timeout=10)
        shutil.rmtree(self.ring_dir, ignore_errors=True)

    def wait_listening(self, timeout_s, process=None):
        """Returns once the TLS port accepts; fails after `timeout_s` or if `process` exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or (process and process.poll() is not None):
                    log = self.root / "error.log"
                    tail = log.read_text()[-2000:] if log.exists() else "(no error log)"
                    raise RuntimeError(f"httpd {self.variant} did not start:\n{tail}")
                time.sleep(0.05)

    def start(self):
        if self.variant == "c":
            self.start_sensor()
        run(["apache2", "-f", str(self.conf), "-k", "start"])
        self.wait_listening(10)

    @contextlib.contextmanager
    def under_valgrind(self, tool, threads, *tool_args):
        """This variant as one process (`apache2 -X`, `threads` workers) under valgrind's `tool`,
        its sensor started for (c); yields the directory of the tool's output files, complete
        once the block has exited (httpd stopped)."""
        self.conf.write_text(self.conf.read_text()
                             + f"\nThreadsPerChild {threads}\nMaxRequestWorkers {threads}\n")
        if self.variant == "c":
            self.start_sensor()
        out_dir = self.root / tool
        out_dir.mkdir()
        # httpd -X still switches to www-data, which must be able to write its output at exit.
        os.chmod(out_dir, 0o777)
        httpd = subprocess.Popen(
            ["valgrind", f"--tool={tool}", "--vgdb=no", f"--{tool}-out-file={out_dir}/out.%p",
             *tool_args, "apache2", "-X", "-f", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "valgrind.log", "w"))
        try:
            self.wait_listening(120, httpd)
            for f in out_dir.glob("out.*"):
                os.chmod(f, 0o666)
            yield out_dir
        finally:
            httpd.terminate()
            httpd.wait(timeout=600)
            self.stop_sensor()

    def stop(self):
        subprocess.run(["apache2", "-f", str(self.conf), "-k", "stop"], capture_output=True)
        pid_file = self.root / "httpd.pid"
        for _ in range(200):
            if not pid_file.exists():
                break
            time.sleep(0.05)
        self.stop_sensor()

    def url(self):
        return f"https://127.0.0.1:{self.tls_port}/index.html"

    def httpd_pids(self):
        out = subprocess.run(["pgrep", "-f", str(self.conf)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def measure(self, proto, requests, clients, streams, log_file, extra=()):
        """One h2load run, plus httpd's and the sensor's CPU µs per request during it."""
        httpd, sensor = self.httpd_pids(), [self.sensor.pid] if self.sensor else []
        h0, s0 = cpu_seconds(httpd), cpu_seconds(sensor)
        r = h2load(self.url(), proto, requests, clients, streams, log_file, extra)
        r["httpd_cpu_us"] = (cpu_seconds(httpd) - h0) * 1e6 / requests
        r["sensor_cpu_us"] = (cpu_seconds(sensor) - s0) * 1e6 / requests
        return r

    def lines(self):
        if not self.log.exists():
            return []
        return [json.loads(l) for l in self.log.read_text().splitlines() if l.strip()]


def h2load(url, proto, requests, clients, streams, log_file, extra=()):
    cmd = ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), "-t", "1",
           f"--log-file={log_file}", *extra]
    if proto == "h1":
        cmd.append("--h1")
    cmd.append(url)
    out = run(cmd).stdout
    rps = None
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            failed = int(line.split("failed")[0].split(",")[-1].split()[0])
            if failed:
                raise RuntimeError(f"h2load: {failed} requests failed:\n{out}")
    durations = sorted(int(l.split("\t")[2]) for l in Path(log_file).read_text().splitlines() if l)
    p = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))]
    return {"rps": rps, "p50_us": p(0.50), "p99_us": p(0.99)}


def require_tools(*extra):
    """Exits with what to run when a tool the benchmarks drive is missing."""
    for tool in ("h2load", "apache2", "openssl", *extra):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run `make deps`")


def median_interval(ratios, resamples=4000):
    """The 95 % interval of the median of `ratios` (the interleaved pairs of one run), by
    bootstrap: resampled with replacement, seeded, so a run's figures print the same twice."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return f"95 % interval {medians[int(0.025 * resamples)]:.3f}–{medians[int(0.975 * resamples) - 1]:.3f}"


def new_connection_run(server, requests, log_file):
    """One TLS connection per request: h2load reconnects after each `Connection: close`."""
    return server.measure("h1", requests, 4, 1, log_file, extra=("-H", "Connection: close"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40_000, help="requests per keep-alive run")
    ap.add_argument("--new-conn-requests", type=int, default=4_000, help="requests per new-connection run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    require_tools()
    for f in (MODULE, SENSOR, CAPTURE):
        if not f.exists():
            sys.exit(f"{f} not found: run `cargo build --release -p mod_reqin_log -p ja4sensor -p ja4sensor-pcap`")

    results = {}  # (variant, proto) -> list of runs
    with tempfile.TemporaryDirectory(prefix="reqin-bench-") as tmp:
        os.chmod(tmp, 0o755)  # httpd children (www-data) serve files from below it
        servers = {v: Server(v, Path(tmp) / v) for v in "abce"}
        try:
            for s in servers.values():
                s.start()
            # Warm-up: TLS session caches, page cache, first-request costs.
            for v, s in servers.items():
                try:
                    h2load(s.url(), "h1", 2000, args.clients, 1, Path(tmp) / "warm.log")
                except RuntimeError as e:
                    sys.exit(f"variant ({v}): {e}\n{(s.root / 'error.log').read_text()[-2000:]}")
            for rep in range(args.repeats):
                for proto, streams in (("h1", 1), ("h2", 10)):
                    for v, s in servers.items():
                        r = s.measure(proto, args.requests, args.clients, streams, Path(tmp) / "h.log")
                        results.setdefault((v, proto), []).append(r)
            # (d) worst case for the sensor: a new TLS connection per request.
            time.sleep(0.5)  # every buffered line of the keep-alive runs written (100 ms)
            before = len(servers["c"].lines())
            before_e = len(servers["e"].lines())
            # Interleaved repeats, medians: one run of each swings by ±5 % on this kind of machine.
            runs_a, runs_b, runs_c, runs_e = [], [], [], []
            # The order rotates from one repeat to the next (a b c e, b c e a, ...): no variant
            # always runs right after the sensor's busiest run or first after the keep-alive phase.
            runs = {"a": runs_a, "b": runs_b, "c": runs_c, "e": runs_e}
            for rep in range(args.repeats):
                order = "abce"[rep % 4:] + "abce"[:rep % 4]
                for v in order:
                    runs[v].append(new_connection_run(servers[v], args.new_conn_requests, Path(tmp) / "d.log"))
            new_a = {m: statistics.median(r[m] for r in runs_a) for m in ("rps", "httpd_cpu_us")}
            new_b = {m: statistics.median(r[m] for r in runs_b) for m in ("rps", "httpd_cpu_us")}
            new_c = {m: statistics.median(r[m] for r in runs_c) for m in ("rps", "httpd_cpu_us", "sensor_cpu_us")}
            new_e = {m: statistics.median(r[m] for r in runs_e) for m in ("rps", "httpd_cpu_us")}
            new_ratios_b = sorted(b["rps"] / a["rps"] for a, b in zip(runs_a, runs_b))
            new_ratios = sorted(c["rps"] / a["rps"] for a, c in zip(runs_a, runs_c))
            new_ratios_e = sorted(e["rps"] / a["rps"] for a, e in zip(runs_a, runs_e))
            # Each ratio: the median of its pairs, and how far it can be trusted.
            (pair_b, ival_b), (pair_c, ival_c), (pair_e, ival_e) = (
                (statistics.median(r), median_interval(r)) for r in (new_ratios_b, new_ratios, new_ratios_e))
            time.sleep(1.0)  # orphan delay: the last lines are written after it
            lines_c = servers["c"].lines()[before:]
            correlated = sum(1 for l in lines_c if l.get("correlated"))
            lines_e = servers["e"].lines()[before_e:]
            inline_fp = sum(1 for l in lines_e
                            if l.get("fingerprint_source") == "inline" and "tcp_meta_options" in l)
        finally:
            for s in servers.values():
                s.stop()

    metrics = ("rps", "p50_us", "p99_us", "httpd_cpu_us", "sensor_cpu_us")
    med = {k: {m: statistics.median(r[m] for r in runs) for m in metrics}
           for k, runs in results.items()}
    rows = []
    for proto in ("h1", "h2"):
        a, b, c, e = (med[(v, proto)] for v in "abce")
        rows.append((proto, a, b, c, e, c["rps"] / a["rps"], c["rps"] / b["rps"]))
    name = {"a": "no logging", "b": "JSON CustomLog", "c": "mod_reqin_log + sensor",
            "e": "mod_reqin_log inline"}
    out = []
    if args.markdown:
        out.append("| protocol | variant | req/s | p50 µs | p99 µs | httpd CPU µs/req | sensor CPU µs/req |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        for proto, a, b, c, e, ca, cb in rows:
            for v, m in zip("abce", (a, b, c, e)):
                out.append(f"| {proto} | ({v}) {name[v]} | {m['rps']:.0f} | {m['p50_us']} | {m['p99_us']} "
                           f"| {m['httpd_cpu_us']:.1f} | {m['sensor_cpu_us']:.1f} |")
        out.append("")
        for proto, a, b, c, e, ca, cb in rows:
            out.append(f"- {proto}: c/a = **{ca:.3f}** (target ≥ 0.98), c/b = **{cb:.3f}** (target ≥ 1), "
                       f"e/a = **{e['rps'] / a['rps']:.3f}**; "
                       f"httpd CPU per request c − a = {c['httpd_cpu_us'] - a['httpd_cpu_us']:+.1f} µs, "
                       f"c − b = {c['httpd_cpu_us'] - b['httpd_cpu_us']:+.1f} µs, "
                       f"e − a = {e['httpd_cpu_us'] - a['httpd_cpu_us']:+.1f} µs")
        out.append(f"- (b) JSON CustomLog, new TLS connection per request: req/s b/a = "
                   f"**{pair_b:.3f}** ({ival_b}; "
                   f"{new_a['rps']:.0f} vs {new_b['rps']:.0f} req/s); httpd CPU per request "
                   f"{new_a['httpd_cpu_us']:.0f} (a) vs {new_b['httpd_cpu_us']:.0f} µs (b); b/a of each "
                   f"interleaved pair: " + ", ".join(f"{r:.3f}" for r in new_ratios_b))
        out.append(f"- (d) new TLS connection per request: {correlated}/{len(lines_c)} lines correlated "
                   f"({100.0 * correlated / max(1, len(lines_c)):.1f} %, target 100 %), "
                   f"req/s c/a = **{pair_c:.3f}** (target ≥ 0.97; "
                   f"{ival_c}; "
                   f"{new_a['rps']:.0f} vs {new_c['rps']:.0f} req/s); CPU per request: httpd "
                   f"{new_a['httpd_cpu_us']:.0f} vs {new_c['httpd_cpu_us']:.0f} µs, sensor "
                   f"{new_c['sensor_cpu_us']:.1f} µs; c/a of each interleaved pair: "
                   + ", ".join(f"{r:.3f}" for r in new_ratios))
        out.append(f"- (e) inline, new TLS connection per request: {inline_fp}/{len(lines_e)} lines with "
                   f"the inline fingerprint and SYN fields, req/s e/a = **{pair_e:.3f}** "
                   f"(target ≥ 0.97; {ival_e}; {new_a['rps']:.0f} vs "
                   f"{new_e['rps']:.0f} req/s); httpd CPU per "
                   f"request {new_a['httpd_cpu_us']:.0f} (a) vs {new_e['httpd_cpu_us']:.0f} µs (e), no "
                   f"sensor; e/a of each interleaved pair: " + ", ".join(f"{r:.3f}" for r in new_ratios_e))
    else:
        out.append(f"{'proto':5} {'variant':26} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'httpd µs/req':>13} {'sensor µs/req':>14}")
        for proto, a, b, c, e, ca, cb in rows:
            for v, m in zip("abce", (a, b, c, e)):
                out.append(f"{proto:5} ({v}) {name[v]:22} {m['rps']:9.0f} {m['p50_us']:8} {m['p99_us']:8} "
                           f"{m['httpd_cpu_us']:13.1f} {m['sensor_cpu_us']:14.1f}")
            out.append(f"{proto:5} ratios: c/a {ca:.3f} (target >= 0.98), c/b {cb:.3f} (target >= 1), "
                       f"e/a {e['rps'] / a['rps']:.3f}")
        out.append(f"new connection per request, JSON CustomLog: b/a {pair_b:.3f} "
                   f"({ival_b}); CPU µs/req httpd {new_a['httpd_cpu_us']:.0f} (a) vs "
                   f"{new_b['httpd_cpu_us']:.0f} (b); pairs: " + " ".join(f"{r:.3f}" for r in new_ratios_b))
        out.append(f"new connection per request: {correlated}/{len(lines_c)} correlated, "
                   f"c/a {pair_c:.3f} (target >= 0.97; {ival_c}); CPU µs/req httpd "
                   f"{new_a['httpd_cpu_us']:.0f} (a) vs {new_c['httpd_cpu_us']:.0f} (c), sensor "
                   f"{new_c['sensor_cpu_us']:.1f}; pairs: " + " ".join(f"{r:.3f}" for r in new_ratios))
        out.append(f"inline, new connection per request: {inline_fp}/{len(lines_e)} with the inline "
                   f"fingerprint and SYN fields, e/a {pair_e:.3f} (target >= 0.97; "
                   f"{ival_e}); CPU "
                   f"µs/req httpd {new_a['httpd_cpu_us']:.0f} (a) vs {new_e['httpd_cpu_us']:.0f} (e); pairs: "
                   + " ".join(f"{r:.3f}" for r in new_ratios_e))
    print("\n".join(out))


if __name__ == "__main__":
    main()
