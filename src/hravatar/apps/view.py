"""``hravatar view``: an interactive viewer in the browser, rendered by our own backend.

A small standard-library HTTP server on 127.0.0.1: ``/`` serves a page with an orbit camera (drag),
sliders for the strongest expressions and the jaw, head yaw/pitch, environment choice and rotation,
F0 / roughness, and a frame scrubber over the subject's sequence; ``/render?...`` returns a PNG.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
import tyro

from hravatar.apps.common import apply_assignments, load_environment, to_uint8
from hravatar.apps.render import orbit_viewmats
from hravatar.avatar import Avatar, load_avatar
from hravatar.errors import HRAvatarError
from hravatar.progress import log


@dataclass
class ViewConfig:
    """Open an interactive viewer of the avatar in the browser (http://127.0.0.1:PORT)."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    envmap: list[Path] = field(default_factory=list)
    """environment maps offered besides the learned light (.hdr/.exr/.safetensors)"""
    port: int = 8765
    """port on 127.0.0.1 (0 = any free port)"""
    size: int = 256
    """render size (longer side, pixels): smaller is faster on a CPU"""
    sliders: int = 12
    """number of expression sliders (the expressions the subject uses most)"""
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


def make_server(viewer: Viewer, port: int) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:``port`` (0 = free port) serving ``viewer``; call ``serve_forever``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:  # quiet
            log.debug("viewer: " + fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            url = urlparse(self.path)
            try:
                if url.path == "/":
                    self._send(200, viewer.page(), "text/html; charset=utf-8")
                elif url.path == "/render":
                    q = {k: float(v[-1]) for k, v in parse_qs(url.query).items() if _is_number(v[-1])}
                    self._send(200, viewer.render_png(q), "image/png")
                else:
                    self._send(404, b"not found", "text/plain")
            except Exception as e:  # noqa: BLE001 - report to the page, keep serving
                self._send(500, f"render failed: {e}".encode(), "text/plain")

    try:
        return ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as e:
        msg = f"port {port} on 127.0.0.1 is not available ({e.strerror}); pass --port 0 or another"
        raise HRAvatarError(msg) from None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def view_cmd(cfg: ViewConfig) -> int:
    """Serve the viewer until Ctrl-C."""
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    viewer = Viewer(la, cfg.envmap, cfg.size, cfg.sliders)
    server = make_server(viewer, cfg.port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"viewer at {url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
