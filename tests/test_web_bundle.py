"""The web bundle (``hravatar export --web``) and the viewer's server, without a browser: the bundle's
arrays reproduce the avatar's deformation, the export is atomic and checked, and the server copes
with bad ports, bad query values, clients that go away, and Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.tiny_subject import make_tiny_subject, train_tiny_avatar
from hravatar.apps.view import BadQuery, make_server, parse_render_query
from hravatar.apps.web_bundle import WebBundle
from hravatar.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tiny_avatar(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("webb")
    subj = make_tiny_subject(root / "subj", size=32, frames=6)
    av = root / "av"
    train_tiny_avatar(subj, av, 4, warmup_steps=1)
    torch.set_num_threads(n)
    return av, root


def _read(bundle_dir: Path, header: dict, name: str) -> np.ndarray:
    a = header["arrays"][name]
    dt = {"f32": "<f4", "f16": "<f2", "u32": "<u4", "i8": "i1"}[a["dtype"]]
    n = int(np.prod(a["shape"]))
    raw = (bundle_dir / a["file"]).read_bytes()
    return np.frombuffer(raw, dt, count=n, offset=a["offset"]).reshape(a["shape"]).astype(np.float64)


def _rodrigues(aa: np.ndarray) -> np.ndarray:
    from hravatar.geometry import axis_angle_to_matrix

    return axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float64)).numpy()


def test_export_web_bundle_reproduces_deformation(tiny_avatar):
    """Decode the bundle like the page does (numpy here) and compare with GaussianHead.deform."""
    from hravatar.avatar import load_avatar
    from hravatar.head.lbs import kinematic_chain

    av, root = tiny_avatar
    out = root / "web"
    assert run(["export", str(av), "--web", str(out)]) == 0
    for f in ("avatar.json", "avatar.bin", "light_0.bin", "lut.bin", "index.html", "app.js", "renderer.js"):
        assert (out / f).is_file(), f
    h = json.loads((out / "avatar.json").read_text())
    la = load_avatar(av, "cpu")
    N, E, P, K4 = h["num_points"], h["num_expr"], h["num_pose_features"], h["basis_texels"]
    assert N == la.gaussians.num_points and E == la.gaussians.num_expr and K4 == math.ceil((E + P) / 4)
    assert h["sequence"]["frames"] == 6 and h["expr_names"] == la.expr_names
    mo = _read(out, h, "means_opacity").reshape(-1, 4)[:N]
    assert h["basis_dtype"] == "i8"
    basis = _read(out, h, "basis").reshape(-1, 4)[: N * 3 * K4].reshape(N, 3, K4 * 4) / 127.0
    basis *= _read(out, h, "basis_scale").reshape(-1, 4)[:N, :3, None]
    w = np.concatenate([_read(out, h, "weights").reshape(-1, 4)[:N],
                        _read(out, h, "extra").reshape(-1, 4)[:N, 1:2]], 1)
    # a strong expression and pose
    g = torch.Generator().manual_seed(0)
    p = la.reference.params.clone()
    p.expression = p.expression + torch.randn(p.expression.shape, generator=g)
    p.pose = p.pose + 0.2 * torch.randn(p.pose.shape, generator=g)
    pose = p.pose[0].double().numpy()
    rot = _rodrigues(pose)
    coef = np.zeros(4 * K4)
    coef[:E] = p.expression[0].double().numpy()
    coef[E:E + P] = (rot[1:] - np.eye(3)).reshape(-1)
    xe = mo[:, :3] + basis @ coef
    A = kinematic_chain(torch.as_tensor(rot)[None], torch.tensor(h["joints"], dtype=torch.float64)[None],
                        torch.tensor(h["parents"]))[0, :, :3].numpy()
    T = np.einsum("nj,jxy->nxy", w, A) + (1 - w.sum(1))[:, None, None] * np.eye(3, 4)
    posed = np.einsum("nxy,ny->nx", T[..., :3], xe) + T[..., 3] + p.translation[0].double().numpy()
    ref = la.gaussians.deform(p.shape, p.expression, p.pose, p.translation).means[0].double().numpy()
    err = np.abs(posed - ref).max()
    scale = np.abs(ref).max()
    assert err < 2e-3 * scale, f"bundle deformation off by {err:.2e} m"
    np.testing.assert_allclose(mo[:, 3], la.gaussians.opacities.numpy(), atol=1e-6)
    # the driver mapping is hravatar.avatar.drive's (the one `hravatar reenact` uses) with this avatar's values
    from hravatar.avatar.drive import avatar_base, live_mapping

    d = h["driver"]
    assert d == json.loads(json.dumps(live_mapping(avatar_base(la))))
    assert d["jaw"]["source"] == "jawOpen" and d["jaw"]["rad_per_unit"] > 0 and "jawOpen" in d["zeroed"]
    assert d["avatar"]["expr_names"] == list(la.expr_names) and len(d["avatar"]["neutral"]) == len(la.expr_names)


def test_export_web_refuses_a_foreign_folder(tiny_avatar, capsys):
    av, root = tiny_avatar
    other = root / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert run(["export", str(av), "--web", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --web") and "not empty" in err[0]
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("port", ["99999", "-5", "70000"])
def test_view_bad_port_one_error_line(tiny_avatar, capsys, port):
    av, _ = tiny_avatar
    assert run(["view", str(av), "--port", port, "--no-open"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --port {port}:"), err


@pytest.mark.parametrize("q", ["jaw=1e308", "jaw=" + "9" * 5000, "jaw=nan", "azimuth=inf", "frame=" + "1" * 5000,
                               "exp_0=-1e20", "jaw=abc"])
def test_bad_query_values_rejected(q):
    with pytest.raises(BadQuery):
        parse_render_query(q)


def test_good_query_values_parse():
    assert parse_render_query("jaw=0.2&azimuth=-30&frame=3&exp_1=0.5") == {"jaw": 0.2, "azimuth": -30.0,
                                                                          "frame": 3.0, "exp_1": 0.5}


class _StubViewer:
    """Stands in for the server-render Viewer (no rendering needed to test the HTTP layer)."""

    def page(self) -> bytes:
        return b"<html></html>"

    def render_png(self, q: dict[str, float]) -> bytes:
        return b"PNG" + json.dumps(q).encode()


def test_render_endpoint_answers_400_not_500():
    srv = make_server(_StubViewer(), 0)  # type: ignore[arg-type]
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        for q in ("jaw=1e308", "jaw=" + "7" * 5000, "jaw=nan"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{base}/render?{q}", timeout=10)
            assert e.value.code == 400
        with urllib.request.urlopen(f"{base}/render?jaw=0.1", timeout=10) as r:
            assert r.status == 200 and r.read().startswith(b"PNG")
    finally:
        srv.shutdown()
        srv.server_close()


def test_client_disconnect_mid_response_is_quiet(capfd):
    from hravatar.apps.view import WebApp

    big = WebBundle({"arrays": {}}, {"big.bin": os.urandom(32 << 20)})
    app = WebApp(big)
    srv = make_server(None, 0, app)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", srv.server_address[1]))
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # reset mid-response
        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.server_address[1]}/avatar.json", timeout=10) as r:
            assert r.status == 200  # still serving
    finally:
        srv.shutdown()
        srv.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err


def test_view_missing_envmap_one_error_line(tiny_avatar, capsys):
    av, root = tiny_avatar
    assert run(["view", str(av), "--envmap", str(root / "nope.hdr"), "--no-open"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --envmap") and "not found" in err[0], err


@pytest.mark.parametrize("server_render", [False, True])
def test_view_serves_page_and_exits_130_on_sigint(tiny_avatar, server_render):
    av, _ = tiny_avatar
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hravatar.cli", "view", str(av), "--port", "0", "--no-open", "--device", "cpu"]
    # a test run started in the background of a non-interactive shell inherits SIGINT ignored, and
    # Python keeps an ignored SIGINT ignored: give the command the default disposition a terminal has
    proc = subprocess.Popen(cmd + (["--server-render", "--size", "32"] if server_render else []),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("viewer at http://127.0.0.1:"), line + proc.stderr.read()  # type: ignore[union-attr]
        url = line.split()[2]
        if server_render:  # the fallback page: frames rendered here
            with urllib.request.urlopen(url, timeout=20) as r:
                assert b"/render?" in r.read()
            with urllib.request.urlopen(url + "render?azimuth=20&jaw=0.1", timeout=60) as r:
                assert r.headers["Content-Type"] == "image/png" and r.read().startswith(b"\x89PNG")
        else:
            with urllib.request.urlopen(url, timeout=20) as r:
                assert b"app.js" in r.read()
            with urllib.request.urlopen(url + "avatar.json", timeout=20) as r:
                assert json.loads(r.read())["format"] == "hravatar-web"
            with urllib.request.urlopen(url + "renderer.js", timeout=20) as r:
                assert r.headers["Content-Type"].startswith("text/javascript")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert rc == 130 and "Traceback" not in err, err


def test_background_equirect_is_reduced_and_keeps_the_light_level():
    """The page's HDR backdrop: a large map is reduced by the solid-angle weighted pyramid to at most
    BACKGROUND_MAX_HEIGHT rows (same mean radiance over the sphere), a small one kept as it is; float16."""
    from types import SimpleNamespace

    from hravatar.apps.web_bundle import BACKGROUND_MAX_HEIGHT, background_arrays, background_equirect
    from hravatar.shading.cubemap import equirect_solid_angles

    g = torch.Generator().manual_seed(0)
    big = torch.rand(4 * BACKGROUND_MAX_HEIGHT // 2, 4 * BACKGROUND_MAX_HEIGHT, 3, generator=g) ** 4 * 50
    big[:40] += 1000.0  # a bright sky near the top
    eq = background_equirect(SimpleNamespace(equirect=big))
    assert tuple(eq.shape) == (BACKGROUND_MAX_HEIGHT, 2 * BACKGROUND_MAX_HEIGHT, 3)

    def mean(m):
        w = equirect_solid_angles(m.shape[0], m.shape[1], dtype=torch.float64)
        return float((m.double() * w[..., None]).sum() / (w.sum() * m.shape[1]))

    assert abs(mean(eq) / mean(big) - 1) < 1e-3
    small = torch.rand(16, 32, 3, generator=g) * 1e5  # above float16's range: clamped
    eq = background_equirect(SimpleNamespace(equirect=small))
    assert eq.shape == small.shape and float(eq.max()) <= 65504
    np.testing.assert_allclose(eq.numpy(), small.clamp(max=65000).half().float().numpy())
    desc, blob = background_arrays(SimpleNamespace(equirect=small))
    assert desc == {"width": 32, "height": 16, "dtype": "f16"} and len(blob) == 16 * 32 * 3 * 2
    assert background_equirect(SimpleNamespace(equirect=None)) is None
