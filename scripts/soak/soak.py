#!/usr/bin/env python3
"""The fault soak (`make soak`): real TLS load on a private httpd + mod_reqin_log + ja4sensor on
lo + `ja4sensor ship` into a private clickhouse-server, while faults are injected, each several
times; then one table of what was lost, duplicated, broken or crashed, printed and written into
RELIABILITY.md with the command and the machine.

Load (known counts of each): h2load over HTTP/2 and over HTTP/1.1 keep-alive, curl with a new
TLS connection per request (unique URLs, so every request is matched to its line), curl over
IPv6 keep-alive (unique URLs).

Faults: the sensor killed (-9) and restarted; the sensor stopped (SIGSTOP) for 5 s; the ring file
deleted, truncated, overwritten in place with random bytes, replaced by a FIFO and by a symlink to
a file the Apache user may not read; `apachectl graceful`; graceful-stop then start; the log's file
system (a small tmpfs) full for 10 s; the shipper killed (-9) and restarted; ClickHouse stopped for
30 s.

Needs root and release builds (`make soak` builds them). Bounded: about ten minutes on 2 cores.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", TOP / "target")) / "release"
MODULE = TARGET / "libmod_reqin_log.so"
SENSOR = TARGET / "ja4sensor"
# What `ja4sensor run` executes (the capture, linked to libpcap), next to it.
CAPTURE = TARGET / "ja4sensor-pcap"
TEMPLATE = TOP / "httpd-conf/test/httpd.conf.in"
CH_SERVER = next((p for p in ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server") if os.path.exists(p)), "clickhouse-server")


# How long a ring fault may cost the join: the sensor checks its ring and the children their
# mappings once a second each.
RING_MEND = 2.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now():
    return time.time()


class Events:
    """What happened when: faults, recoveries, notes; printed as it goes."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()
        self.t0 = now()

    def add(self, kind, **kw):
        with self.lock:
            self.items.append({"t": now(), "kind": kind, **kw})
        print(f"[{now() - self.t0:7.1f}s] {kind} {kw if kw else ''}", flush=True)


class Httpd:
    def __init__(self, root, ring, log_dir):
        self.root = root
        self.ring = ring
        self.tls_port = free_port()
        self.tls6_port = free_port()
        self.http_port = free_port()
        self.log = log_dir / "reqin.log"
        docroot = root / "htdocs"
        docroot.mkdir()
        (docroot / "index.html").write_text("soak\n")
        os.chmod(root, 0o755)
        os.chmod(docroot, 0o755)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
             "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
            check=True, capture_output=True)
        os.chmod(root / "key.pem", 0o644)
        text = TEMPLATE.read_text()
        for k, v in {
            "@SERVER_ROOT@": root, "@MODULES_DIR@": "/usr/lib/apache2/modules", "@MPM@": "event",
            "@REQIN_MODULE@": MODULE, "@LISTEN_TLS@": self.tls_port, "@LISTEN_HTTP@": self.http_port,
            "@CERT@": root / "cert.pem", "@KEY@": root / "key.pem", "@REQIN_LOG@": self.log,
            "@RING@": ring, "@DOCROOT@": docroot,
        }.items():
            text = text.replace(k, str(v))
        text = text.replace("LogLevel warn reqin_log:debug", "LogLevel warn reqin_log:info")
        text += f"""
Listen [::1]:{self.tls6_port}
<VirtualHost [::1]:{self.tls6_port}>
    SSLEngine on
    SSLCertificateFile "{root / 'cert.pem'}"
    SSLCertificateKeyFile "{root / 'key.pem'}"
</VirtualHost>
StartServers 2
ServerLimit 8
ThreadsPerChild 25
MaxRequestWorkers 100
MaxKeepAliveRequests 0
JsonSockLogHeaders User-Agent
<Location /reqin-status>
    SetHandler reqin-log-status
    Require ip 127.0.0.1
</Location>
"""
        self.conf = root / "httpd.conf"
        self.conf.write_text(text)
        self.error_log = root / "error.log"

    def ctl(self, verb):
        return subprocess.run(["apache2", "-f", str(self.conf), "-k", verb],
                              capture_output=True, text=True)

    def pid(self):
        try:
            return int((self.root / "httpd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def wait_listening(self, timeout=20):
        deadline = now() + timeout
        while now() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), 0.5).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def start(self):
        r = self.ctl("start")
        if r.returncode != 0 or not self.wait_listening():
            raise SystemExit(f"httpd did not start: {r.stderr}\n{self.error_log.read_text()}")

    def stop(self):
        pid = self.pid()
        self.ctl("stop")
        deadline = now() + 20
        while pid and Path(f"/proc/{pid}").exists() and now() < deadline:
            time.sleep(0.1)

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/reqin-status", timeout=5) as r:
            out = {}
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    k, _, v = line.partition(" ")
                    out[k] = float(v)
            return out


class Sensor:
    def __init__(self, root, ring, port_list):
        self.ring = ring
        self.ports = ",".join(map(str, port_list))
        self.log = open(root / "sensor.log", "a")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [str(SENSOR), "run", "--interface", "lo", "--ports", self.ports, "--ring", str(self.ring),
             "--ring-group", "www-data"],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, "RUST_LOG": "info"})
        deadline = now() + 20
        while not self.ring.exists() and now() < deadline:
            time.sleep(0.05)

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class ClickHouse:
    def __init__(self, root):
        self.dir = root / "clickhouse"
        self.dir.mkdir()
        self.http_port, self.tcp_port, self.inter_port = free_port(), free_port(), free_port()
        d = self.dir
        (d / "config.xml").write_text(f"""<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{self.http_port}</http_port><tcp_port>{self.tcp_port}</tcp_port>
  <interserver_http_port>{self.inter_port}</interserver_http_port><listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path><user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path><users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>104857600</mark_cache_size><max_concurrent_queries>50</max_concurrent_queries>
</yandex>
""")
        (d / "users.xml").write_text("""<yandex><profiles><default></default></profiles>
<users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
<quotas><default></default></quotas></yandex>
""")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([CH_SERVER, f"--config-file={self.dir}/config.xml"], cwd=self.dir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = now() + 60
        while now() < deadline:
            try:
                if self.query("SELECT 1").strip() == "1":
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("clickhouse-server did not start")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def query(self, sql):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/", data=sql.encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()


class Shipper:
    def __init__(self, root, ch, log):
        self.metrics_port = free_port()
        self.config = root / "ship.yml"
        self.config.write_text(f"""ship:
  clickhouse:
    url: http://127.0.0.1:{ch.http_port}
  retry:
    initial_ms: 100
    max_ms: 2000
  input:
    path: "{log}*"
  checkpoint_path: "{root}/ship.checkpoint"
  dead_letter_path: "{root}/ship.deadletter"
  metrics:
    addr: 127.0.0.1:{self.metrics_port}
    log_interval_s: 10
""")
        self.log = open(root / "ship.log", "a")
        self.proc = None

    def init_schema(self):
        subprocess.run([str(SENSOR), "ship", "--config", str(self.config), "--init-schema"],
                       check=True, stderr=self.log)

    def start(self):
        self.proc = subprocess.Popen([str(SENSOR), "ship", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def lag_bytes(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("reqin_ship_lag_bytes "):
                        return float(line.split()[1])
        except OSError:
            return None
        return None


class Load:
    """One kind of client, run in a loop until stopped; counts what completed."""

    def __init__(self, name, events):
        self.name = name
        self.events = events
        self.succeeded = 0
        self.failed = 0
        self.failed_runs = []   # (start, end, failed) of runs that had failures
        self.sent_ids = set()   # unique markers, for the clients that send unique URLs
        self.ok_ids = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        n = 0
        while not self.stop.is_set():
            t = now()
            ok, bad = self.run_once(n)
            n += 1
            self.succeeded += ok
            self.failed += bad
            if bad:
                self.failed_runs.append((t, now(), bad))


class H2load(Load):
    def __init__(self, name, url, h1, events):
        super().__init__(name, events)
        self.url, self.h1 = url, h1

    def run_once(self, n):
        # A steady 400 requests/s per client kind (4 connections × 100/s): load, not a benchmark.
        cmd = ["h2load", "-n", "3000", "-c", "4", "-t", "1", "--rps", "100"]
        cmd += ["--h1"] if self.h1 else ["-m", "4"]
        out = subprocess.run(cmd + [f"{self.url}?load={self.name}"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("requests:"):
                parts = dict(p.strip().split(" ", 1)[::-1] for p in line[len("requests:"):].split(","))
                ok = int(parts.get("succeeded", 0))
                return ok, 3000 - ok
        return 0, 3000


class Curl(Load):
    def __init__(self, name, base, extra, events):
        super().__init__(name, events)
        self.base, self.extra = base, extra

    def run_once(self, n):
        ids = [f"{self.name}-{n}-{i}" for i in range(40)]
        cmd = ["curl", "-sk", "--max-time", "20"] + self.extra
        for i in ids:
            cmd += ["-o", "/dev/null", "-w", "%{http_code}\\n", f"{self.base}?load={self.name}&id={i}"]
        self.sent_ids.update(ids)
        codes = subprocess.run(cmd, capture_output=True, text=True).stdout.split()
        ok = 0
        for i, code in zip(ids, codes):
            if code == "200":
                ok += 1
                self.ok_ids.add(i)
        return ok, len(ids) - ok


def fill(path):
    """Fills the file system of `path` (a small tmpfs) with one file."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="times each fault is injected")
    ap.add_argument("--gap", type=float, default=10.0, help="seconds of plain load between faults")
    ap.add_argument("--write", type=Path, default=TOP / "RELIABILITY.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the soak needs root (pcap on lo, httpd as root, tmpfs mounts)")
    for p in (MODULE, SENSOR, CAPTURE):
        if not p.exists():
            raise SystemExit(f"{p} missing: run `make release`")

    ev = Events()
    root = Path(tempfile.mkdtemp(prefix="reqin-soak-"))
    os.chmod(root, 0o755)
    log_dir = root / "logfs"
    log_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g,mode=0755", "tmpfs", str(log_dir)], check=True)
    ring = Path(f"/dev/shm/reqin-soak-{os.getpid()}.ring")
    secret = root / "secret"
    secret.write_text("not for www-data\n")
    os.chmod(secret, 0o600)
    httpd = Httpd(root, ring, log_dir)
    sensor = Sensor(root, ring, [httpd.tls_port, httpd.tls6_port])
    ch = ClickHouse(root)
    shipper = Shipper(root, ch, httpd.log)
    loads = []
    try:
        ch.start()
        shipper.init_schema()
        sensor.start()
        httpd.start()
        shipper.start()
        ev.add("started", httpd=httpd.tls_port, ipv6=httpd.tls6_port, ring=str(ring))
        https = f"https://127.0.0.1:{httpd.tls_port}/"
        loads = [
            H2load("h2", https, False, ev),
            H2load("h1", https, True, ev),
            Curl("newconn", https, ["--http1.1", "-H", "Connection: close"], ev),
            Curl("ipv6", f"https://[::1]:{httpd.tls6_port}/", ["--http1.1"], ev),
        ]
        for l in loads:
            l.thread.start()
        time.sleep(args.gap)

        def restart_sensor_after(seconds):
            time.sleep(seconds)
            sensor.kill(signal.SIGTERM)
            sensor.start()
            ev.add("sensor restarted")

        def ring_fault(kind):
            ev.add("fault", what=f"ring {kind}")
            if kind == "deleted":
                ring.unlink(missing_ok=True)
            elif kind == "truncated":
                os.truncate(ring, 4096)
            elif kind == "overwritten":
                with open(ring, "r+b") as f:
                    f.write(os.urandom(1 << 20))
            elif kind == "fifo":
                ring.unlink(missing_ok=True)
                os.mkfifo(ring, 0o644)
            elif kind == "symlink":
                ring.unlink(missing_ok=True)
                os.symlink(secret, ring)
            time.sleep(3)
            # The sensor mends its ring itself (a new ring within a second); it is restarted
            # here only if it died, which is then reported.
            if not sensor.alive():
                ev.add("sensor died", after=f"ring {kind}")
                if ring.is_fifo() or ring.is_symlink():
                    ring.unlink()
                sensor.start()
                ev.add("sensor restarted")

        faults = []
        for _ in range(args.rounds):
            faults += [
                ("sensor kill -9", lambda: (sensor.kill(), ev.add("fault", what="sensor kill -9"),
                                            time.sleep(2), sensor.start(), ev.add("sensor restarted"))),
                ("sensor SIGSTOP 5s", lambda: (ev.add("fault", what="sensor SIGSTOP 5s"),
                                               sensor.kill(signal.SIGSTOP), time.sleep(5),
                                               sensor.kill(signal.SIGCONT), ev.add("sensor continued"))),
                ("ring deleted", lambda: ring_fault("deleted")),
                ("ring truncated", lambda: ring_fault("truncated")),
                ("ring overwritten", lambda: ring_fault("overwritten")),
                ("ring fifo", lambda: ring_fault("fifo")),
                ("ring symlink", lambda: ring_fault("symlink")),
                ("graceful", lambda: (ev.add("fault", what="graceful"), httpd.ctl("graceful"))),
                ("graceful-stop", lambda: (ev.add("fault", what="graceful-stop"), httpd.ctl("graceful-stop"),
                                           time.sleep(1), httpd.stop(), httpd.start(), ev.add("httpd started"))),
                ("disk full 10s", lambda: disk_full()),
                ("shipper kill -9", lambda: (ev.add("fault", what="shipper kill -9"), shipper.kill(),
                                             time.sleep(2), shipper.start(), ev.add("shipper restarted"))),
            ]
        faults.append(("clickhouse stopped 30s", lambda: (ev.add("fault", what="clickhouse stopped 30s"),
                                                         ch.stop(), time.sleep(30), ch.start(),
                                                         ev.add("clickhouse started"))))

        def disk_full():
            ev.add("fault", what="disk full 10s")
            filler = log_dir / "filler"
            fill(filler)
            time.sleep(10)
            filler.unlink()
            ev.add("disk freed")

        random.Random(4).shuffle(faults)
        for name, fault in faults:
            fault()
            time.sleep(args.gap)
        for l in loads:
            l.stop.set()
        for l in loads:
            l.thread.join()
        ev.add("load stopped")
        time.sleep(2)
        status = httpd.status()
        # The shipper catches up.
        deadline = now() + 180
        while now() < deadline and shipper.lag_bytes() not in (0.0,):
            time.sleep(1)
        ev.add("shipper caught up", lag=shipper.lag_bytes())
        report(args, ev, httpd, loads, status, ch, root)
    finally:
        for l in loads:
            l.stop.set()
        shipper.kill()
        httpd.stop()
        sensor.kill(signal.SIGCONT)
        sensor.kill(signal.SIGTERM)
        ch.stop()
        if httpd.log.exists():
            shutil.copy(httpd.log, root / "reqin.log")
        subprocess.run(["umount", "-l", str(log_dir)])
        for p in (ring,):
            try:
                p.unlink()
            except OSError:
                pass
        print(f"soak files kept in {root}")


def report(args, ev, httpd, loads, status, ch, root):
    raw = httpd.log.read_bytes().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines, invalid = [], 0
    for b in raw:
        try:
            lines.append(json.loads(b))
        except ValueError:
            invalid += 1
    by_load = defaultdict(list)
    for l in lines:
        q = l.get("query", "")
        load = next((p[5:] for p in q.split("&") if p.startswith("load=")), None)
        by_load[load].append(l)
    rows = []
    total_sent = total_lines = 0
    lost_total = dup_total = 0
    for l in loads:
        got = by_load.get(l.name, [])
        if isinstance(l, Curl):
            ids = Counter(next((p[3:] for p in x.get("query", "").split("&") if p.startswith("id=")), None) for x in got)
            missing = len(l.ok_ids - set(ids))
            dups = sum(c - 1 for c in ids.values() if c > 1)
        else:
            missing = max(0, l.succeeded - len(got))
            dups = max(0, len(got) - l.succeeded)
        total_sent += l.succeeded
        total_lines += len(got)
        lost_total += missing
        dup_total += dups
        rows.append((l.name, l.succeeded, l.failed, len(got), missing, dups))
    request_ids = Counter(l.get("request_id") for l in lines)
    dup_request_ids = sum(c - 1 for c in request_ids.values() if c > 1)
    crashed = [x for x in httpd.error_log.read_text(errors="replace").splitlines()
               if "exit signal" in x or "panicked" in x]
    # Requests that failed in a run overlapping a restart of httpd (graceful: old children close
    # their idle connections, which h2load does not reopen; graceful-stop: no server) are httpd's
    # doing; any other failure would be ours.
    restarts = []
    for e in ev.items:
        if e["kind"] == "fault" and e.get("what") in ("graceful", "graceful-stop"):
            end = next((x["t"] for x in ev.items if x["t"] > e["t"] and x["kind"] == "httpd started"), e["t"])
            restarts.append((e["t"] - 1, max(end, e["t"]) + 6))
    unexplained_failures = restart_failures = 0
    for l in loads:
        for (a, b, bad) in l.failed_runs:
            if any(a <= d1 and b >= d0 for d0, d1 in restarts):
                restart_failures += bad
            else:
                unexplained_failures += bad
    five_xx = sum(1 for l in lines if int(l.get("status", 0)) >= 500)
    # Correlation while the sensor was up: TLS lines outside the windows from a sensor or ring
    # fault to the first correlated request on a new connection after it (requests on older
    # connections keep their join). Recovery time: from the sensor's restart (or the fault,
    # for ring faults it mends itself) to that request.
    times = sorted(((parse_time(l["time"]), l) for l in lines), key=lambda tl: tl[0])
    new_conn = [t for t, l in times if l.get("correlated") and l.get("keepalives") == 1]
    recoveries = []
    windows = []
    for e in ev.items:
        if e["kind"] != "fault" or not any(w in e.get("what", "") for w in ("sensor", "ring")):
            continue
        ft = e["t"]
        back = next((x["t"] for x in ev.items if x["t"] >= ft
                     and x["kind"] in ("sensor restarted", "sensor continued")), ft)
        if "ring" in e["what"]:
            back = ft
        first = next((t for t in new_conn if t > back), None)
        if first is not None:
            recoveries.append(first - back)
        end = first or ft + 60
        if "ring" in e["what"]:
            # A child may still join through its old mapping right after the fault (that is the
            # "first" request); the others notice at their next check of the ring, and the sensor
            # recreates it at its own: each once a second.
            end = max(end, ft + RING_MEND)
        windows.append((ft, end + 0.2))
    # A connection opened inside a window (or before one and not yet joined: its record died
    # with a broken ring) is the fault's; the share counts connections opened while all was well.
    opened = {}
    for t, l in times:
        opened.setdefault(l.get("conn_id"), t)
    in_window = lambda t: any(a <= t <= b for a, b in windows)
    tls_up = [l for t, l in times if l.get("scheme") == "https"
              and not in_window(t) and not in_window(opened.get(l.get("conn_id"), t))
              and not any(opened.get(l.get("conn_id"), t) < a <= t for a, _ in windows)]
    sensor_deaths = sum(1 for e in ev.items if e["kind"] == "sensor died")
    correlated_up = sum(1 for l in tls_up if l.get("correlated"))
    share = correlated_up / len(tls_up) if tls_up else 0.0
    # Why the others are not: the module's own orphan_reason, and what the sensor's capture lost.
    reasons = Counter(l.get("orphan_reason", "?") for l in tls_up if not l.get("correlated"))
    why = ", ".join(f"{r} {n}" for r, n in reasons.most_common()) or "none"
    ch_count = int(ch.query("SELECT count() FROM http_logs_raw").strip())
    ch_unique = int(ch.query("SELECT uniqExact(visitParamExtractString(raw_json, 'request_id')) FROM http_logs_raw").strip())
    write_errors = status.get("reqin_log_write_errors_total", 0)
    # The status counters are the last httpd's (a graceful-stop and start is a new parent); the
    # error log has every child's report of its lost lines, each httpd's included.
    reported_lost = sum(int(m.group(1)) for m in re.finditer(
        r"ReqinLogFile [^\n]*?: (\d+) log line\(s\) lost", httpd.error_log.read_text(errors="replace")))
    table = [
        ("requests completed (all clients)", f"{total_sent}"),
        ("lines written for them", f"{total_lines}"),
        ("lines missing (completed, no line)", f"{lost_total}"),
        ("  lost lines the error log reports (the log's disk full; every httpd run)", f"{reported_lost}"),
        ("  lost lines counted by the last httpd's reqin_log_write_errors_total", f"{int(write_errors)}"),
        ("lines duplicated (same request twice)", f"{dup_total} (request_id repeated: {dup_request_ids})"),
        ("lines that are not valid JSON", f"{invalid}"),
        ("httpd children dead of a signal (error log)", f"{len(crashed)}"),
        ("sensor deaths (restarted by the soak)", f"{sensor_deaths}"),
        ("failed requests in runs across an httpd restart (connections httpd closed)", f"{restart_failures}"),
        ("failed requests at any other time", f"{unexplained_failures}"),
        ("5xx answers", f"{five_xx}"),
        ("TLS lines correlated while the sensor was up", f"{share * 100:.3f} % ({correlated_up}/{len(tls_up)})"),
        ("  the others, by orphan_reason", why),
        ("sensor back → first correlated request (median, max)",
         f"{median(recoveries):.2f} s, {max(recoveries) if recoveries else 0:.2f} s over {len(recoveries)} recoveries"),
        ("rows in ClickHouse / lines on disk", f"{ch_count} / {len(raw)}"),
        ("rows in ClickHouse twice (by request_id)", f"{ch_count - ch_unique}"),
    ]
    per_load = ["| load | completed | failed | lines | missing | duplicated |", "|---|---|---|---|---|---|"]
    per_load += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |" for r in rows]
    faults = Counter(e["what"] for e in ev.items if e["kind"] == "fault")
    text = [
        "# Reliability",
        "",
        "Measured by `make soak` (`python3 scripts/soak/soak.py`): real TLS load on a private httpd",
        "(event MPM) + mod_reqin_log + ja4sensor on lo + `ja4sensor ship` into a private",
        "clickhouse-server, while faults are injected; then what was lost, duplicated, broken or",
        "crashed. Release builds.",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; run of "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(ev.t0))}, {now() - ev.t0:.0f} s.",
        "",
        "Faults injected: " + ", ".join(f"{k} ×{v}" for k, v in sorted(faults.items())) + ".",
        "",
        "| figure | value |",
        "|---|---|",
    ] + [f"| {k} | {v} |" for k, v in table] + ["", "Per client:", ""] + per_load + [
        "",
        "How the figures are counted: a request is *completed* when its client got an answer;",
        "curl's lines are matched by the unique id in their URL, h2load's counted per load against",
        "its own count of succeeded requests. *Lost* lines are completed",
        "requests without a line; the module reports each in the error log (`N log line(s) lost`),",
        "the sum of which is the line above. *Correlated while the sensor was up* counts TLS lines of",
        "connections opened outside the windows of sensor and ring faults: from the fault to the",
        "first correlated request on a new connection after the sensor is back, and for a ring",
        f"fault at least {RING_MEND:.0f} s (the sensor and each child check the ring once a second).",
        "Failed requests across an httpd restart are connections httpd itself closed",
        "(graceful-stop), not the module's.",
        "",
    ]
    out = "\n".join(text)
    print(out)
    args.write.write_text(out)
    (root / "events.json").write_text(json.dumps(ev.items, indent=1))


def parse_time(s):
    import datetime
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0.0


if __name__ == "__main__":
    main()
