"""The dashboard as a user sees it: `python -m makemore.experiments.screenshots` runs the README's three commands
(a 2x2 grid over three seeds, `sweep=models`, one single run) in a fresh directory, serves `tensorboard --logdir
outputs` there on 127.0.0.1, and takes each view with headless Chromium (Debian's `chromium` package) into
docs/dashboard/; then the models sweep alone, as `python -m makemore.view` makes it a view (sweep_view_*.png).
`--quick` trains every run for 300 steps only (a look, not the docs' pictures); `--workdir DIR` keeps the
directory, and reuses the runs already made in it.

Chromium is driven through its DevTools protocol (a WebSocket, spoken here with the standard library): each view
gets 8 s of real time to load, and HParams' parallel coordinates view, which has no address of its own, is
reached by clicking its tab."""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from makemore.rundir import METRICS, SWEEP_RECORD

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "dashboard"
COMMANDS = (
    ["train.py", "-m", "model.emb=4,10", "model.hidden=50,200", "seeds=3"],
    ["sweep.py", "sweep=models"],
    ["train.py"],
)
# name: (the view's address after the port, the window's size)
VIEWS = {
    "hparams": ("#hparams", "1600,1150"),
    "custom_scalars": ("#custom_scalars&_smoothingWeight=0", "1600,1500"),
    "scalars": ("#scalars&_smoothingWeight=0&tagFilter=loss", "1600,1300"),
    "timeseries": ("?smoothing=0#timeseries", "1600,1200"),
    "text": ("#text&tagFilter=sweep", "1600,1500"),
    "images": ("#images&tagFilter=sweep", "1600,1300"),
}
PARALLEL_COORDINATES = """(() => {  // through every shadow root: TensorBoard's views are web components
  const find = (root) => {
    for (const element of root.querySelectorAll("*")) {
      if (element.shadowRoot) { const found = find(element.shadowRoot); if (found) return found; }
      if (!element.children.length && element.textContent.trim().toLowerCase() === "parallel coordinates view")
        return element;
    }
    return null;
  };
  const tab = find(document);
  if (tab) tab.click();
  return Boolean(tab);
})()"""


class DevTools:
    """Chromium's DevTools protocol over its WebSocket, in the standard library: navigate, click, screenshot."""

    def __init__(self, chromium: str, profile: Path):
        port = free_port()
        self.browser = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pages = f"http://127.0.0.1:{port}/json/list"
        page = poll_json(pages, 60, lambda targets: next((t for t in targets if t["type"] == "page"), None))
        if page is None:
            self.browser.kill()
            raise SystemExit("error: headless Chromium did not start within 60 s")
        address = urllib.parse.urlparse(page["webSocketDebuggerUrl"])
        self.socket = socket.create_connection((address.hostname, address.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.socket.sendall(
            f"GET {address.path} HTTP/1.1\r\nHost: {address.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += self.socket.recv(1)
        if b" 101 " not in answer.split(b"\r\n")[0]:
            raise SystemExit(f"error: Chromium refused its DevTools connection: {answer[:80]!r}")
        self.calls = 0

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result (events that arrive in between are skipped)."""
        self.calls += 1
        message = json.dumps({"id": self.calls, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        size = len(message)
        header = bytes([0x81, 0x80 | (size if size < 126 else 126 if size < 65536 else 127)])
        header += size.to_bytes(2, "big") if 126 <= size < 65536 else size.to_bytes(8, "big") if size >= 65536 else b""
        self.socket.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(message)))
        while True:
            reply = json.loads(self.receive())
            if reply.get("id") == self.calls:
                if "error" in reply:
                    raise SystemExit(f"error: Chromium: {method}: {reply['error']}")
                return reply["result"]

    def receive(self) -> bytes:
        payload = b""
        while True:
            first, second = self.read(2)
            size = second & 0x7F
            if size >= 126:
                size = int.from_bytes(self.read(2 if size == 126 else 8), "big")
            payload += self.read(size)
            if first & 0x80:  # the message's last frame
                return payload

    def read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.socket.recv(count - len(data))
            if not chunk:
                raise SystemExit("error: Chromium closed its DevTools connection")
            data += chunk
        return data

    def screenshot(self, url: str, size: str, out: Path, script: str | None = None) -> None:
        """Open `url` in a window of `size`, let TensorBoard load (and run `script`, a click), save a PNG."""
        width, height = map(int, size.split(","))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)
        time.sleep(8)
        if script:
            if not self.call("Runtime.evaluate", expression=script, returnByValue=True)["result"].get("value"):
                raise SystemExit(f"error: the click on {url} found nothing to click")
            time.sleep(5)
        picture = self.call("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(picture))
        print(f"written: {out}")

    def close(self) -> None:
        self.socket.close()
        self.browser.terminate()
        self.browser.wait(timeout=30)


def make_runs(workdir: Path, quick: bool) -> None:
    """The README's three commands, as a user types them, in `workdir`; skipped where its outputs/ holds runs."""
    if (workdir / "outputs").is_dir() and any((workdir / "outputs").rglob(METRICS)):
        print(f"reusing the runs in {workdir / 'outputs'}")
        return
    for script, *args in COMMANDS:
        extra = ["steps=300"] if quick else []
        print(f"$ python {script} {' '.join(args + extra)}", flush=True)
        command = [sys.executable, str(ROOT / script), *args, *extra, "progress=false"]
        subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(logdir: Path, port: int) -> subprocess.Popen:
    """`tensorboard --logdir <logdir>` on 127.0.0.1, once it answers with every run loaded (links followed)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    walked = os.walk(logdir, followlinks=True)
    expected = len({d for d, _, files in walked if any(f.startswith("events.out.tfevents.") for f in files)})
    if poll_json(f"http://127.0.0.1:{port}/data/runs", 120, lambda runs: len(runs) >= expected or None) is None:
        server.kill()
        raise SystemExit(f"error: TensorBoard did not serve {logdir} on port {port} within 120 s")
    time.sleep(5)  # every plugin's data loaded, not only the run list
    return server


def sweep_view(workdir: Path) -> Path:
    """`python -m makemore.view` on the models sweep, as docs/dashboard.md shows it: the view it prints."""
    [sweep] = [p.parent for p in (workdir / "outputs" / "sweeps").rglob(SWEEP_RECORD)]
    made = subprocess.run(
        [sys.executable, "-m", "makemore.view", str(sweep.relative_to(workdir))],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(shlex.split(made.stdout.splitlines()[-1])[-1])


def shoot(browser: DevTools, logdir: Path, prefix: str, views: list[str], out: Path) -> None:
    """Serve `logdir` and save each of `views` (VIEWS' names) as <prefix><name>.png, then HParams' parallel
    coordinates."""
    port = free_port()
    server = serve(logdir, port)
    try:
        board = f"http://127.0.0.1:{port}/"
        for name in views:
            view, size = VIEWS[name]
            browser.screenshot(board + view, size, out / f"{prefix}{name}.png")
        view, size = VIEWS["hparams"]  # then a click on its parallel coordinates tab
        browser.screenshot(board + view, size, out / f"{prefix}parallel_coordinates.png", PARALLEL_COORDINATES)
    finally:
        server.terminate()
        server.wait(timeout=30)


def poll_json(url: str, seconds: float, accept):
    """GET `url` until `accept(its JSON)` gives something other than None, and return that; None when it never
    does within `seconds` (the server not up yet, or not ready)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                found = accept(json.load(answer))
            if found is not None:
                return found
        except OSError:
            pass
        time.sleep(0.5)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 steps a run: a look, not the docs' pictures")
    parser.add_argument("--workdir", type=Path, help="where the runs are made (kept), or reused when there")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the screenshots go (default docs/dashboard)")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: no chromium on PATH; install it: apt-get update && apt-get install -y chromium", file=sys.stderr)
        return 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="makemore-dashboard-"))
    workdir.mkdir(parents=True, exist_ok=True)
    make_runs(workdir, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        browser = DevTools(chromium, Path(scratch))
        try:
            shoot(browser, workdir / "outputs", "", list(VIEWS), args.out)
            shoot(browser, sweep_view(workdir), "sweep_view_", ["hparams"], args.out)
        finally:
            browser.close()
    print(f"the runs: {workdir / 'outputs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
