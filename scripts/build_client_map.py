#!/usr/bin/env python3
"""Builds the project's ja4 -> client mapping (sensor/detect/data/clients.csv) from real clients.

Every client installed by scripts/deps.sh connects over loopback TLS to its own `openssl
s_server` port while tcpdump captures `lo`; the real `ja4sensor read` turns the capture into
one JSON line per ClientHello, and the destination port tells which client sent it. Each client
connects at least twice (a second connection may resume the TLS session, which changes the
JA4: the pre_shared_key extension), and the browsers load a page with subresources.

    python3 scripts/build_client_map.py [--sensor target/release/ja4sensor] [--out FILE]

Clients: curl (HTTP/2 and --http1.1), wget, openssl s_client, gnutls-cli, python requests and
httpx (.venv), Go (net/http, scripts/clients/https_get.go), headless Chromium and Firefox ESR.
A client that is not installed is reported and left out (--require-all makes that an error).
Needs root (tcpdump on lo).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python3"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--ignore-certificate-errors",
]
PAGE = "<html><body><img src=/a.png><img src=/b.png><script src=/c.js></script></body></html>\n"


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0].strip() if text else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, timeout=30, stdin=subprocess.DEVNULL, env=None):
    try:
        return subprocess.run(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout, env=env).returncode
    except subprocess.TimeoutExpired:
        return -1


def clients(tmp):
    """(label, notes, available, [argv...] per connection run) of every client, URL as {url}."""
    py = str(VENV_PY) if VENV_PY.exists() else None
    go = shutil.which("go")
    gobin = tmp / "https_get"
    if go:
        env = dict(os.environ, GOCACHE=str(tmp / "gocache"), GOPATH=str(tmp / "gopath"), GOFLAGS="-mod=mod",
                   GO111MODULE="off", CGO_ENABLED="0")
        subprocess.run([go, "build", "-o", str(gobin), str(ROOT / "scripts/clients/https_get.go")],
                       check=False, env=env, capture_output=True)
    chromium = shutil.which("chromium")
    firefox = shutil.which("firefox-esr")
    pyreq = "import sys,requests,urllib3;urllib3.disable_warnings();requests.get(sys.argv[1],verify=False,timeout=10)"
    pyhttpx = "import sys,httpx;httpx.get(sys.argv[1],verify=False,timeout=10)"
    twice = lambda argv: [argv, argv]
    # `curl 7.88.1 (...) libcurl/7.88.1 OpenSSL/3.0.19 ...`: the version and the TLS library.
    words = version(["curl", "--version"]).split()
    curl_version = " ".join(words[:2] + [w for w in words if w.startswith(("OpenSSL/", "GnuTLS/"))][:1])
    out = [
        ("curl", curl_version, shutil.which("curl"),
         twice(["curl", "-sk", "--max-time", "10", "-o", "/dev/null", "{url}"])),
        ("curl", curl_version + " (--http1.1)", shutil.which("curl"),
         twice(["curl", "-sk", "--http1.1", "--max-time", "10", "-o", "/dev/null", "{url}"])),
        ("wget", version(["wget", "--version"]), shutil.which("wget"),
         twice(["wget", "-q", "--no-check-certificate", "-T", "10", "-t", "1", "-O", "/dev/null", "{url}"])),
        ("openssl", version(["openssl", "version"]) + " s_client", shutil.which("openssl"),
         [["openssl", "s_client", "-connect", "127.0.0.1:{port}"],
          ["openssl", "s_client", "-connect", "127.0.0.1:{port}", "-servername", "{host}"]]),
        ("gnutls", version(["gnutls-cli", "--version"]), shutil.which("gnutls-cli"),
         twice(["gnutls-cli", "--insecure", "-p", "{port}", "{host}"])),
        ("python-requests", "python-requests " + version([py, "-c", "import requests;print(requests.__version__)"]) if py else "",
         py, twice([py or "", "-c", pyreq, "{url}"])),
        ("python-httpx", "python-httpx " + version([py, "-c", "import httpx;print(httpx.__version__)"]) if py else "",
         py, twice([py or "", "-c", pyhttpx, "{url}"])),
        ("go", version([go, "version"]) if go else "", str(gobin) if gobin.exists() else None,
         twice([str(gobin), "{url}"])),
    ]
    if chromium:
        out.append(("chromium", version([chromium, "--version"]) + " headless", chromium,
                    [[chromium, *CHROMIUM_FLAGS, "--user-data-dir=" + str(tmp / "chromium-{n}"),
                      "--dump-dom", "{url}index.html"]]))
    else:
        out.append(("chromium", "", None, []))
    if firefox:
        runs = []
        for i in range(4):
            prof = tmp / f"firefox-{i}"
            prof.mkdir()
            # No first-run pages, no telemetry or update pings; the self-signed cert's error page
            # does not matter: the ClientHello is what we want.
            (prof / "user.js").write_text(
                'user_pref("browser.shell.checkDefaultBrowser", false);\n'
                'user_pref("datareporting.policy.dataSubmissionEnabled", false);\n'
                'user_pref("toolkit.telemetry.enabled", false);\n'
                'user_pref("app.update.enabled", false);\n'
                'user_pref("network.http.http3.enable", false);\n')
        runs = [[firefox, "--headless", "-no-remote", "-profile", str(tmp / "firefox-{n}"),
                 "--screenshot", str(tmp / "ff-{n}.png"), "{url}index.html"]]
        out.append(("firefox", version([firefox, "--version"]) + " headless", firefox, runs))
    else:
        out.append(("firefox", "", None, []))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensor", default=None, help="ja4sensor binary (default: target/release, else target/debug)")
    ap.add_argument("--out", default=str(ROOT / "sensor/detect/data/clients.csv"))
    ap.add_argument("--require-all", action="store_true", help="fail when a client is not installed")
    args = ap.parse_args()
    sensor = args.sensor or next((str(p) for p in (ROOT / "target/release/ja4sensor", ROOT / "target/debug/ja4sensor")
                                  if p.exists()), None)
    if not sensor:
        sys.exit("no ja4sensor binary: cargo build -p ja4sensor first")
    with tempfile.TemporaryDirectory(prefix="client-map-") as d:
        tmp = Path(d)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(tmp / "key.pem"),
                        "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
        www = tmp / "www"
        www.mkdir()
        (www / "index.html").write_text(PAGE)
        for f in ("a.png", "b.png", "c.js"):
            (www / f).write_text("x\n")
        todo = [c for c in clients(tmp)]
        missing = [c[0] for c in todo if not c[2]]
        if missing and args.require_all:
            sys.exit(f"clients not installed: {missing} (make deps)")
        todo = [c for c in todo if c[2]]
        ports = [free_port() for _ in todo]
        servers = [subprocess.Popen(["openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{p}", "-cert",
                                     str(tmp / "cert.pem"), "-key", str(tmp / "key.pem"), "-WWW"],
                                    cwd=www, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for p in ports]
        pcap = tmp / "clients.pcap"
        filt = " or ".join(f"port {p}" for p in ports)
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-w", str(pcap), f"tcp and ({filt})"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.5)
        try:
            for (label, notes, _, runs), port in zip(todo, ports):
                n = 0
                # By address (no SNI: JA4 `t13i...`) and by name (SNI: `t13d...`), each run of
                # the list (clients that resume a session run twice: both JA4s appear).
                for host in ("127.0.0.1", "localhost"):
                    for argv in runs:
                        argv = [a.replace("{url}", f"https://{host}:{port}/").replace("{port}", str(port))
                                .replace("{host}", host).replace("{hostport}", f"{host}:{port}")
                                .replace("{n}", str(n)) for a in argv]
                        n += 1
                        rc = run(argv, timeout=20)
                        print(f"  {label:16} rc={rc}: {' '.join(argv[:3])} ... {host}", file=sys.stderr)
        finally:
            time.sleep(1.0)
            dump.send_signal(signal.SIGINT)
            dump.wait(timeout=10)
            for s in servers:
                s.terminate()
                s.wait(timeout=10)
        out = subprocess.run([sensor, "read", str(pcap)], check=True, capture_output=True, text=True).stdout
        by_port = {p: (label, notes) for (label, notes, _, _), p in zip(todo, ports)}
        rows, seen = [], set()
        for line in out.splitlines():
            rec = json.loads(line)
            who = by_port.get(rec.get("dst_port"))
            ja4 = rec.get("ja4")
            if not who or not ja4 or (ja4, who[0]) in seen:
                continue
            seen.add((ja4, who[0]))
            rows.append((ja4, who[0], "linux", f"{who[1]}; {rec.get('tls_alpn') or 'no ALPN'}"))
        got = {r[1] for r in rows}
        lost = sorted({c[0] for c in todo} - got)
        if lost:
            print(f"warning: no ClientHello captured for {lost}", file=sys.stderr)
            if args.require_all:
                sys.exit(1)
        rows.sort(key=lambda r: (r[1], r[0]))
        import csv
        with open(args.out, "w", newline="") as f:
            f.write("# ja4 -> client mapping of mod_reqin_log/ja4sensor (format: README, \"The client map\").\n")
            f.write("# Built by scripts/build_client_map.py from the real clients of a Debian 12 host\n")
            f.write("# (make deps); regenerate with: python3 scripts/build_client_map.py\n")
            if missing:
                f.write(f"# not installed when built: {', '.join(missing)}\n")
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["ja4", "client", "os", "notes"])
            w.writerows(rows)
        print(f"{args.out}: {len(rows)} rows, clients {sorted(got)}", file=sys.stderr)


if __name__ == "__main__":
    main()
