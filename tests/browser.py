"""Headless Chromium driven over the DevTools protocol (test helper, no new dependency).

Starts ``chromium --headless --remote-debugging-port=0`` with a private profile,
reads the port from ``<user-data-dir>/DevToolsActivePort``, attaches to the
page target over a websocket (``websocket-client``, already installed with
Jupyter) and offers the few calls the report tests need: ``navigate``,
``evaluate`` (``Runtime.evaluate`` with ``returnByValue`` and
``awaitPromise``) and ``screenshot``. Every wait is bounded; ``close`` kills
the browser and is safe to call twice.

Pages are loaded with every ``http(s)://`` request blocked
(``Network.setBlockedURLs``): the reports must render without the network
(nbconvert's template refers to MathJax on a CDN, which is not needed for
tables and figures), and tests never touch the network.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str | None:
    """Path of a Chromium executable (``$CHROMIUM`` first), or None."""
    env = os.environ.get("CHROMIUM")
    for cand in ((env,) if env else ()) + CHROMIUM_CANDIDATES:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("chromium")
    return found


class BrowserError(RuntimeError):
    """The browser did not start, answer or load a page in time."""


class Chromium:
    """One headless Chromium process with one page, driven over CDP.

    Parameters
    ----------
    executable : str
        Path of the chromium binary.
    timeout : float, default 60
        Seconds allowed for start-up and for each command or page load.
    width, height : int
        Viewport in CSS pixels.
    """

    def __init__(self, executable: str, *, timeout: float = 60.0, width: int = 1280, height: int = 1000):
        self.executable = executable
        self.timeout = timeout
        self.width, self.height = width, height
        self._proc: subprocess.Popen | None = None
        self._ws = None
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._profile = tempfile.mkdtemp(prefix="iop-chromium-")

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> "Chromium":
        import websocket  # websocket-client

        args = [
            self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={self.width},{self.height}",
            f"--user-data-dir={self._profile}", "--remote-debugging-port=0", "about:blank",
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        port = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace")[-2000:] if self._proc.stderr else ""
                raise BrowserError(f"chromium exited with code {self._proc.returncode} at start-up: {err}")
            if port_file.exists():
                lines = port_file.read_text().splitlines()
                if lines and lines[0].strip().isdigit():
                    port = int(lines[0])
                    break
            time.sleep(0.1)
        if port is None:
            self.close()
            raise BrowserError(f"chromium did not write {port_file} within {self.timeout:.0f} s")
        ws_url = self._page_websocket(port, deadline)
        # suppress_origin: Chromium refuses websocket clients that send a foreign Origin header
        self._ws = websocket.create_connection(ws_url, timeout=self.timeout, suppress_origin=True)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Network.enable")
        self.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        return self

    def _page_websocket(self, port: int, deadline: float) -> str:
        base = f"http://127.0.0.1:{port}"
        last = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/json/list", timeout=5) as resp:
                    targets = json.load(resp)
                pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
                req = urllib.request.Request(f"{base}/json/new?about:blank", method="PUT")
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return json.load(resp)["webSocketDebuggerUrl"]
            except (OSError, ValueError, KeyError) as exc:  # not listening yet
                last = exc
                time.sleep(0.2)
        self.close()
        raise BrowserError(f"no page target from {base} within {self.timeout:.0f} s ({last})")

    def close(self) -> None:
        """Close the websocket, kill the browser, remove its profile."""
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - closing a broken socket
                pass
            self._ws = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- protocol ----------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> dict:
        """Send one command and return its ``result`` (events seen meanwhile are kept)."""
        if self._ws is None:
            raise BrowserError("browser is not running; call start() first")
        self._next_id += 1
        msg_id = self._next_id
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            msg = self._recv(deadline, what=method)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def _recv(self, deadline: float, *, what: str) -> dict:
        import websocket

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrowserError(f"timed out waiting for {what}")
        self._ws.settimeout(remaining)
        try:
            return json.loads(self._ws.recv())
        except websocket.WebSocketTimeoutException as exc:
            raise BrowserError(f"timed out waiting for {what}") from exc

    def wait_event(self, method: str, *, timeout: float | None = None) -> dict:
        """Wait for (and consume) the next event named ``method``."""
        for i, ev in enumerate(self._events):
            if ev["method"] == method:
                return self._events.pop(i)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            msg = self._recv(deadline, what=method)
            if msg.get("method") == method:
                return msg
            if "method" in msg:
                self._events.append(msg)

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self._events = [e for e in self._events if e["method"] != "Page.loadEventFired"]
        res = self.send("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise BrowserError(f"could not open {url}: {res['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression (promises are awaited)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            det = res["exceptionDetails"]
            text = det.get("exception", {}).get("description") or det.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return res.get("result", {}).get("value")

    def exceptions(self) -> list[str]:
        """Uncaught JavaScript exceptions reported by the page so far."""
        return [e["params"]["exceptionDetails"].get("text", "") for e in self._events
                if e["method"] == "Runtime.exceptionThrown"]

    def screenshot(self, path: str | os.PathLike, *, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or the whole page) to ``path``."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        out = Path(path)
        out.write_bytes(base64.b64decode(data))
        return out


#: Per <img>: decoded size and the variance of its luminance drawn on a canvas
#: (transparent pixels count as white, so an empty transparent figure is blank).
IMAGES_JS = r"""
(async () => {
  const out = [];
  for (const img of Array.from(document.images)) {
    try { await img.decode(); } catch (e) {}
    const w = img.naturalWidth, h = img.naturalHeight;
    let variance = null, error = null;
    if (w > 0 && h > 0) {
      try {
        const c = document.createElement('canvas'); c.width = w; c.height = h;
        const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, w, h).data;
        const step = Math.max(1, Math.floor(d.length / 4 / 250000));
        let n = 0, s = 0, s2 = 0;
        for (let i = 0; i < d.length; i += 4 * step) {
          const a = d[i + 3] / 255;
          const y = (0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]) * a + 255 * (1 - a);
          s += y; s2 += y * y; n++;
        }
        variance = s2 / n - (s / n) * (s / n);
      } catch (e) { error = String(e); }
    }
    out.push({src: img.getAttribute('src').slice(0, 30), width: w, height: h, variance: variance, error: error});
  }
  return out;
})()
"""

#: Tables outside the provenance block, with their rendered size and row count.
TABLES_JS = r"""
Array.from(document.querySelectorAll('table'))
  .filter(t => !t.closest('.iop-provenance'))
  .map(t => { const r = t.getBoundingClientRect();
              return {rows: t.rows.length, width: r.width, height: r.height}; })
"""

#: Every link: its raw href, and for in-page anchors whether the target id exists.
LINKS_JS = r"""
Array.from(document.querySelectorAll('a[href]')).map(a => {
  const href = a.getAttribute('href');
  let anchorOk = null;
  if (href.startsWith('#')) {
    // as browsers do: the raw fragment first, then its percent-decoded form
    const raw = href.slice(1);
    let decoded = raw;
    try { decoded = decodeURIComponent(raw); } catch (e) {}
    anchorOk = raw === '' || [raw, decoded].some(
      id => document.getElementById(id) !== null || document.getElementsByName(id).length > 0);
  }
  return {href: href, text: a.textContent.trim().slice(0, 60), anchorOk: anchorOk};
})
"""

#: Study reports: every published figure (inline SVG) with its rendered size, number of drawn
#: elements and caption; every published table with its caption, rows, size and footnotes.
PUBLISHED_JS = r"""
(() => {
  const figs = Array.from(document.querySelectorAll('.iop-published figure')).map(f => {
    const svg = f.querySelector('svg'); const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const cap = f.querySelector('figcaption');
    return {caption: cap ? cap.textContent.trim() : null, width: r.width, height: r.height,
            marks: svg ? svg.querySelectorAll('path, line, rect, text, use').length : 0};
  });
  const tables = Array.from(document.querySelectorAll('.iop-published[data-iop-kind="table"] table')).map(t => {
    const r = t.getBoundingClientRect();
    const title = t.querySelector('.gt_title, caption');
    const notes = Array.from(t.querySelectorAll('.gt_sourcenote, tfoot td')).map(n => n.textContent.trim());
    return {caption: title ? title.textContent.trim() : null, rows: t.querySelectorAll('tbody tr').length,
            width: r.width, height: r.height, notes: notes,
            monospace: getComputedStyle(t.querySelector('tbody td') || t).fontFamily.toLowerCase().includes('mono')};
  });
  const texts = Array.from(document.querySelectorAll('.iop-published[data-iop-kind="text"]')).map(p => p.textContent.trim());
  const pre = Array.from(document.querySelectorAll('.jp-OutputArea pre')).map(p => p.textContent.trim()).filter(t => t);
  const code = document.querySelectorAll('.jp-CodeCell .jp-InputArea, .jp-CodeCell .highlight').length;
  return {figures: figs, tables: tables, texts: texts, pre: pre, code: code};
})()
"""
