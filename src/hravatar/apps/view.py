"""``hravatar view``: the avatar in the browser.

By default a small standard-library HTTP server on 127.0.0.1 serves the WebGL2 viewer
(``hravatar/web``: our own renderer, deformation and shading on the GPU) and the avatar's web bundle
(:mod:`hravatar.apps.web_bundle`, built in memory), plus, for live webcam driving, MediaPipe's face
landmarker (wasm + JS from the npm package installed at set-up time, and ``face_landmarker.task``
from the asset cache): nothing is fetched from the internet at run time.

``--server-render`` keeps the older page for browsers without WebGL2: ``/`` has the same controls
and ``/render?...`` returns a PNG rendered by our own backend (one request at a time).
"""

from __future__ import annotations

import io
import json
import math
import mimetypes
import sys
import threading
import webbrowser
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
import torch
import tyro

from hravatar.apps.common import apply_assignments, load_environment, to_uint8
from hravatar.apps.render import orbit_viewmats
from hravatar.avatar import Avatar, load_avatar
from hravatar.errors import HRAvatarError
from hravatar.progress import log

#: the npm package (pinned) whose wasm + JS run MediaPipe's face landmarker in the page
MEDIAPIPE_NPM = "@mediapipe/tasks-vision@0.10.21"


@dataclass
class ViewConfig:
    """Open the avatar in the browser (http://127.0.0.1:PORT): GPU rendering, sliders, relighting, webcam."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    envmap: list[Path] = field(default_factory=list)
    """environment maps offered besides the learned light (.hdr/.exr/.safetensors), prefiltered here"""
    port: int = 8765
    """port on 127.0.0.1 (0 = any free port)"""
    server_render: bool = False
    """fallback for browsers without WebGL2: render every frame on this machine (CPU/GPU backend)"""
    open: bool = True
    """open the printed URL in the default browser"""
    size: int = 256
    """--server-render only: render size (longer side, pixels): smaller is faster on a CPU"""
    sliders: int = 12
    """--server-render only: number of expression sliders (the expressions the subject uses most)"""
    max_frames: int = 0
    """frames of the tracked sequence offered for playback (0: all)"""
    subject: Path | None = None
    """the subject folder, if it moved since training"""
    device: str = "auto"
    """auto, cpu or cuda"""


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>hravatar viewer</title>
<style>body{font-family:sans-serif;margin:12px;display:flex;gap:16px}#c{display:flex;flex-direction:column;gap:4px;
min-width:300px}label{display:flex;justify-content:space-between;gap:8px;font-size:13px}img{border:1px solid #ccc;
cursor:grab;image-rendering:auto}</style></head><body><div><img id="im" width="%(size)d" height="%(size)d">
<div id="st"></div></div><div id="c"></div><script>
const cfg=%(cfg)s;const c=document.getElementById('c');const st={};
function add(name,min,max,step,val){const l=document.createElement('label');l.textContent=name;
const i=document.createElement('input');i.type='range';i.min=min;i.max=max;i.step=step;i.value=val;st[name]=val;
i.oninput=()=>{st[name]=i.value;req()};l.appendChild(i);c.appendChild(l)}
const sel=document.createElement('select');cfg.envs.forEach((e,k)=>{const o=document.createElement('option');
o.value=k;o.textContent=e;sel.appendChild(o)});sel.onchange=()=>{st.env=sel.value;req()};st.env=0;c.appendChild(sel);
add('frame',-1,cfg.frames-1,1,-1);add('azimuth',-180,180,1,0);add('elevation',-45,45,1,0);
add('light_rotation',0,360,5,0);add('f0_scale',0.25,6,0.05,1);add('roughness_scale',0.3,1.5,0.05,1);
add('jaw',0,0.5,0.01,0);add('yaw',-0.8,0.8,0.01,0);add('pitch',-0.5,0.5,0.01,0);
cfg.exprs.forEach(e=>add(e,-0.5,1.5,0.01,0));let busy=false,again=false;
function req(){if(busy){again=true;return}busy=true;const t0=performance.now();
const q=new URLSearchParams(st).toString();const im=document.getElementById('im');
im.onload=()=>{busy=false;document.getElementById('st').textContent=Math.round(performance.now()-t0)+' ms';
if(again){again=false;req()}};im.onerror=im.onload;im.src='/render?'+q}
let drag=null;const im=document.getElementById('im');im.onmousedown=e=>{drag=[e.clientX,e.clientY]};
window.onmouseup=()=>{drag=null};window.onmousemove=e=>{if(!drag)return;st.azimuth=+st.azimuth+(e.clientX-drag[0])*0.5;
st.elevation=Math.max(-45,Math.min(45,+st.elevation+(e.clientY-drag[1])*0.3));drag=[e.clientX,e.clientY];req()};
req();</script></body></html>"""


class Viewer:
    """Renders frames for the page; thread-safe (one render at a time)."""

    def __init__(self, la: Avatar, envmaps: list[Path], size: int, sliders: int) -> None:
        self.la, self.size = la, size
        self.lock = threading.Lock()
        self.envs: list[tuple[str, object | None]] = [("learned light", None)]
        for p in envmaps:
            self.envs.append((Path(p).name, load_environment(p, la)))
        self.frames = la.subject("all") if la.has_subject() else None
        self.exprs = self._top_expressions(sliders)
        self.center = la.head_center()

    def _top_expressions(self, k: int) -> list[str]:
        names = self.la.expr_names
        if self.frames is None or not len(self.frames):
            return names[:k]
        import numpy as np

        n = len(self.frames)
        idx = np.linspace(0, n - 1, min(n, 32)).round().astype(int)
        ex = torch.stack([self.frames[int(i)].expression for i in idx])
        order = ex[:, : len(names)].abs().mean(0).argsort(descending=True)
        jaw_like = {"jawOpen", "jawLeft", "jawRight", "jawForward"}
        return [names[int(i)] for i in order if names[int(i)] not in jaw_like][:k]

    def page(self) -> bytes:
        cfg = {"envs": [e for e, _ in self.envs], "exprs": self.exprs,
               "frames": len(self.frames) if self.frames is not None else 0}
        return (PAGE % {"size": self.size, "cfg": json.dumps(cfg)}).encode()

    @torch.no_grad()
    def render_png(self, q: dict[str, float]) -> bytes:
        import cv2


        la = self.la
        with self.lock:
            frame = int(q.get("frame", -1))
            if self.frames is not None and 0 <= frame < len(self.frames):
                fr = la.frame(self.frames, frame)
                p = la.frame_params(fr)
            else:
                p = la.reference.params
            values = {k: float(q[k]) for k in self.exprs if k in q and float(q[k]) != 0.0}
            for k in ("yaw", "pitch"):
                if float(q.get(k, 0)):
                    values[k] = float(q[k])
            p = apply_assignments(la, p, values)
            if float(q.get("jaw", 0)):
                p.pose[0, 2, 0] = p.pose[0, 2, 0] + float(q["jaw"])
            cam = la.camera(self.size)
            vm = orbit_viewmats(cam.viewmat, self.center, np.array([float(q.get("azimuth", 0))]),
                                float(q.get("elevation", 0)))[0]
            cam = cam.with_viewmat(vm)
            env = self.envs[min(int(q.get("env", 0)), len(self.envs) - 1)][1]
            if env is not None:
                env.rotation = float(q.get("light_rotation", 0))
            mats = None
            if la.mode == "pbr" and (float(q.get("f0_scale", 1)) != 1 or float(q.get("roughness_scale", 1)) != 1):
                mats = {"f0": (la.gaussians.f0 * float(q.get("f0_scale", 1))).clamp(0, 1),
                        "roughness": (la.gaussians.roughness * float(q.get("roughness_scale", 1))).clamp(0.02, 1)}
            img = to_uint8(la.render(p, cam, lighting=env, materials=mats).image[0])
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
        return io.BytesIO(buf.tobytes()).getvalue()




# ---- query values of /render (server-render page) ----------------------------------------------------
#: allowed range of each numeric query parameter (anything else: HTTP 400)
_QUERY_RANGES: dict[str, tuple[float, float]] = {
    "frame": (-1, 10_000_000), "env": (0, 1000), "azimuth": (-3600, 3600), "elevation": (-90, 90),
    "light_rotation": (-3600, 3600), "f0_scale": (0, 100), "roughness_scale": (0, 100),
    "jaw": (-math.pi, math.pi), "yaw": (-math.pi, math.pi), "pitch": (-math.pi, math.pi), "roll": (-math.pi, math.pi),
}
_EXPRESSION_RANGE = (-10.0, 10.0)


class BadQuery(ValueError):
    """A query value the viewer refuses (answered with HTTP 400)."""


def parse_render_query(query: str) -> dict[str, float]:
    """``a=1&b=2`` -> ``{name: value}``; every value must be a finite number within its range
    (:data:`_QUERY_RANGES`, expressions within ``[-10, 10]``), else :class:`BadQuery`."""
    out: dict[str, float] = {}
    for k, vals in parse_qs(query, keep_blank_values=True).items():
        v = vals[-1].strip()
        if len(v) > 64:
            raise BadQuery(f"{k}: value too long ({len(v)} characters)")
        try:
            x = float(v)
        except ValueError:
            raise BadQuery(f"{k}: {v[:20]!r} is not a number") from None
        lo, hi = _QUERY_RANGES.get(k, _EXPRESSION_RANGE)
        if not math.isfinite(x) or not lo <= x <= hi:
            raise BadQuery(f"{k}: {v[:20]} is outside [{lo:g}, {hi:g}]")
        out[k] = x
    return out


# ---- files the WebGL page needs -----------------------------------------------------------------------
def mediapipe_dir() -> Path:
    """Where set-up installs the npm package of MediaPipe's web tasks (may not exist)."""
    from hravatar.assets import cache_dir

    return cache_dir() / "npm" / "node_modules" / "@mediapipe" / "tasks-vision"


def _content_type(name: str) -> str:
    ext = Path(name).suffix.lower()
    known = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
             ".json": "application/json", ".html": "text/html; charset=utf-8", ".css": "text/css",
             ".bin": "application/octet-stream", ".task": "application/octet-stream", ".png": "image/png"}
    return known.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _safe_file(root: Path, rel: str) -> Path | None:
    """``root/rel`` if it is a file inside ``root`` (no ``..`` escapes), else ``None``."""
    try:
        p = (root / rel).resolve()
        if p.is_file() and p.is_relative_to(root.resolve()):
            return p
    except (OSError, ValueError):
        pass
    return None


class WebApp:
    """What the WebGL viewer serves: the app files, the bundle (bytes) and the MediaPipe files."""

    def __init__(self, bundle: Any) -> None:
        from hravatar.apps.web_bundle import app_files

        self.bundle = bundle
        self.app = app_files()

    def get(self, path: str) -> tuple[bytes, str] | None:
        name = unquote(path).lstrip("/") or "index.html"
        if name in self.app:
            return self.app[name].read_bytes(), _content_type(name)
        data = self.bundle.file(name)
        if data is not None:
            return data, _content_type(name)
        if name.startswith("mediapipe/"):
            p = _safe_file(mediapipe_dir(), name[len("mediapipe/"):])
            return (p.read_bytes(), _content_type(p.name)) if p else None
        if name == "models/face_landmarker.task":
            from hravatar.assets import asset_path

            p = asset_path("face_landmarker.task", required=False)
            return (p.read_bytes(), _content_type(p.name)) if p else None
        return None


def _quiet_handle_error(self: ThreadingHTTPServer, request: Any, client_address: Any) -> None:
    """A client that goes away mid-response is normal for a viewer: no traceback for that."""
    exc = sys.exc_info()[1]
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
        return
    ThreadingHTTPServer.handle_error(self, request, client_address)


def make_server(viewer: Viewer | None, port: int, webapp: WebApp | None = None) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:``port`` (0 = free port); call ``serve_forever``.

    ``webapp``: serve the WebGL viewer and bundle; ``viewer``: the server-rendered page (``/`` and
    ``/render``). Give one of them."""
    if not 0 <= int(port) <= 65535:
        raise HRAvatarError(f"--port {port}: not a TCP port; use 1-65535 (or 0 for any free port)")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:  # quiet
            log.debug("viewer: " + fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close_connection = True  # the client went away: nothing to report

        def do_HEAD(self) -> None:  # noqa: N802 - http.server API
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            url = urlparse(self.path)
            try:
                if webapp is not None:
                    got = webapp.get(url.path)
                    if got is None:
                        self._send(404, b"not found", "text/plain")
                    else:
                        self._send(200, got[0], got[1])
                elif url.path == "/":
                    self._send(200, viewer.page(), "text/html; charset=utf-8")  # type: ignore[union-attr]
                elif url.path == "/render":
                    try:
                        q = parse_render_query(url.query)
                    except BadQuery as e:
                        self._send(400, f"bad query: {e}".encode(), "text/plain")
                        return
                    self._send(200, viewer.render_png(q), "image/png")  # type: ignore[union-attr]
                else:
                    self._send(404, b"not found", "text/plain")
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close_connection = True
            except Exception as e:  # noqa: BLE001 - report to the page, keep serving
                log.debug("viewer: request %s failed: %s", self.path, e)
                self._send(500, f"render failed: {type(e).__name__}".encode(), "text/plain")

    try:
        server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    except OverflowError:
        raise HRAvatarError(f"--port {port}: not a TCP port; use 1-65535 (or 0 for any free port)") from None
    except OSError as e:
        msg = f"--port {port}: port {port} on 127.0.0.1 is not available ({e.strerror}); pass --port 0 or another"
        raise HRAvatarError(msg) from None
    server.daemon_threads = True
    server.handle_error = _quiet_handle_error.__get__(server)  # type: ignore[method-assign]
    return server


def view_cmd(cfg: ViewConfig) -> int:
    """Serve the viewer until Ctrl-C (exit status 130 then, as for any interrupted command)."""
    if not 0 <= cfg.port <= 65535:
        raise HRAvatarError(f"--port {cfg.port}: not a TCP port; use 1-65535 (or 0 for any free port)")
    for p in cfg.envmap:
        if not Path(p).is_file():
            raise HRAvatarError(f"--envmap {p}: file not found")
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    if cfg.server_render:
        server = make_server(Viewer(la, cfg.envmap, cfg.size, cfg.sliders), cfg.port)
    else:
        from hravatar.apps.web_bundle import build_bundle

        envs = [(Path(p).name, load_environment(p, la)) for p in cfg.envmap]
        bundle = build_bundle(la, envs, max_frames=cfg.max_frames)
        log.info("web bundle: %.1f MB in memory", bundle.size_bytes / 1e6)
        if not mediapipe_dir().is_dir():
            log.warning("MediaPipe's web files are not installed (%s): the webcam toggle will not work; "
                        "run scripts/setup_env.sh", mediapipe_dir())
        server = make_server(None, cfg.port, WebApp(bundle))
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"viewer at {url} (Ctrl-C to stop)", flush=True)
    if cfg.open:
        try:
            webbrowser.open(url)
        except Exception:  # noqa: BLE001 - no browser here: the printed URL is enough
            pass
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("viewer stopped", file=sys.stderr)
        return 130
    finally:
        server.server_close()
    return 0
