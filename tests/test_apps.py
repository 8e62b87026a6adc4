"""Every avatar command on a tiny trained avatar: outputs exist, decode and respond to their options."""

from __future__ import annotations

import threading
import urllib.request

import cv2
import numpy as np
import pytest
import torch

from helpers.tiny_subject import make_tiny_subject, train_tiny_avatar
from hravatar.cli import run
from hravatar.io.envmap import write_envmap
from hravatar.io.ply import read_gaussian_ply
from hravatar.io.video import read_video

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("apps")
    subj = make_tiny_subject(root / "subj", size=48, frames=10)
    av = root / "av"
    train_tiny_avatar(subj, av, 25, warmup_steps=2)
    h, w = 16, 32
    yy, xx = np.mgrid[0:h, 0:w]
    env = np.zeros((h, w, 3), np.float32) + 0.2
    env[(np.abs(yy - 5) < 3) & (np.abs(xx - 8) < 3)] = [40.0, 30.0, 20.0]  # one bright light
    hdr = write_envmap(root / "light.hdr", env)
    return subj, av, hdr, root


def _frames(path):
    frames, info = read_video(path, show_progress=False)
    return np.stack(frames).astype(np.float32) / 255.0, info


def test_render_self_reenactment(tiny):
    subj, av, _, root = tiny
    out = root / "render.mp4"
    assert run(["render", str(av), "-o", str(out), "--side-by-side", "--fps", "10"]) == 0
    frames, info = _frames(out)
    assert len(frames) == 2 and info.fps == 10  # 15% of 10 frames are the test split
    assert frames.shape[2] > frames.shape[1]  # ground truth | render
    assert frames[:, :, frames.shape[2] // 2:].mean() > 0.02  # the render is not black


def test_orbit_changes_view(tiny):
    _, av, _, root = tiny
    out = root / "orbit.mp4"
    assert run(["orbit", str(av), "--output", str(out), "--frames", "4", "--sweep", "90", "--size", "64"]) == 0
    frames, _ = _frames(out)
    assert frames.shape[0] == 4 and max(frames.shape[1:3]) == 64
    assert np.abs(frames[0] - frames[-1]).mean() > 0.005


def test_relight_rotating_light(tiny):
    _, av, hdr, root = tiny
    out = root / "relight.mp4"
    assert run(["relight", str(av), "--envmap", str(hdr), "--rotate", "--frames", "4", "--background", "black",
                "--output", str(out)]) == 0
    frames, _ = _frames(out)
    assert len(frames) == 4
    assert np.abs(frames[0] - frames[2]).mean() > 0.003  # the light moved


def test_edit_f0_changes_image_and_saves(tiny):
    _, av, _, root = tiny
    out = root / "edit.png"
    saved = root / "av_shiny"
    assert run(["edit", str(av), "--f0", "0.6", "--output", str(out), "--save", str(saved)]) == 0
    img = cv2.imread(str(out))[..., ::-1].astype(np.float32)
    w = img.shape[1]
    before, after = img[:, : w // 2 - 1], img[:, w // 2 + 1:]
    assert after.mean() > before.mean()  # higher F0: more reflection
    from hravatar.avatar import load_avatar

    la = load_avatar(saved, "cpu")
    assert torch.allclose(la.gaussians.f0, torch.full_like(la.gaussians.f0, 0.6), atol=1e-3)
    assert run(["edit", str(av)]) == 2  # nothing to edit: one-line error


def test_export_ply_and_canonical(tiny):
    _, av, hdr, root = tiny
    ply, can = root / "a.ply", root / "can.safetensors"
    assert run(["export", str(av), "--ply", str(ply), "--expression", "jaw=0.2", "--canonical", str(can)]) == 0
    d = read_gaussian_ply(ply)
    from hravatar.avatar import load_avatar

    la = load_avatar(av, "cpu")
    assert d["means"].shape == (la.gaussians.num_points, 3) and np.isfinite(d["means"]).all()
    assert 0 <= d["colors"].min() and d["colors"].max() <= 1 and "roughness" in d["extra"]
    assert can.stat().st_size > 0
    ply2 = root / "b.ply"
    assert run(["export", str(av), "--ply", str(ply2), "--shaded", str(hdr)]) == 0
    assert not np.allclose(read_gaussian_ply(ply2)["colors"], d["colors"])


def test_exported_ply_renders_like_the_avatar(tiny):
    """The PLY alone (standard 3DGS fields, no avatar code) covers the same pixels as the avatar."""
    from hravatar.avatar import load_avatar
    from hravatar.render import rasterize

    _, av, _, root = tiny
    ply = root / "ref.ply"
    assert run(["export", str(av), "--ply", str(ply)]) == 0
    d = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in read_gaussian_ply(ply).items()
         if isinstance(v, np.ndarray) and v.dtype != object and v.dtype.names is None}
    la = load_avatar(av, "cpu")
    cam = la.camera()
    _, alpha_ply, _ = rasterize(d["means"], d["quats"], d["scales"], d["opacities"], d["colors"],
                                cam.viewmat[None], cam.K[None], cam.width, cam.height)
    alpha_av = la.render(la.reference.params, cam).alpha
    assert alpha_av.mean() > 0.05
    assert (alpha_ply - alpha_av).abs().max() < 1e-3


def test_reenact_with_a_subject_driver(tiny):
    subj, av, _, root = tiny
    out = root / "reenact.mp4"
    assert run(["reenact", str(av), "--driver", str(subj), "--expressions", "tracked", "--relative",
                "--max-frames", "3", "--output", str(out)]) == 0
    frames, _ = _frames(out)
    assert len(frames) == 3
    assert np.abs(frames[0] - frames[-1]).mean() > 0.002  # the driver's motion moves the avatar
    out2 = root / "reenact_enc.mp4"  # expressions through the avatar's encoder on the driver's crops
    assert run(["reenact", str(av), "--driver", str(subj), "--max-frames", "2", "--side-by-side",
                "--expressions", "encoder", "--output", str(out2)]) == 0
    frames, _ = _frames(out2)
    assert len(frames) == 2 and frames.shape[2] > frames.shape[1]
    assert run(["reenact", str(av), "--driver", str(subj), "--expressions", "bogus"]) == 2
    assert run(["reenact", str(av), "--driver", str(root / "nothing.mp4")]) == 2


def test_missing_and_incompatible_avatar(tmp_path):
    assert run(["render", str(tmp_path / "none")]) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "avatar.safetensors").write_bytes(b"junk")
    assert run(["orbit", str(tmp_path / "bad")]) == 2


def test_viewer_serves_a_frame_and_stops(tiny):
    from hravatar.apps.view import Viewer, make_server
    from hravatar.avatar import load_avatar

    _, av, hdr, _ = tiny
    server = make_server(Viewer(load_avatar(av, "cpu"), [hdr], 64, 4), 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        page = urllib.request.urlopen(base + "/", timeout=60).read().decode()
        assert "/render?" in page and "light.hdr" in page
        png = urllib.request.urlopen(base + "/render?azimuth=30&env=1&jaw=0.1&frame=2", timeout=120).read()
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (64, 64) and img.mean() > 1
    finally:
        server.shutdown()
        server.server_close()
    t.join(timeout=10)
    assert not t.is_alive()


def test_edit_region_changes_only_that_region(tiny):
    from hravatar.apps.relight import EditConfig, edited_materials
    from hravatar.avatar import load_avatar

    _, av, _, _ = tiny
    la = load_avatar(av, "cpu")
    mats = edited_materials(la, EditConfig(avatar=av, f0=0.7, region=["face"]))
    changed = (mats["f0"] - la.gaussians.f0).abs()[:, 0] > 1e-4
    assert 0 < int(changed.sum()) < la.gaussians.num_points  # some points, not all
    assert torch.allclose(mats["f0"][changed], torch.tensor(0.7))
    assert run(["edit", str(av), "--f0", "0.7", "--region", "nose"]) == 2  # unknown region: one line
