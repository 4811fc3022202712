"""A real headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
JSON messages ended by NUL on file descriptors 3 and 4), so a test can ask what the page drew:
element boxes, computed colours, and (through a script run before the page's own) every call the
page made on a canvas. No websocket library or driver is needed; only Debian's `chromium`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Installed before the page's scripts: records on each canvas (`canvas.__drawn`, since its last
# clearRect) every fillRect/fillText/strokeRect with the state that decides what shows (colour,
# alpha, alignment, the text's measured width).
CANVAS_RECORDER = """
for (const name of ["fillRect", "fillText", "strokeRect", "clearRect"]) {
  const original = CanvasRenderingContext2D.prototype[name];
  CanvasRenderingContext2D.prototype[name] = function (...args) {
    const canvas = this.canvas;
    if (name === "clearRect" || !canvas.__drawn) canvas.__drawn = [];  // a redraw starts over
    if (name !== "clearRect") canvas.__drawn.push({
      op: name, args, fill: String(this.fillStyle), alpha: this.globalAlpha, align: this.textAlign,
      width: name === "fillText" ? this.measureText(args[0]).width : null, canvasWidth: canvas.width });
    return original.apply(this, args);
  };
}
"""


class Chromium:
    def __init__(self, binary: str, width: int = 1400, height: int = 1000) -> None:
        self._profile = tempfile.TemporaryDirectory()
        to_browser, self._to_browser = os.pipe()  # chromium reads commands on its fd 3
        self._from_browser, from_browser = os.pipe()  # and writes replies on its fd 4

        def wire_fds() -> None:  # in the child, before exec: the pipe ends on 3 and 4 (inheritable)
            a, b = os.dup(to_browser), os.dup(from_browser)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--window-size={width},{height}", f"--user-data-dir={self._profile.name}", "about:blank"],
            preexec_fn=wire_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.session = b"", 0, ""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # replies and events interleave: events (no id) are dropped
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, address: str, before_page: str = CANVAS_RECORDER) -> None:
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": before_page})
        self.send("Page.navigate", {"url": address})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout_s: float = 60.0) -> Any:
        """Poll `expression` until it is truthy in JavaScript terms (the page polls its API on its own timer)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is between documents, or its elements are not there yet
                value = None
            if value or isinstance(value, dict):  # a DOM element comes back as {}
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout_s} s: {expression}")
            time.sleep(0.1)

    def close(self) -> None:
        try:
            self.session = ""
            self.send("Browser.close")
        except (OSError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()


@contextmanager
def chromium(binary: str, width: int = 1400, height: int = 1000) -> Iterator[Chromium]:
    browser = Chromium(binary, width, height)
    try:
        yield browser
    finally:
        browser.close()
