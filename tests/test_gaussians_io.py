"""Save / load / PLY export of the avatar, and rendering it through the rasterizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.synthetic_head import synthetic_head
from hravatar.errors import HRAvatarError
from hravatar.gaussians import (
    AvatarConfig,
    DensifyConfig,
    DensifyStrategy,
    GaussianHead,
    export_ply,
    load_gaussians,
    save_gaussians,
)


def _random_args(avatar: GaussianHead, seed: int = 0, B: int = 2):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, avatar.num_shape, generator=g),
        torch.randn(B, avatar.num_expr, generator=g),
        torch.randn(B, 5, 3, generator=g) * 0.2,
        torch.randn(B, 3, generator=g) * 0.05,
    )


@pytest.mark.parametrize("cfg", [{}, {"rig": "triangle"}, {"learn_bases": False, "f0_max": 0.8}])
def test_save_load_deform_bit_identical(tmp_path, cfg):
    head = synthetic_head(1)
    avatar = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=3, seed=4, **cfg))
    # perturb all parameters and densify once so the saved state is not the initial one
    g = torch.Generator().manual_seed(1)
    for p in avatar.params.values():
        if p.is_floating_point():
            p.data.add_(torch.randn(p.shape, generator=g) * 1e-3)
    N = avatar.num_points
    info = {
        "means2d": torch.zeros(1, N, 2, requires_grad=True),
        "radii": torch.ones(1, N, 2),
        "width": 8,
        "height": 8,
    }
    info["means2d"].grad = torch.full((1, N, 2), 1.0)
    DensifyStrategy(DensifyConfig(start_iter=1, every=1, stop_before_end=0), 10).step_post_backward(
        avatar, None, 1, info
    )
    path = tmp_path / "avatar.safetensors"
    save_gaussians(avatar, path, extra_meta={"step": 7})
    loaded = load_gaussians(path)
    assert loaded.config == avatar.config and loaded.head_name == "synthetic"
    assert loaded.expr_names == head.expr_names and loaded.meta["step"] == 7
    assert set(loaded.params) == set(avatar.params)
    for k, v in avatar.params.items():
        assert torch.equal(loaded.params[k], v) and loaded.params[k].dtype == v.dtype, k
        assert loaded.params[k].requires_grad == v.requires_grad, k
    args = _random_args(avatar)
    a, b = avatar.deform(*args), loaded.deform(*args)
    for field in ("means", "quats", "scales", "opacities", "rotmats"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    for fn in ("albedo", "roughness", "f0", "colors"):
        assert torch.equal(getattr(avatar, fn), getattr(loaded, fn))
    assert loaded.lr_table() == avatar.lr_table()
    # the file is plain safetensors with JSON metadata (no pickle)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    assert md["format"] == "hravatar-gaussian-head" and json.loads(md["config"])["points_per_face"] == 3


def test_load_errors(tmp_path):
    with pytest.raises(HRAvatarError, match="not found"):
        load_gaussians(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(HRAvatarError, match="safetensors"):
        load_gaussians(bad)
    head = synthetic_head(1)
    other = tmp_path / "head.safetensors"
    head.save(other)
    with pytest.raises(HRAvatarError, match="not a hravatar Gaussian avatar"):
        load_gaussians(other)


def _reread(path) -> dict:
    from hravatar.io.ply import read_gaussian_ply

    return read_gaussian_ply(path)


def test_export_ply(tmp_path):
    head = synthetic_head(1)
    avatar = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=2))
    avatar.params["albedo"].data.uniform_(-2, 2, generator=torch.Generator().manual_seed(0))
    expr = torch.randn(avatar.num_expr, generator=torch.Generator().manual_seed(1))
    pose = torch.zeros(5, 3)
    pose[2, 0] = 0.2
    path = export_ply(avatar, tmp_path / "a.ply", expression=expr, pose=pose)
    posed = avatar.deform(expression=expr[None], pose=pose[None])
    data = _reread(path)
    assert data["means"].shape == (avatar.num_points, 3)
    assert np.allclose(data["means"], posed.means[0].detach().numpy(), atol=1e-6)
    assert not np.allclose(data["means"], avatar.params["means"].detach().numpy(), atol=1e-4)  # posed
    assert np.allclose(data["scales"], posed.scales[0].detach().numpy(), rtol=1e-5)
    q_file = torch.as_tensor(data["quats"]).float()
    q_file = q_file / q_file.norm(dim=-1, keepdim=True)
    dots = (q_file * posed.quats[0].detach()).sum(-1).abs()
    assert torch.allclose(dots, torch.ones(avatar.num_points), atol=1e-5)
    assert np.allclose(data["opacities"].reshape(-1), 0.1, atol=1e-5)
    assert np.allclose(data["colors"], avatar.albedo.detach().numpy(), atol=2e-3)
    n = torch.as_tensor(data["normals"])
    assert torch.allclose((n * posed.normals()[0].detach()).sum(-1).abs(), torch.ones(avatar.num_points), atol=1e-5)
    ex = data["extra"]
    assert np.allclose(ex["roughness"], avatar.roughness[:, 0].detach().numpy())
    assert np.allclose(ex["f0"], avatar.f0[:, 0].detach().numpy())
    assert np.allclose(ex["albedo_1"], avatar.albedo[:, 1].detach().numpy())
    # shaded colours instead of albedo
    shaded = torch.rand(avatar.num_points, 3, generator=torch.Generator().manual_seed(2))
    data2 = _reread(export_ply(avatar, tmp_path / "b.ply", colors=shaded, extra=False))
    assert np.allclose(data2["colors"], shaded.numpy(), atol=2e-3)
    # a standard 3DGS header: viewers look for these properties
    header = (tmp_path / "a.ply").read_bytes().split(b"end_header")[0].decode("ascii")
    for name in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "rot_0", "rot_3"):
        assert f"property float {name}\n" in header, name
    assert f"element vertex {avatar.num_points}\n" in header


def _mesh_silhouette(verts: torch.Tensor, faces: torch.Tensor, view, K, W: int, H: int) -> np.ndarray:
    import cv2

    from hravatar.render import project_points

    uv, z = project_points(verts, view, K)
    assert (z > 0).all()
    mask = np.zeros((H, W), np.uint8)
    pts = ((uv.numpy() - 0.5) * 16).round().astype(np.int32)  # cv2 pixel centres are integers; 4 fraction bits
    for f in faces.numpy():
        cv2.fillPoly(mask, [pts[f]], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _silhouette_iou(head, avatar: GaussianHead, backend: str, W: int, H: int, dist: float) -> float:
    from hravatar.render import intrinsics, look_at, rasterize

    pose = torch.zeros(1, 5, 3)
    pose[0, 2, 0] = 0.2  # open the jaw a little
    pose[0, 0, 1] = 0.3  # and turn the head
    out = head.forward(pose=pose)
    view = look_at((0.05, 0.02, dist))
    K = intrinsics(25.0, W, H)
    with torch.no_grad():
        d = avatar.deform(pose=pose)
        _, alpha, _ = rasterize(
            d.means[0],
            d.quats[0],
            d.scales[0],
            d.opacities[0],
            torch.ones(avatar.num_points, 1),
            view[None],
            K[None],
            W,
            H,
            backend=backend,
        )
    sil = alpha[0, ..., 0].numpy() > 0.5
    ref = _mesh_silhouette(out.vertices[0], head.faces, view, K, W, H)
    return float((sil & ref).sum() / (sil | ref).sum())


def test_rendered_synthetic_head_matches_mesh_silhouette():
    pytest.importorskip("hravatar.render")
    head = synthetic_head(2)
    avatar = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=8, init_opacity=0.9))
    iou = _silhouette_iou(head, avatar, "auto", 96, 96, 0.7)
    assert iou > 0.9


def test_rendered_open_head_matches_mesh_silhouette():
    try:
        import anny  # noqa: F401

        from hravatar.head import load_head_model
        from hravatar.render import rasterize  # noqa: F401
    except ImportError:
        pytest.skip("needs anny, hravatar.head.load_head_model and hravatar.render")
    head = load_head_model("open")
    avatar = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=8, init_opacity=0.9, shape_dims=10))
    iou = _silhouette_iou(head, avatar, "auto", 128, 128, 0.8)
    assert iou > 0.9
