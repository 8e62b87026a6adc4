"""`hravatar head export` on a synthetic FLAME-layout file, mesh writers and the preview renderer."""

from __future__ import annotations

import pickle

import numpy as np
from PIL import Image

from hravatar.cli import run
from hravatar.head.export import write_obj, write_ply
from hravatar.head.preview import render_preview
from test_head_flame import _sphere, synthetic_flame


def test_render_mesh_lambert():
    v, f = _sphere()
    img = render_preview(v, f, size=64, light_dir=(0.0, 0.0, 1.0), background=0.0)
    assert img.shape == (64, 64, 3)
    assert img[0, 0].max() == 0.0  # background in the corner
    centre, rim = img[32, 32, 0], img[32, 4, 0]
    assert centre > 0.75 and 0.0 < rim < centre  # facing the light is brightest


def test_mesh_writers(tmp_path):
    v, f = _sphere()
    obj = write_obj(tmp_path / "a.obj", v, f)
    lines = obj.read_text().splitlines()
    assert sum(ln.startswith("v ") for ln in lines) == len(v)
    assert sum(ln.startswith("f ") for ln in lines) == len(f)
    ply = write_ply(tmp_path / "a.ply", v, f, np.full((len(v), 3), 0.5))
    data = ply.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    assert f"element vertex {len(v)}".encode() in head and f"element face {len(f)}".encode() in head
    assert len(body) == len(v) * (12 + 3) + len(f) * (1 + 12)
    xyz = np.frombuffer(body[: len(v) * 15], dtype=[("p", "<f4", 3), ("c", "u1", 3)])["p"]
    np.testing.assert_allclose(xyz, v, atol=1e-6)


def test_head_export_cli(tmp_path):
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps(synthetic_flame(np.random.default_rng(0)), protocol=2))
    out = tmp_path / "head.ply"
    rc = run(["head", "export", str(out), "--model", "flame", "--flame-path", str(p),
              "--expression", "exp_0=1.0", "--pose", "jaw=0.2,0,0", "--size", "96"])
    assert rc == 0 and out.is_file()
    png = np.asarray(Image.open(out.with_suffix(".png")))
    assert png.shape == (96, 192, 3)
    assert (png < 250).any(axis=-1).mean() > 0.2  # something was drawn in both views
    bad = run(["head", "export", str(out), "--model", "flame", "--flame-path", str(p),
               "--pose", "elbow=0,0,0"])
    assert bad == 2
