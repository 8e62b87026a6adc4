"""Cube maps: conventions, seam continuity, mips, gradients."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hravatar.shading.cubemap import (
    build_mips,
    dir_to_equirect_uv,
    dir_to_face_uv,
    equirect_directions,
    equirect_to_cube,
    face_uv_to_dir,
    sample_cube,
    sample_cube_mips,
    texel_directions,
    texel_solid_angles,
)


def _rand_dirs(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 3, generator=g), dim=-1)


def test_face_convention_roundtrip() -> None:
    d = _rand_dirs(5000)
    f, u, v = dir_to_face_uv(d)
    assert torch.allclose(F.normalize(face_uv_to_dir(f, u, v), dim=-1), d, atol=1e-6)
    assert (u.abs() <= 1).all() and (v.abs() <= 1).all()
    # documented face order and orientation
    axes = torch.eye(3)
    faces = dir_to_face_uv(torch.cat([axes, -axes])[[0, 3, 1, 4, 2, 5]])[0]
    assert faces.tolist() == [0, 1, 2, 3, 4, 5]
    # +z face: u grows toward +x, v grows toward -y (rows go down)
    f, u, v = dir_to_face_uv(torch.tensor([[0.3, -0.2, 1.0]]))
    assert f.item() == 4 and u.item() > 0 and v.item() > 0


def test_solid_angles_sum_to_sphere() -> None:
    for r in (1, 4, 16):
        assert texel_solid_angles(r).sum().item() == pytest_approx(4 * math.pi)


def pytest_approx(x: float, rel: float = 1e-5):  # tiny local helper to keep imports minimal
    import pytest

    return pytest.approx(x, rel=rel)


def _edge_points(n: int = 200) -> torch.Tensor:
    """Directions on all 12 cube edges (u or v = +-1 on every face)."""
    t = torch.linspace(-0.999, 0.999, n)
    pts = []
    for f in range(6):
        for u, v in (
            (torch.ones_like(t), t),
            (-torch.ones_like(t), t),
            (t, torch.ones_like(t)),
            (t, -torch.ones_like(t)),
        ):
            pts.append(F.normalize(face_uv_to_dir(torch.full_like(t, f).long(), u, v), dim=-1))
    return torch.cat(pts)


def test_seams_are_continuous() -> None:
    res = 8
    d = texel_directions(res)
    cube = torch.cat([d, torch.sin(3 * d[..., :1]) * d[..., 1:2]], -1)  # smooth, varies across seams
    e = _edge_points()
    # step off the edge into both faces along a tangent that crosses it
    g = torch.Generator().manual_seed(1)
    tang = F.normalize(torch.linalg.cross(e, torch.randn(e.shape, generator=g), dim=-1), dim=-1)
    eps = 1e-5
    a = sample_cube(cube, F.normalize(e + eps * tang, dim=-1))
    b = sample_cube(cube, F.normalize(e - eps * tang, dim=-1))
    assert (a - b).abs().max().item() < 2e-4  # a texel step of this function is ~0.2
    # seams are as accurate as face interiors for a linear function
    err_edge = (sample_cube(cube, e)[:, :3] - e).abs().max().item()
    err_all = (sample_cube(cube, _rand_dirs(20000))[:, :3] - _rand_dirs(20000)).abs().max().item()
    assert err_edge < 0.05 and err_all < 0.05


def test_bilinear_reproduces_texels_and_is_linear_inside_faces() -> None:
    res = 6
    g = torch.Generator().manual_seed(2)
    cube = torch.rand(6, res, res, 3, generator=g)
    d = texel_directions(res)
    assert torch.allclose(sample_cube(cube, d), cube, atol=1e-5)
    # midway between two texel centres of one face: the mean
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    f = torch.tensor([4])
    mid = face_uv_to_dir(f, (c[1:2] + c[2:3]) / 2, c[3:4])
    assert torch.allclose(sample_cube(cube, mid)[0], (cube[4, 3, 1] + cube[4, 3, 2]) / 2, atol=1e-5)


def test_mips_and_trilinear() -> None:
    g = torch.Generator().manual_seed(3)
    cube = torch.rand(6, 8, 8, 2, generator=g)
    mips = build_mips(cube, 4)
    assert [m.shape[1] for m in mips] == [8, 4, 2, 1]
    assert torch.allclose(mips[1][0, 0, 0], cube[0, :2, :2].mean((0, 1)))
    d = _rand_dirs(100)
    s0, s1 = sample_cube(mips[1], d), sample_cube(mips[2], d)
    mid = sample_cube_mips(mips, d, torch.full((100,), 1.25))
    assert torch.allclose(mid, 0.75 * s0 + 0.25 * s1, atol=1e-6)
    assert torch.allclose(sample_cube_mips(mips, d, torch.full((100, 1), 9.0)), sample_cube(mips[3], d))


def test_gradients_reach_maps_and_directions() -> None:
    g = torch.Generator().manual_seed(4)
    cube = torch.rand(6, 4, 4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    d = F.normalize(torch.randn(7, 3, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
    lv = torch.rand(7, generator=g, dtype=torch.float64).mul(1.8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c, x: sample_cube(c, x), (cube, d), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(
        lambda c, x, l: sample_cube_mips(build_mips(c, 3), x, l), (cube, d, lv), eps=1e-6, atol=1e-5
    )


def test_equirect_convention_and_resampling() -> None:
    d = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    u, v = dir_to_equirect_uv(d)
    assert torch.allclose(u[:2], torch.tensor([0.5, 0.75])) and torch.allclose(v[:2], torch.tensor([0.5, 0.5]))
    assert v[2].item() < 1e-3
    eq = equirect_directions(64, 128) * 0.5 + 0.5  # radiance = linear function of direction
    cube = equirect_to_cube(eq, 16)
    assert (cube - (texel_directions(16) * 0.5 + 0.5)).abs().max().item() < 0.03
