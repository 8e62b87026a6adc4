"""A small synthetic :class:`~hravatar.head.model.HeadModel` for tests (no asset needed).

An ellipsoid "head" (a subdivided icosahedron, about 15 x 20 x 18 cm) with FLAME's five joints,
a jaw region at the lower front, eye regions, a neck region, random shape / expression /
pose-corrective bases and smooth skinning weights that are exactly zero outside each region.
Others may reuse it: ``synthetic_head(subdivisions=2, seed=0)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hravatar.head.model import HeadModel

#: Joint positions of the synthetic head (metres): global, neck, jaw, eye_l, eye_r.
SYNTHETIC_JOINTS = (
    (0.0, -0.09, -0.01),
    (0.0, -0.06, -0.01),
    (0.0, -0.01, 0.01),
    (0.03, 0.02, 0.06),
    (-0.03, 0.02, 0.06),
)
#: Ellipsoid semi-axes (metres).
SYNTHETIC_RADII = (0.075, 0.1, 0.09)


def icosphere(subdivisions: int = 2) -> tuple[Tensor, Tensor]:
    """Unit icosphere: ``(vertices [V,3] float64, faces [F,3] int64)``, faces counter-clockwise
    seen from outside. ``F = 20 * 4**subdivisions``."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [
        (-1, t, 0),
        (1, t, 0),
        (-1, -t, 0),
        (1, -t, 0),
        (0, -1, t),
        (0, 1, t),
        (0, -1, -t),
        (0, 1, -t),
        (t, 0, -1),
        (t, 0, 1),
        (-t, 0, -1),
        (-t, 0, 1),
    ]
    faces = [
        (0, 11, 5),
        (0, 5, 1),
        (0, 1, 7),
        (0, 7, 10),
        (0, 10, 11),
        (1, 5, 9),
        (5, 11, 4),
        (11, 10, 2),
        (10, 7, 6),
        (7, 1, 8),
        (3, 9, 4),
        (3, 4, 2),
        (3, 2, 6),
        (3, 6, 8),
        (3, 8, 9),
        (4, 9, 5),
        (2, 4, 11),
        (6, 2, 10),
        (8, 6, 7),
        (9, 8, 1),
    ]
    v = [tuple(c / math.sqrt(sum(x * x for x in p)) for c in p) for p in verts]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int, cache: dict[tuple[int, int], int] = cache) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                p = [(x + y) / 2 for x, y in zip(v[a], v[b], strict=True)]
                n = math.sqrt(sum(x * x for x in p))
                v.append(tuple(x / n for x in p))
                cache[key] = len(v) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return torch.tensor(v, dtype=torch.float64), torch.tensor(faces, dtype=torch.long)


def _affine_regressor(verts: Tensor, targets: Tensor) -> Tensor:
    """Minimum-norm ``[J,V]`` rows with ``reg @ verts = targets`` and rows summing to 1."""
    M = torch.cat([verts.T, torch.ones(1, verts.shape[0], dtype=verts.dtype)], 0)  # [4,V]
    rhs = torch.cat([targets.T, torch.ones(1, targets.shape[0], dtype=verts.dtype)], 0)  # [4,J]
    return (torch.linalg.pinv(M) @ rhs).T


def synthetic_head(
    subdivisions: int = 2,
    num_shape: int = 6,
    num_expr: int = 5,
    seed: int = 0,
    basis_scale: float = 3e-3,
    pose_basis_scale: float = 1e-3,
) -> HeadModel:
    """A small, fully specified head model for tests.

    Args:
        subdivisions: icosphere subdivisions (2 -> 162 vertices / 320 faces, 3 -> 642 / 1280).
        num_shape, num_expr: basis sizes (smooth random fields, about ``basis_scale`` metres per unit).
        seed: seed of the bases.
        pose_basis_scale: scale of the random pose-corrective basis (0 for none).
    Returns:
        A :class:`HeadModel` named ``"synthetic"`` (float32, metres, +y up, +z out of the face)
        whose jaw weights are non-zero only at the lower front, eye weights only around the eyes.
    """
    g = torch.Generator().manual_seed(seed)
    unit, faces = icosphere(subdivisions)
    v = unit * torch.tensor(SYNTHETIC_RADII, dtype=torch.float64)
    x, y, z = v.unbind(-1)
    joints = torch.tensor(SYNTHETIC_JOINTS, dtype=torch.float64)

    def ramp(t: Tensor) -> Tensor:
        return t.clamp(0.0, 1.0)

    w_global = ramp((-0.07 - y) / 0.04)
    w_jaw = ramp((-0.02 - y) / 0.04) * ramp(z / 0.05) * (1 - w_global)
    eye_surf = joints[3:] + torch.tensor([0.0, 0.0, 0.03], dtype=torch.float64)
    w_eyes = [ramp(1.0 - (v - e).norm(dim=-1) / 0.035) for e in eye_surf]
    w = torch.stack([w_global, torch.zeros_like(x), w_jaw, *w_eyes], -1)
    over = w.sum(-1, keepdim=True).clamp_min(1.0)
    w = w / over
    w[:, 1] = 1.0 - w.sum(-1)
    regions = {
        "face": (z > 0.02) & (y > -0.09),
        "scalp": z <= 0.02,
        "neck": y <= -0.07,
        "eyes": (w[:, 3] + w[:, 4]) > 0,
        "lips": torch.zeros_like(x, dtype=torch.bool),
        "teeth": torch.zeros_like(x, dtype=torch.bool),
        "mouth_interior": torch.zeros_like(x, dtype=torch.bool),
    }
    # smooth random bases: random combinations of low-frequency functions of the position
    feats = torch.stack(
        [
            *unit.unbind(-1),
            *(unit[:, [0, 1, 2, 0, 1, 2]] * unit[:, [0, 1, 2, 1, 2, 0]]).unbind(-1),
            *torch.sin(3 * unit).unbind(-1),
            *torch.cos(3 * unit).unbind(-1),
        ],
        -1,
    )  # [V,15]
    feats = (feats - feats.mean(0)) / feats.std(0)

    def smooth_basis(k: int, scale: float) -> Tensor:
        coef = torch.randn(feats.shape[1], 3 * k, generator=g, dtype=torch.float64) / feats.shape[1] ** 0.5
        return (feats @ coef).reshape(-1, 3, k) * scale

    shapedirs = smooth_basis(num_shape, basis_scale)
    exprdirs = smooth_basis(num_expr, basis_scale)
    posedirs = smooth_basis(36, pose_basis_scale)
    return HeadModel(
        name="synthetic",
        v_template=v.float(),
        faces=faces,
        shapedirs=shapedirs.float(),
        exprdirs=exprdirs.float(),
        expr_names=[f"exp_{i}" for i in range(num_expr)],
        posedirs=posedirs.float(),
        j_regressor=_affine_regressor(v, joints).float(),
        lbs_weights=w.float(),
        regions=regions,
        meta={"source": "helpers.synthetic_head.synthetic_head", "seed": seed},
    )
