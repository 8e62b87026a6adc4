"""Initialisation on the mesh and deformation of the Gaussian head avatar."""

from __future__ import annotations

import pytest
import torch

from helpers.synthetic_head import synthetic_head
from hravatar.gaussians import AvatarConfig, GaussianHead, LearningRates, position_lr
from hravatar.gaussians.deform import normalized_weights
from hravatar.gaussians.init import face_frames, init_from_mesh, interpolate, sample_barycentric
from hravatar.geometry import axis_angle_to_matrix, matrix_to_quat, quat_multiply, quat_to_matrix


def point_triangle_distance(
    p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """Euclidean distance ``[...]`` from points ``p [...,3]`` to triangles ``(a, b, c) [...,3]``."""
    n = torch.cross(b - a, c - a, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True)
    d_plane = ((p - a) * n).sum(-1)
    q = p - d_plane[..., None] * n  # projection on the plane

    def inside(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (torch.cross(v - u, q - u, dim=-1) * n).sum(-1) >= 0

    in_tri = inside(a, b) & inside(b, c) & inside(c, a)

    def seg(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t = (((p - u) * (v - u)).sum(-1) / ((v - u) ** 2).sum(-1)).clamp(0, 1)
        return (p - (u + t[..., None] * (v - u))).norm(dim=-1)

    d_edge = torch.minimum(torch.minimum(seg(a, b), seg(b, c)), seg(c, a))
    return torch.where(in_tri, d_plane.abs(), d_edge)


def _setup(subdivisions: int = 2, ppf: int = 8, **cfg):
    head = synthetic_head(subdivisions)
    avatar = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=ppf, **cfg))
    init = init_from_mesh(head, ppf, torch.Generator().manual_seed(avatar.config.seed))
    return head, avatar, init


def _distance_to_deformed_triangles(head, init, verts: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    tri = head.faces[init["face_index"]]
    return point_triangle_distance(means, verts[:, tri[:, 0]], verts[:, tri[:, 1]], verts[:, tri[:, 2]])


def test_sampling_is_seeded_and_uniform():
    f1, b1 = sample_barycentric(50, 8, torch.Generator().manual_seed(3))
    f2, b2 = sample_barycentric(50, 8, torch.Generator().manual_seed(3))
    assert torch.equal(b1, b2) and torch.equal(f1, f2)
    assert f1.shape == (400,) and (b1 >= 0).all() and torch.allclose(b1.sum(-1), torch.ones(400))
    _, b = sample_barycentric(20000, 1, torch.Generator().manual_seed(0))
    assert torch.allclose(b.mean(0), torch.full((3,), 1 / 3), atol=0.01)  # uniform -> centroid mean


def test_init_properties():
    head, avatar, init = _setup()
    N = head.faces.shape[0] * 8
    assert avatar.num_points == N
    p = avatar.params
    shapes = {
        "means": (N, 3),
        "quats": (N, 4),
        "scales": (N, 3),
        "opacities": (N,),
        "albedo": (N, 3),
        "roughness": (N, 1),
        "f0": (N, 1),
        "colors": (N, 3),
        "shapedirs": (N, 3, head.num_shape),
        "exprdirs": (N, 3, head.num_expr),
        "posedirs": (N, 3, 36),
        "lbs_weights": (N, 6),
    }
    for k, s in shapes.items():
        assert tuple(p[k].shape) == s, k
    # every basis is the barycentric interpolation of the mesh's
    assert torch.allclose(
        p["exprdirs"], interpolate(head.exprdirs, head.faces, init["face_index"], init["bary"])
    )
    assert torch.allclose(
        p["lbs_weights"][:, :5], interpolate(head.lbs_weights, head.faces, init["face_index"], init["bary"])
    )
    assert (p["lbs_weights"][:, 5] == 0).all()
    # rotations aligned with the surface: the shortest axis is the face normal
    R, _, _ = face_frames(head.v_template, head.faces)
    normals = avatar.canonical().normals()[0]
    cos = (normals * R[init["face_index"], :, 2]).sum(-1)
    assert (cos > 1 - 1e-5).all()
    s = p["scales"].exp()
    assert (s[:, 2] < s[:, 0]).all() and torch.allclose(s[:, 0], s[:, 1])
    assert 1e-4 < s[:, 0].median() < 0.02  # nearest-neighbour distances of a 20 cm head, metres
    # materials in the paper's ranges
    assert torch.allclose(avatar.opacities, torch.full((N,), 0.1), atol=1e-6)
    r, f0 = avatar.roughness, avatar.f0
    assert (r >= 0.5).all() and (r <= 1.0).all() and (f0 >= 0.04).all() and (f0 <= 0.15).all()
    big = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=1, f0_max=0.8))
    big.params["f0"].data.fill_(50.0)
    assert torch.allclose(big.f0, torch.full_like(big.f0, 0.8))


def test_on_mesh_zero_pose_exact():
    head, avatar, init = _setup()
    g = torch.Generator().manual_seed(1)
    B = 3
    shape = torch.randn(B, head.num_shape, generator=g) * 2
    expr = torch.randn(B, head.num_expr, generator=g) * 2
    trans = torch.randn(B, 3, generator=g) * 0.1
    out = head.forward(shape, expr, None, trans)
    d = avatar.deform(shape, expr, None, trans)
    assert d.means.shape == (B, avatar.num_points, 3)
    dist = _distance_to_deformed_triangles(head, init, out.vertices, d.means)
    assert dist.max() < 1e-5
    ref = torch.stack([interpolate(v, head.faces, init["face_index"], init["bary"]) for v in out.vertices])
    assert (d.means - ref).norm(dim=-1).max() < 1e-5  # at the same barycentric position, too


def test_on_mesh_random_pose_within_half_mm():
    head, avatar, init = _setup(subdivisions=4, ppf=1)
    g = torch.Generator().manual_seed(2)
    B = 6
    shape = torch.randn(B, head.num_shape, generator=g)
    expr = torch.randn(B, head.num_expr, generator=g)
    axis = torch.nn.functional.normalize(torch.randn(B, 5, 3, generator=g), dim=-1)
    pose = axis * torch.rand(B, 5, 1, generator=g) * 0.3  # up to 0.3 rad per joint
    pose[0] = axis[0] * 0.3
    out = head.forward(shape, expr, pose, None)
    d = avatar.deform(shape, expr, pose, None)
    dist = _distance_to_deformed_triangles(head, init, out.vertices, d.means)
    assert dist.max() < 5e-4
    # the pose does move things (the test is not vacuous)
    rest = avatar.deform(shape, expr, None, None)
    assert (d.means - rest.means).norm(dim=-1).max() > 0.01


def test_pose_error_is_second_order():
    """Skinning the interpolated point vs interpolating skinned vertices: error ~ edge length^2."""
    errs = []
    for sub in (2, 3):
        head, avatar, init = _setup(subdivisions=sub, ppf=2, seed=5)
        pose = torch.zeros(1, 5, 3)
        pose[0, 2, 0] = 0.3  # jaw
        out = head.forward(pose=pose)
        ref = interpolate(out.vertices[0], head.faces, init["face_index"], init["bary"])
        errs.append((avatar.deform(pose=pose).means[0] - ref).norm(dim=-1).max().item())
    assert errs[1] < errs[0] / 2.5  # halving edges cuts the error ~4x (first order would be 2x)


def test_jaw_rotation_moves_only_jaw_weighted_points():
    head, avatar, _ = _setup()
    avatar.params["posedirs"].data.zero_()  # skinning only (pose correctives move everything)
    pose = torch.zeros(1, 5, 3)
    pose[0, 2] = torch.tensor([0.25, 0.05, 0.0])
    moved = (avatar.deform(pose=pose).means[0] - avatar.params["means"]).norm(dim=-1)
    w_jaw = normalized_weights(avatar.params["lbs_weights"])[:, 2]
    assert (w_jaw == 0).sum() > avatar.num_points // 2 and (w_jaw > 0.5).sum() > 20
    assert moved[w_jaw == 0].max() < 1e-7
    assert (moved[w_jaw > 0.5] > 1e-3).all()
    # rotation of each Gaussian is composed with the (jaw) skinning rotation
    g = avatar.deform(pose=pose)
    full_jaw = w_jaw > 0.999
    R_jaw = axis_angle_to_matrix(pose[0, 2])
    R0 = quat_to_matrix(avatar.params["quats"][full_jaw])
    assert torch.allclose(g.rotmats[0, full_jaw], R_jaw @ R0, atol=1e-5)


def test_batched_and_differentiable():
    head, avatar, _ = _setup(ppf=2)
    g = torch.Generator().manual_seed(4)
    B = 3
    expr = torch.randn(B, head.num_expr, generator=g, requires_grad=True)
    pose = (torch.randn(B, 5, 3, generator=g) * 0.1).requires_grad_()
    d = avatar.deform(None, expr, pose, torch.zeros(B, 3))
    for b in range(B):  # batch elements are independent deformations
        db = avatar.deform(None, expr[b : b + 1], pose[b : b + 1], torch.zeros(1, 3))
        assert torch.allclose(db.means[0], d.means[b], atol=1e-7)
        assert torch.allclose(db.quats[0], d.quats[b], atol=1e-6)
    loss = d.means.square().sum() + d.quats[..., 1:].square().sum()
    loss.backward()
    assert expr.grad.abs().sum() > 0 and pose.grad.abs().sum() > 0
    for k in ("means", "quats", "shapedirs", "exprdirs", "posedirs", "lbs_weights"):
        gr = avatar.params[k].grad
        assert gr is not None and torch.isfinite(gr).all(), k
    assert (
        avatar.params["exprdirs"].grad.abs().sum() > 0 and avatar.params["lbs_weights"].grad.abs().sum() > 0
    )
    with pytest.raises(ValueError):
        avatar.deform(expression=torch.zeros(1, head.num_expr + 1))


def test_static_column_and_empty_weights():
    head, avatar, _ = _setup(ppf=1)
    pose = torch.zeros(1, 5, 3)
    pose[0, 0] = torch.tensor([0.0, 0.4, 0.0])  # global rotation moves every skinned point
    w = avatar.params["lbs_weights"].data
    w[:10] = 0
    w[:5, 5] = 1.0  # static: follows no joint
    d = avatar.deform(pose=pose, translation=torch.tensor([[0.0, 0.0, 0.1]]))
    X = avatar.params["means"][:10]
    assert torch.allclose(d.means[0, :10], X + torch.tensor([0.0, 0.0, 0.1]), atol=1e-7)
    assert (d.means[0, 10:] - avatar.params["means"][10:] - torch.tensor([0, 0, 0.1])).norm(
        dim=-1
    ).min() > 1e-4


def test_normals_face_the_camera():
    _, avatar, _ = _setup(ppf=1)
    d = avatar.canonical()
    cams = torch.tensor([[0.0, 0.0, 1.0]])
    n = d.normals(cams)
    assert torch.allclose(n.norm(dim=-1), torch.ones(1, avatar.num_points), atol=1e-5)
    assert (((cams[:, None] - d.means) * n).sum(-1) >= 0).all()
    n_back = d.normals(torch.tensor([0.0, 0.0, -1.0]))
    front = d.means[0, :, 2] > 0.05
    assert torch.allclose(n_back[0, front], -n[0, front])
    # on the front of the head the normals point outward (+z)
    assert (n[0, front, 2] > 0.5).float().mean() > 0.95


def test_rotation_helpers():
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(500, 3, generator=g) * 1.5
    R = axis_angle_to_matrix(aa)
    q = matrix_to_quat(R)
    assert torch.allclose(quat_to_matrix(q), R, atol=2e-6) and (q[:, 0] >= 0).all()
    R2 = axis_angle_to_matrix(torch.randn(500, 3, generator=g))
    assert torch.allclose(quat_to_matrix(quat_multiply(q, matrix_to_quat(R2))), R @ R2, atol=3e-6)
    x = R.clone().requires_grad_()
    matrix_to_quat(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    eye = torch.eye(3).repeat(4, 1, 1).requires_grad_()
    matrix_to_quat(eye)[..., 1:].sum().backward()
    assert torch.isfinite(eye.grad).all()


def test_triangle_rig_ablation():
    head, avatar, init = _setup(ppf=4, rig="triangle")
    assert "binding" in avatar.params and "shapedirs" not in avatar.params
    assert not avatar.params["binding"].requires_grad
    assert "binding" not in avatar.lr_table()
    g = torch.Generator().manual_seed(7)
    expr = torch.randn(2, head.num_expr, generator=g)
    pose = torch.randn(2, 5, 3, generator=g) * 0.15
    rest = avatar.canonical()
    assert torch.allclose(
        rest.means[0], interpolate(head.v_template, head.faces, init["face_index"], init["bary"]), atol=1e-6
    )
    out = head.forward(None, expr, pose)
    d = avatar.deform(None, expr, pose)
    # stays in the plane of its triangle (under non-rigid motion its barycentric coordinates may drift)
    tri = head.faces[init["face_index"]]
    v = out.vertices
    n = torch.cross(v[:, tri[:, 1]] - v[:, tri[:, 0]], v[:, tri[:, 2]] - v[:, tri[:, 0]], dim=-1)
    n = torch.nn.functional.normalize(n, dim=-1)
    assert ((d.means - v[:, tri[:, 0]]) * n).sum(-1).abs().max() < 1e-6
    assert ((d.normals() * n).sum(-1).abs() > 1 - 1e-4).all()
    # a rigid motion of the whole head moves every point exactly with its triangle
    rigid = torch.zeros(1, 5, 3)
    rigid[0, 0] = torch.tensor([0.2, -0.3, 0.1])
    t = torch.tensor([[0.01, 0.02, 0.3]])
    out = head.forward(pose=rigid, translation=t)
    ref = interpolate(out.vertices[0], head.faces, init["face_index"], init["bary"])
    assert (avatar.deform(pose=rigid, translation=t).means[0] - ref).norm(dim=-1).max() < 1e-6


def test_frozen_ablation_and_learning_rates():
    _, avatar, _ = _setup(ppf=1, learn_bases=False, learn_weights=False)
    for k in ("shapedirs", "exprdirs", "posedirs", "lbs_weights"):
        assert not avatar.params[k].requires_grad
    table = avatar.lr_table(scene_scale=2.0)
    assert set(table) == {"means", "quats", "scales", "opacities", "albedo", "roughness", "f0", "colors"}
    assert table["means"] == pytest.approx(1e-3) and table["opacities"] == 0.05 and table["quats"] == 1e-3
    _, learn, _ = _setup(ppf=1)
    t2 = learn.lr_table()
    assert t2["shapedirs"] == 1e-6 and t2["lbs_weights"] == 1e-4 and t2["albedo"] == 5e-3
    opt = learn.make_optimizer()
    assert {g["name"] for g in opt.param_groups} == set(t2) and opt.defaults["eps"] == 1e-15
    assert position_lr(0, 100) == pytest.approx(5e-4) and position_lr(100, 100) == pytest.approx(5e-6)
    assert position_lr(50, 100, LearningRates(), 2.0) == pytest.approx(2 * 5e-5)


def test_open_head_on_mesh():
    try:
        import anny  # noqa: F401

        from hravatar.head import load_head_model
    except ImportError:
        pytest.skip("the open head model (anny / hravatar.head.load_head_model) is not available")
    head = load_head_model("open")
    avatar = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=1, shape_dims=20))
    init = init_from_mesh(head, 1, torch.Generator().manual_seed(0), shape_dims=20)
    g = torch.Generator().manual_seed(0)
    B = 4
    expr = torch.rand(B, head.num_expr, generator=g) * 0.5
    axis = torch.nn.functional.normalize(torch.randn(B, 5, 3, generator=g), dim=-1)
    pose = axis * torch.rand(B, 5, 1, generator=g) * 0.3  # random poses up to 0.3 rad per joint
    shape = torch.randn(B, 20, generator=g)
    for P, tol in ((None, 1e-5), (pose, 5e-4)):
        out = head.forward(shape, expr, P)
        d = avatar.deform(shape, expr, P)
        assert _distance_to_deformed_triangles(head, init, out.vertices, d.means).max() < tol
