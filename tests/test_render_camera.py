"""Camera maths: OpenCV axes, intrinsics, orbits, projection."""

import math

import torch

from hravatar.render import camera_centers, intrinsics, look_at, orbit_cameras, project_points, rasterize


def test_look_at_axes_and_centre():
    eye = torch.tensor([0.3, 0.2, 1.0])
    v = look_at(eye, [0.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    rot = v[:3, :3]
    assert torch.allclose(rot @ rot.T, torch.eye(3), atol=1e-6)
    assert torch.isclose(torch.det(rot), torch.tensor(1.0), atol=1e-6)
    # eye maps to the camera origin, the target onto +z
    assert torch.allclose(v[:3, :3] @ eye + v[:3, 3], torch.zeros(3), atol=1e-6)
    tgt_cam = v[:3, 3]
    assert tgt_cam[2] > 0 and torch.allclose(tgt_cam[:2], torch.zeros(2), atol=1e-6)
    # world up appears up in the image (camera -y)
    up_cam = rot @ torch.tensor([0.0, 1.0, 0.0])
    assert up_cam[1] < 0
    # a camera in front of the face (+z) sees the subject's left (+x) on the image right
    v0 = look_at([0.0, 0.0, 1.0])
    assert (v0[:3, :3] @ torch.tensor([1.0, 0.0, 0.0]))[0] > 0
    assert torch.allclose(camera_centers(v), eye, atol=1e-6)


def test_intrinsics():
    K = intrinsics(90.0, 200, 100)
    assert torch.allclose(K, torch.tensor([[100.0, 0, 100], [0, 100.0, 50], [0, 0, 1]]), atol=1e-4)
    K2 = intrinsics(width=64, height=48, focal=70.0)
    assert K2[0, 0] == 70.0 and K2[1, 1] == 70.0 and K2[0, 2] == 32.0 and K2[1, 2] == 24.0
    Ky = intrinsics(90.0, 200, 100, fov_axis="y")
    assert math.isclose(Ky[1, 1].item(), 50.0, rel_tol=1e-5)


def test_orbit_and_project():
    views = orbit_cameras(8, 0.7, 20.0, target=(0.0, 0.05, 0.0))
    centres = camera_centers(views)
    assert views.shape == (8, 4, 4)
    d = (centres - torch.tensor([0.0, 0.05, 0.0])).norm(dim=-1)
    assert torch.allclose(d, torch.full((8,), 0.7), atol=1e-5)
    assert torch.allclose(
        centres[0],
        torch.tensor([0.0, 0.05 + 0.7 * math.sin(math.radians(20)), 0.7 * math.cos(math.radians(20))]),
        atol=1e-5,
    )
    assert centres[2, 0] > 0.6  # a quarter turn goes to +x
    K = intrinsics(30.0, 64, 48)
    uv, z = project_points(torch.tensor([[0.0, 0.05, 0.0]]), views[0], K)
    assert torch.allclose(uv, torch.tensor([[32.0, 24.0]]), atol=1e-4)
    assert torch.isclose(z, torch.tensor([0.7]), atol=1e-5).all()


def test_project_points_matches_rasterizer_means2d():
    g = torch.Generator().manual_seed(3)
    pts = (torch.rand(20, 3, generator=g) - 0.5) * 0.1
    views = orbit_cameras(2, 0.5, 10.0)
    K = intrinsics(40.0, 64, 48)
    _, _, meta = rasterize(
        pts,
        torch.tensor([1.0, 0, 0, 0]).repeat(20, 1),
        torch.full((20, 3), 0.003),
        torch.full((20,), 0.5),
        torch.rand(20, 3, generator=g),
        views,
        K.expand(2, 3, 3),
        64,
        48,
        backend="reference",
    )
    for c in range(2):
        uv, z = project_points(pts, views[c], K)
        vis = meta["visible"][c]
        assert torch.allclose(meta["means2d"][c][vis], uv[vis], atol=1e-4)
        assert torch.allclose(meta["depths"][c][vis], z[vis], atol=1e-6)
