"""Helpers of the browser tests: a headless Chromium (system browser, software WebGL2) driven by
Playwright, a viewer server on a free port, and the Python reference render."""

from __future__ import annotations

import base64
import os
import shutil
import threading
from contextlib import contextmanager

import numpy as np
import pytest

#: Chromium flags: headless, software WebGL2 (SwiftShader through ANGLE), nothing from the network
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-default-apps", "--disable-extensions", "--mute-audio",
]


def chromium_path() -> str:
    """The system Chromium, or skip (fail on CI, where set-up installs it) saying why."""
    exe = os.environ.get("HRAVATAR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    why = None
    if not exe:
        why = "no system chromium (Debian: apt-get install chromium; scripts/setup_env.sh does it as root)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "the playwright Python package is missing (pip install playwright; scripts/setup_env.sh does it)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run on CI: {why}")
        pytest.skip(why)
    return exe  # type: ignore[return-value]


@contextmanager
def browser(extra_args: list[str] | None = None):
    """A launched headless Chromium (Playwright ``Browser``); closed afterwards."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with sync_playwright() as pw:
        br = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS + list(extra_args or []))
        try:
            yield br
        finally:
            br.close()


@contextmanager
def serve_bundle(bundle):
    """The WebGL viewer and ``bundle`` on 127.0.0.1 (a free port); yields the URL."""
    from hravatar.apps.view import WebApp, make_server

    with serving(make_server(None, 0, WebApp(bundle))) as url:
        yield url


@contextmanager
def serving(srv):
    """Runs the HTTP server ``srv`` (bound to 127.0.0.1) in a thread; yields its URL, shuts it down."""
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


class Page:
    """A viewer page with its console errors collected."""

    def __init__(self, br, url: str) -> None:
        self.page = br.new_page()
        self.console_errors: list[str] = []
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.goto(url)
        self.ready = bool(self.page.evaluate("window.hravatar.ready"))

    def render(self, params, cam, opts: dict | None = None) -> np.ndarray:
        """The page's frame (uint8 ``[H,W,3]``) for ``FrameParams`` and a ``Camera``."""
        js = {"expression": params.expression[0].tolist(), "pose": params.pose[0].tolist(),
              "translation": params.translation[0].tolist()}
        jc = {"viewmat": cam.viewmat.flatten().tolist(), "K": cam.K.flatten().tolist(), "width": cam.width,
              "height": cam.height}
        # one evaluate (atomic in the page): the page's own redraw loop cannot run in between
        js_fn = "([p, c, o]) => { const h = window.hravatar; h.render(p, c, o); return h.pixelsBase64(); }"
        b = self.page.evaluate(js_fn, [js, jc, opts or {}])
        return np.frombuffer(base64.b64decode(b), np.uint8).reshape(cam.height, cam.width, 3)

    def read(self, h: int, w: int) -> np.ndarray:
        """The canvas as it is (what the page's own redraw loop drew last)."""
        b = base64.b64decode(self.page.evaluate("window.hravatar.pixelsBase64()"))
        return np.frombuffer(b, np.uint8).reshape(h, w, 3)

    def draw(self, h: int, w: int) -> np.ndarray:
        """Draw the page's current state (its controls) now and read the frame back (atomically)."""
        b = base64.b64decode(self.page.evaluate("(() => { window.hravatar.drawNow(); "
                                                "return window.hravatar.pixelsBase64(); })()"))
        return np.frombuffer(b, np.uint8).reshape(h, w, 3)


def python_render(la, params, cam, lighting=None, f0_scale: float = 1.0, background=None) -> np.ndarray:
    """The Python reference frame (uint8 ``[H,W,3]``, black background) through the public API.

    The one place the browser tests call the Python renderer (adapt here when the API moves)."""
    from hravatar.apps.common import to_uint8

    mats = None
    if f0_scale != 1.0:
        mats = {"f0": (la.gaussians.f0 * f0_scale).clamp(0, 1)}
    return to_uint8(la.render(params, cam, lighting=lighting, materials=mats, background=background).image[0])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))
