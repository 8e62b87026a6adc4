"""Normals from depth (plane, sphere) and material editing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers.sphere_gbuffer import sphere_gbuffer
from hravatar.geometry import intrinsics, look_at
from hravatar.shading.materials import edit_material, edit_materials
from hravatar.shading.normals import normals_from_depth


def test_normals_of_a_tilted_plane() -> None:
    # camera at the origin looking down +z (identity viewmat); plane n.x = d in camera frame
    h, w = 40, 50
    K = intrinsics(60, w, h).unsqueeze(0)
    vm = torch.eye(4).unsqueeze(0)
    n_true = F.normalize(torch.tensor([0.3, -0.2, -1.0]), dim=0)  # faces the camera
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.linalg.inv(K[0]).T  # z = 1
    depth = (-2.0 / (rays @ n_true)).unsqueeze(0).unsqueeze(-1)  # n.(t ray) = -2
    n, valid = normals_from_depth(depth, K, vm)
    assert valid[0, 1:-1, 1:-1].all() and not valid[0, 0].any()
    assert torch.allclose(n[0, 1:-1, 1:-1], n_true.expand(h - 2, w - 2, 3), atol=1e-4)


def test_normals_of_a_sphere_in_world_frame() -> None:
    vm = torch.stack([look_at((0.0, 0.0, 4.0)), look_at((3.0, 1.0, 2.0))])
    K = intrinsics(40, 96, 96).expand(2, 3, 3)
    gb = sphere_gbuffer(vm, K, 96, 96)
    n, valid = normals_from_depth(gb["depth"], K, vm, gb["alpha"])
    v = valid[..., 0]
    assert v.sum() > 0.8 * gb["alpha"].sum() - 4 * 96
    cos = (n * gb["normal"]).sum(-1)[v]
    assert cos.min() > 0.99 and cos.mean() > 0.9995
    assert (n[~v] == 0).all()
    # differentiable w.r.t. depth
    d = gb["depth"].clone().requires_grad_(True)
    normals_from_depth(d, K, vm, gb["alpha"])[0].sum().backward()
    assert d.grad is not None and torch.isfinite(d.grad).all()


def test_material_edits() -> None:
    r = torch.full((10, 1), 0.8)
    f = torch.full((10, 1), 0.05)
    mask = torch.zeros(10, 1, dtype=torch.bool)
    mask[:4] = True
    r2, f2 = edit_materials(r, f, mask, roughness_scale=0.25, f0_set=0.9)
    assert torch.allclose(r2[:4], torch.full((4, 1), 0.2)) and torch.allclose(r2[4:], r[4:])
    assert torch.allclose(f2[:4], torch.full((4, 1), 0.9)) and torch.allclose(f2[4:], f[4:])
    # soft mask blends; results clamp to [0, 1]; official "reflectance scale" = toward 1
    soft = torch.linspace(0, 1, 10).unsqueeze(-1)
    assert torch.allclose(edit_material(r, soft, set_to=0.0), 0.8 * (1 - soft))
    assert edit_material(r, scale=3.0).max() == 1.0
    assert torch.allclose(edit_material(f, toward=(1.0, 0.5)), 0.05 + 0.95 * 0.5 * torch.ones_like(f))
    # inputs untouched, works on G-buffers too
    assert (r == 0.8).all()
    gbr = torch.rand(2, 8, 8, 1)
    assert edit_material(gbr, gbr > 0.5, set_to=0.5).shape == (2, 8, 8, 1)
