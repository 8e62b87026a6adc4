"""The open head model built from the installed anny package (skipped when anny is absent)."""

from __future__ import annotations

import os
import time

import pytest
import torch

pytest.importorskip("anny", reason="the open head model needs `anny` (pip install --no-deps anny)")
pytest.importorskip("roma", reason="anny's head model code imports roma")

from hravatar.head import load_head_model  # noqa: E402
from hravatar.head import open_model as om  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    old = os.environ.get("HRAVATAR_CACHE")
    os.environ["HRAVATAR_CACHE"] = str(tmp_path_factory.mktemp("hravatar_cache"))
    yield os.environ["HRAVATAR_CACHE"]
    if old is None:
        os.environ.pop("HRAVATAR_CACHE", None)
    else:
        os.environ["HRAVATAR_CACHE"] = old


@pytest.fixture(scope="module")
def built(cache):
    assert not om.is_cached()
    t0 = time.perf_counter()
    m = om.load_open_model()
    return m, time.perf_counter() - t0


@pytest.fixture(scope="module")
def model(built):
    return load_head_model("open")  # from the cache, with mouth interior


def test_builds_then_loads_from_cache(built, monkeypatch):
    m, build_s = built
    assert om.is_cached()
    assert om.cache_path().name.startswith(f"open-anny{om.anny_version()}-b{om.BUILD_VERSION}")
    assert build_s < 60
    monkeypatch.setattr(om, "build_open_model", lambda **kw: pytest.fail("rebuilt although cached"))
    again = om.load_open_model()
    torch.testing.assert_close(again.v_template, m.v_template)
    torch.testing.assert_close(again.shapedirs, m.shapedirs)
    assert again.expr_names == m.expr_names and len(again.expr_names) == 52
    assert m.meta["expr_linearity_max_dev_m"] < 1e-6
    assert m.meta["j_regressor_max_err_m"] < 0.005


def test_sizes_frame_and_regions(model):
    assert model.num_shape == 100 and model.num_expr == 52
    V = model.num_vertices
    assert model.lbs_weights.shape == (V, 5)
    torch.testing.assert_close(model.lbs_weights.sum(1), torch.ones(V))
    for name in ("face", "scalp", "neck", "eyes", "lips", "teeth", "mouth_interior"):
        assert model.regions[name].shape == (V,) and model.regions[name].any(), name
    J = model.rest_joints(torch.zeros(1, 100))[0]
    assert J[3, 0] > 0.02 and J[4, 0] < -0.02  # eye_l on the subject's left (+x)
    assert J[3, 1] > J[2, 1] > J[0, 1]  # eyes above jaw above neck base
    face = model.v_template[model.regions["face"]]
    nose = face[face[:, 2].argmax()]
    mouth_y = float(model.v_template[model.regions["lips"], 1].mean())
    assert abs(float(nose[0])) < 0.01 and mouth_y < float(nose[1]) < float(J[3, 1])
    # unit-variance identity coefficients change the head by millimetres to centimetres
    d = model.shapedirs[..., 0].norm(dim=-1)
    assert 0.002 < float(d.max()) < 0.08


def test_zero_params_return_template(model):
    out = model(batch_size=3)
    for b in range(3):
        torch.testing.assert_close(out.vertices[b], model.v_template)
    torch.testing.assert_close(out.joints[0], out.rest_joints[0])


def _regions(model):
    v = model.v_template
    J = model.rest_joints(torch.zeros(1, 100))[0]
    eye_y = float(J[3:, 1].mean())
    lips = model.regions["lips"]
    mouth_y = float(v[lips, 1].mean())
    face = model.regions["face"]
    chin = face & ~lips & (model.lbs_weights[:, 2] > 0.5) & (v[:, 1] < mouth_y - 0.015)
    forehead = face & (v[:, 1] > eye_y + 0.025)
    lower_lip = lips & (v[:, 1] < mouth_y)
    lower_teeth = model.regions["teeth"] & (model.lbs_weights[:, 2] > 0.5)
    return chin, forehead, lower_lip, lower_teeth


def test_jaw_rotation_moves_chin_lips_teeth_not_forehead(model):
    chin, forehead, lower_lip, lower_teeth = _regions(model)
    assert chin.sum() > 10 and forehead.sum() > 10 and lower_lip.sum() > 5 and lower_teeth.sum() > 10
    pose = torch.zeros(1, 5, 3)
    pose[0, 2, 0] = 0.25  # open the jaw (rotation about +x)
    out = model(pose=pose)
    d = out.vertices[0] - model.v_template
    assert d[chin].norm(dim=-1).mean() > 0.01
    assert d[chin, 1].mean() < -0.005  # the chin goes down
    assert d[lower_lip].norm(dim=-1).mean() > 0.005
    assert d[lower_teeth].norm(dim=-1).min() > 0.002
    assert d[forehead].norm(dim=-1).max() < 1e-6
    upper_teeth = model.regions["teeth"] & (model.lbs_weights[:, 1] > 0.5)
    assert d[upper_teeth].norm(dim=-1).max() < 1e-6


@pytest.mark.parametrize(
    "name, side",
    [("eyeBlinkLeft", +1), ("eyeBlinkRight", -1), ("mouthSmileLeft", +1), ("browInnerUp", 0), ("jawOpen", 0)],
)
def test_expression_moves_expected_region(model, name, side):
    chin, forehead, lower_lip, lower_teeth = _regions(model)
    surface = model.regions["face"] | model.regions["scalp"] | model.regions["lips"]
    e = torch.zeros(1, model.num_expr)
    e[0, model.expr_names.index(name)] = 1.0
    d = (model(expression=e).vertices[0] - model.v_template).norm(dim=-1)
    v = model.v_template
    J = model.rest_joints(torch.zeros(1, 100))[0]
    moved = d > 1e-4
    assert moved.any()
    top = v[d.argmax()]
    if name.startswith("eyeBlink"):
        eye = J[3] if side > 0 else J[4]
        assert (top - eye).norm() < 0.03  # an eyelid of the named eye
        assert d[surface & (v[:, 0] * side < -0.01)].max() < 1e-6  # the other eye's lids do not move
    elif name == "mouthSmileLeft":
        left, right = d[surface & (v[:, 0] > 0.01)].max(), d[surface & (v[:, 0] < -0.01)].max()
        assert top[0] > 0.01 and left > 5 * right
    elif name == "browInnerUp":
        assert top[1] > J[3, 1] and d[forehead | chin].max() > 0.001
        assert d[chin].max() < 1e-6
    elif name == "jawOpen":
        assert d[chin].mean() > 0.01 and d[lower_teeth].mean() > 0.005
        assert d[forehead].max() < 1e-6


def test_eye_rotation_moves_only_that_eye(model):
    pose = torch.zeros(1, 5, 3)
    pose[0, 3, 1] = 0.3
    d = (model(pose=pose).vertices[0] - model.v_template).norm(dim=-1)
    eyes = model.regions["eyes"]
    v = model.v_template
    assert d[eyes & (v[:, 0] > 0)].max() > 0.002
    assert d[v[:, 0] < 0].max() < 1e-6
    far = (v - model.rest_joints(torch.zeros(1, 100))[0, 3]).norm(dim=-1) > 0.03
    assert d[far].max() < 1e-6


def test_gradients_reach_every_input(model):
    torch.manual_seed(0)
    shape = (0.5 * torch.randn(2, 100)).requires_grad_()
    expr = (0.3 * torch.rand(2, 52)).requires_grad_()
    pose = (0.1 * torch.randn(2, 5, 3)).requires_grad_()
    trans = (0.01 * torch.randn(2, 3)).requires_grad_()
    out = model(shape=shape, expression=expr, pose=pose, translation=trans)
    w = torch.randn_like(out.vertices)
    ((out.vertices * w).sum() + out.joints.sum() + out.vertex_transforms[..., :3, :].sum()).backward()
    for t in (shape, expr, pose, trans):
        assert t.grad is not None and torch.isfinite(t.grad).all()
        assert (t.grad.abs().reshape(2, -1) > 0).any(0).float().mean() > 0.99
