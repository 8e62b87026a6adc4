"""Initialisation of the Gaussian point set on a head model's mesh.

Points are sampled with uniform barycentric weights on every face of the head mesh (the mouth
interior and teeth included when the model has them: they are ordinary faces of the mesh), and
every per-vertex quantity (template position, shape / expression / pose-corrective bases,
skinning weights) is interpolated with the same barycentric weights, so right after
initialisation the avatar deforms like the mesh. Scales come from nearest-neighbour distances
(as in 3DGS); rotations align the Gaussian's local z axis (the shortest one) with the face normal.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hravatar.geometry.rotations import matrix_to_quat
from hravatar.head.model import HeadModel


def sample_barycentric(
    num_faces: int, points_per_face: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Uniform samples on triangles.

    Args:
        num_faces: F.
        points_per_face: K samples per face.
        generator: CPU ``torch.Generator`` for reproducibility.
    Returns:
        ``(face_index [F*K] int64, bary [F*K,3] float32)``; rows of ``bary`` are >= 0 and sum to 1,
        uniformly distributed over the triangle (square-root-free reflection method).
    """
    n = num_faces * points_per_face
    uv = torch.rand(n, 2, generator=generator)
    flip = uv.sum(-1) > 1
    uv[flip] = 1 - uv[flip]
    bary = torch.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], -1)
    face_index = torch.arange(num_faces).repeat_interleave(points_per_face)
    return face_index, bary


def interpolate(per_vertex: Tensor, faces: Tensor, face_index: Tensor, bary: Tensor) -> Tensor:
    """Barycentric interpolation of ``per_vertex [V,...]`` at samples -> ``[N,...]``.

    Args:
        per_vertex: ``[V,...]`` any per-vertex tensor.
        faces: ``[F,3]`` int64; face_index: ``[N]``; bary: ``[N,3]``.
    """
    tri = faces[face_index.to(faces.device)]  # [N,3]
    b = bary.to(per_vertex)
    shape = (-1, *([1] * (per_vertex.dim() - 1)))
    out = per_vertex[tri[:, 0]] * b[:, 0].reshape(shape)
    out = out + per_vertex[tri[:, 1]] * b[:, 1].reshape(shape)
    return out + per_vertex[tri[:, 2]] * b[:, 2].reshape(shape)


def face_frames(verts: Tensor, faces: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """Orthonormal frames of triangles.

    Args:
        verts: ``[...,V,3]``; faces: ``[F,3]``.
    Returns:
        ``(R [...,F,3,3], centroid [...,F,3], edge_len [...,F])``: columns of ``R`` are the unit
        first edge ``v1 - v0``, the in-plane perpendicular ``n x e``, and the unit normal ``n``
        (right-handed, normal outward for counter-clockwise faces); ``edge_len = |v1 - v0|``.
    """
    v0, v1, v2 = verts[..., faces[:, 0], :], verts[..., faces[:, 1], :], verts[..., faces[:, 2], :]
    e0 = v1 - v0
    n = torch.cross(e0, v2 - v0, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    el = e0.norm(dim=-1)
    t = e0 / el[..., None].clamp_min(eps)
    b = torch.cross(n, t, dim=-1)
    R = torch.stack([t, b, n], -1)
    return R, (v0 + v1 + v2) / 3, el


def knn_scales(points: Tensor, k: int = 3, min_scale: float = 1e-6) -> Tensor:
    """3DGS-style isotropic size: ``sqrt(mean squared distance to the k nearest neighbours)``.

    Args:
        points: ``[N,3]`` (metres). k: neighbours (excluding the point itself).
    Returns:
        ``[N]`` distances (metres, same device/dtype as ``points``), at least ``min_scale``.
    """
    from scipy.spatial import cKDTree

    p = points.detach().cpu().double().numpy()
    k_eff = min(k, max(len(p) - 1, 1))
    d, _ = cKDTree(p).query(p, k=k_eff + 1)
    d = np.asarray(d).reshape(len(p), -1)[:, 1:]
    s = np.sqrt((d * d).mean(-1))
    return torch.from_numpy(s).to(points).clamp_min(min_scale)


def init_from_mesh(
    head: HeadModel,
    points_per_face: int = 8,
    generator: torch.Generator | None = None,
    normal_scale_ratio: float = 0.2,
    shape_dims: int | None = None,
) -> dict[str, Tensor]:
    """Canonical geometry and bases of points sampled on ``head``'s template mesh.

    Args:
        head: the head model (its template mesh includes mouth interior / teeth when it has them).
        points_per_face: samples per triangle (the paper: 8).
        generator: seeded CPU generator.
        normal_scale_ratio: scale along the normal relative to the in-plane scale (flat Gaussians
            whose shortest axis is the surface normal).
        shape_dims: keep only the first ``shape_dims`` shape components (``None``: all).
    Returns:
        dict with ``means [N,3]``, ``quats [N,4]`` (unit, w, x, y, z), ``log_scales [N,3]``,
        ``shapedirs [N,3,S]``, ``exprdirs [N,3,E]``, ``posedirs [N,3,36]``, ``lbs_weights [N,6]``
        (5 joints + static column at 0), ``face_index [N]`` int64, ``bary [N,3]``.
    """
    faces = head.faces
    fi, bary = sample_barycentric(int(faces.shape[0]), points_per_face, generator)
    fi, bary = fi.to(faces.device), bary.to(head.v_template)
    S = head.num_shape if shape_dims is None else min(shape_dims, head.num_shape)
    means = interpolate(head.v_template, faces, fi, bary)
    R, _, _ = face_frames(head.v_template, faces)
    R = R[fi]
    d = knn_scales(means)
    log_scales = torch.stack([d, d, d * normal_scale_ratio], -1).log()
    w = interpolate(head.lbs_weights, faces, fi, bary)
    lbs = torch.cat([w, torch.zeros_like(w[:, :1])], -1)
    return {
        "means": means,
        "quats": matrix_to_quat(R),
        "log_scales": log_scales,
        "shapedirs": interpolate(head.shapedirs[..., :S], faces, fi, bary),
        "exprdirs": interpolate(head.exprdirs, faces, fi, bary),
        "posedirs": interpolate(head.posedirs, faces, fi, bary),
        "lbs_weights": lbs,
        "face_index": fi,
        "bary": bary,
    }
