"""Opens a report page in real headless Chromium (Debian's `chromium`) and drives it through the
DevTools protocol over a pipe (--remote-debugging-pipe: fds 3 and 4, messages separated by NUL,
no websocket and no port): collects every console message, uncaught exception and browser log
entry (a Content-Security-Policy refusal, a failed fetch), measures each chart's SVG, and writes a
full-page screenshot. Prints one JSON object. Called by tests/chromium.rs.

usage: chromium_report.py PAGE.html SCREENSHOT.png
"""

import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import time

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_S = 60
# The flags for a closed network, as root.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--remote-debugging-pipe",
]

CHARTS_JS = """JSON.stringify(Array.from(document.querySelectorAll('figure.chart')).map(f => {
  const svg = f.querySelector('svg');
  if (!svg) return {id: f.id, svg: false};
  const b = svg.getBoundingClientRect();
  const box = svg.getBBox();
  return {id: f.id, svg: true, elements: svg.querySelectorAll('*').length,
          shapes: svg.querySelectorAll('rect,path,polyline,circle,line,polygon').length,
          texts: svg.querySelectorAll('text').length,
          width: b.width, height: b.height, bbox_w: box.width, bbox_h: box.height};
}))"""


class Cdp:
    def __init__(self, proc, to_browser, from_browser):
        self.proc, self.w, self.r = proc, to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.wait_for(lambda m: m.get("id") == self.next_id, method)

    def read_one(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from chromium")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise EOFError("chromium closed the pipe")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def wait_for(self, pred, what, timeout=TIMEOUT_S):
        deadline = time.monotonic() + timeout
        for i, m in enumerate(self.events):
            if pred(m):
                return self.events.pop(i)
        while True:
            m = self.read_one(deadline)
            if pred(m):
                if "error" in m:
                    raise RuntimeError(f"{what}: {m['error']}")
                return m
            self.events.append(m)

    def drain(self, seconds):
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self.read_one(deadline))
        except TimeoutError:
            pass


def main():
    page, shot = os.path.abspath(sys.argv[1]), sys.argv[2]
    profile = tempfile.mkdtemp(prefix="chromium-report-")
    to_r, to_w = os.pipe()      # we write, chromium reads fd 3
    from_r, from_w = os.pipe()  # chromium writes fd 4, we read

    def fds():
        # Via fds above 4 first: one of the pipe's own fds may be 3 or 4.
        r, w = os.dup(to_r) + 100, os.dup(from_w) + 100
        os.dup2(to_r, r)
        os.dup2(from_w, w)
        os.dup2(r, 3)
        os.dup2(w, 4)

    # pass_fds keeps 3 and 4 open across exec (the others are closed after preexec_fn runs).
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        pass_fds=(3, 4), preexec_fn=fds,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(to_r)
    os.close(from_w)
    cdp = Cdp(proc, to_w, from_r)
    result = {"console": [], "exceptions": [], "log": []}
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["result"]["targetId"]
        session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "result"]["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            cdp.send(f"{domain}.enable", session=session)
        cdp.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1100, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                 session=session)
        cdp.send("Page.navigate", {"url": "file://" + page}, session=session)
        cdp.wait_for(lambda m: m.get("method") == "Page.loadEventFired", "load")
        cdp.drain(1.0)  # late console messages
        charts = cdp.send("Runtime.evaluate", {"expression": CHARTS_JS, "returnByValue": True},
                          session=session)["result"]["result"]["value"]
        result["charts"] = json.loads(charts)
        result["title"] = cdp.send(
            "Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
            session=session)["result"]["result"]["value"]
        metrics = cdp.send("Page.getLayoutMetrics", session=session)["result"]
        size = metrics["cssContentSize"]
        png = cdp.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        }, session=session)["result"]["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        result["screenshot_bytes"] = os.path.getsize(shot)
        cdp.drain(0.2)
        for m in cdp.events:
            p = m.get("params", {})
            if m.get("method") == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                result["console"].append({"type": p.get("type"), "text": text})
            elif m.get("method") == "Runtime.exceptionThrown":
                result["exceptions"].append(p.get("exceptionDetails", {}).get("text"))
            elif m.get("method") == "Log.entryAdded":
                e = p.get("entry", {})
                result["log"].append({"level": e.get("level"), "source": e.get("source"),
                                      "text": e.get("text"), "url": e.get("url")})
        try:
            cdp.send("Browser.close")
        except (EOFError, TimeoutError, RuntimeError):
            pass
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    result["errors"] = (
        [c for c in result["console"] if c["type"] in ("error", "assert")]
        + [{"exception": e} for e in result["exceptions"]]
        + [l for l in result["log"] if l["level"] == "error"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
