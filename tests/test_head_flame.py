"""FLAME loader (synthetic pickle with FLAME's field names), restricted unpickler, mouth cavity."""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hravatar.errors import HRAvatarError
from hravatar.head import load_head_model
from hravatar.head.flame import load_flame, safe_load_pickle
from hravatar.head.mouth import add_mouth_interior, boundary_loops


def _sphere(n_lat: int = 24, n_lon: int = 32, r: float = 0.09) -> tuple[np.ndarray, np.ndarray]:
    verts = [(0.0, r, 0.0)]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            verts.append((r * np.sin(th) * np.sin(ph), r * np.cos(th), r * np.sin(th) * np.cos(ph)))
    verts.append((0.0, -r, 0.0))
    faces = []
    for j in range(n_lon):
        faces.append((0, 1 + j, 1 + (j + 1) % n_lon))
    for i in range(n_lat - 2):
        a, b = 1 + i * n_lon, 1 + (i + 1) * n_lon
        for j in range(n_lon):
            k = (j + 1) % n_lon
            faces += [(a + j, b + j, b + k), (a + j, b + k, a + k)]
    last = len(verts) - 1
    base = 1 + (n_lat - 2) * n_lon
    for j in range(n_lon):
        faces.append((base + j, last, base + (j + 1) % n_lon))
    v, f = np.array(verts), np.array(faces)
    # outward winding
    tri = v[f]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if (nrm * tri.mean(1)).sum() < 0:
        f = f[:, [0, 2, 1]]
    return v, f


def synthetic_flame(rng: np.random.Generator, with_hole: bool = True, chumpy: bool = False) -> dict:
    """A small head-like model with FLAME's field names and layouts (not FLAME data)."""
    v, f = _sphere()
    mouth = np.array([0.0, -0.045, 0.078])
    if with_hole:  # an open mouth at the front-bottom, like FLAME's
        keep = np.linalg.norm(v[f].mean(1) - mouth, axis=1) > 0.016
        f = f[keep]
    V = len(v)
    joints = np.array([[0, -0.1, -0.02], [0, -0.05, -0.01], [0, -0.02, 0.02], [0.03, 0.03, 0.06],
                       [-0.03, 0.03, 0.06]])
    w = np.zeros((V, 5))
    jaw = (v[:, 1] < -0.03) & (v[:, 2] > 0.0)
    w[jaw, 2] = 1
    w[v[:, 1] < -0.075, 0] = 1
    w[(w.sum(1) == 0), 1] = 1
    w /= w.sum(1, keepdims=True)
    # regressor: each joint = mean of its 6 nearest vertices (plus the exact offset folded into
    # weights is not needed for these tests)
    jr = np.zeros((5, V))
    for j in range(5):
        idx = np.argsort(np.linalg.norm(v - joints[j], axis=1))[:6]
        jr[j, idx] = 1 / 6
    shapedirs = rng.normal(scale=1e-3, size=(V, 3, 400))
    model = {
        "v_template": v, "f": f.astype(np.uint32), "shapedirs": shapedirs,
        "posedirs": rng.normal(scale=1e-4, size=(V * 3, 36)), "J_regressor": sp.csc_matrix(jr),
        "weights": w, "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
        "bs_style": "lbs", "bs_type": "lrotmin",
    }
    if chumpy:
        mod = types.ModuleType("chumpy.ch")

        class Ch:  # pickles as chumpy.ch.Ch with a state dict holding "x", like chumpy
            def __init__(self, x):
                self.x = x
                self._dirty_vars = set()

            def __reduce__(self):
                return (Ch, (), self.__dict__)

            def __setstate__(self, st):
                self.__dict__.update(st)

        Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
        mod.Ch = Ch
        sys.modules.setdefault("chumpy", types.ModuleType("chumpy"))
        sys.modules["chumpy.ch"] = mod
        try:
            model["shapedirs"] = Ch(shapedirs)
            model["v_template"] = Ch(v)
            data = pickle.dumps(model, protocol=2)
        finally:
            del sys.modules["chumpy.ch"]
        return {"_bytes": data, "shapedirs": shapedirs, "v_template": v}
    return model


def _write(tmp_path, model: dict, name: str = "generic_model.pkl"):
    p = tmp_path / name
    p.write_bytes(model["_bytes"] if "_bytes" in model else pickle.dumps(model, protocol=2))
    return p


def test_flame_synthetic_pickle(tmp_path):
    rng = np.random.default_rng(0)
    raw = synthetic_flame(rng)
    m = load_flame(_write(tmp_path, raw))
    V = raw["v_template"].shape[0]
    assert m.v_template.shape == (V, 3) and m.num_shape == 100 and m.num_expr == 50
    np.testing.assert_allclose(m.shapedirs.numpy(), raw["shapedirs"][..., :100], rtol=1e-6)
    np.testing.assert_allclose(m.exprdirs.numpy(), raw["shapedirs"][..., 300:350], rtol=1e-6)
    assert m.posedirs.shape == (V, 3, 36)
    np.testing.assert_allclose(m.posedirs.numpy().reshape(V * 3, 36), raw["posedirs"], rtol=1e-6)
    out = m(batch_size=2)
    torch.testing.assert_close(out.vertices[0], m.v_template)


def test_flame_chumpy_objects_become_arrays(tmp_path):
    raw = synthetic_flame(np.random.default_rng(1), chumpy=True)
    assert "chumpy" not in sys.modules or not hasattr(sys.modules["chumpy"], "ch")
    m = load_flame(_write(tmp_path, raw, "flame2023.pkl"))
    assert m.name == "flame2023"
    np.testing.assert_allclose(m.v_template.numpy(), raw["v_template"], rtol=1e-6)
    np.testing.assert_allclose(m.exprdirs.numpy(), raw["shapedirs"][..., 300:350], rtol=1e-6)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_refused(tmp_path):
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps({"v_template": _Evil()}))
    with pytest.raises(HRAvatarError, match="refusing"):
        safe_load_pickle(p)
    with pytest.raises(HRAvatarError, match="flame.is.tue.mpg.de"):
        load_flame(p)


def test_missing_or_wrong_file(tmp_path, monkeypatch):
    with pytest.raises(HRAvatarError, match="not found.*flame.is.tue.mpg.de"):
        load_flame(tmp_path / "nope.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(HRAvatarError, match="not a readable FLAME pickle"):
        load_flame(bad)
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps({"a": np.zeros(3)}))
    with pytest.raises(HRAvatarError, match="missing"):
        load_flame(wrong)
    monkeypatch.delenv("HRAVATAR_FLAME_PATH", raising=False)
    with pytest.raises(HRAvatarError, match="HRAVATAR_FLAME_PATH"):
        load_head_model("flame")


def test_flame_via_env_with_mouth_cavity(tmp_path, monkeypatch):
    raw = synthetic_flame(np.random.default_rng(2))
    monkeypatch.setenv("HRAVATAR_FLAME_PATH", str(_write(tmp_path, raw)))
    base = load_flame(os.environ["HRAVATAR_FLAME_PATH"])
    assert len(boundary_loops(base.faces)) == 1  # the mouth hole
    m = load_head_model("flame")
    info = m.meta["mouth"]
    assert info["mouth_hole"] and info["cavity_vertices"] > 0 and info["teeth_vertices"] > 0
    assert m.regions["teeth"].sum() == info["teeth_vertices"]
    assert m.regions["mouth_interior"].sum() == info["cavity_vertices"]
    assert len(boundary_loops(m.faces)) == 0  # the cavity closes the hole
    V = base.num_vertices
    torch.testing.assert_close(m.v_template[:V], base.v_template)
    # lower teeth follow the jaw joint, upper teeth the neck joint
    pose = torch.zeros(1, 5, 3)
    pose[0, 2, 0] = 0.3
    moved = (m(pose=pose).vertices[0] - m.v_template).norm(dim=-1)
    teeth = m.regions["teeth"]
    assert moved[teeth].max() > 0.005 and moved[teeth].min() < 1e-6
    again = add_mouth_interior(m)
    assert again.num_vertices == m.num_vertices
