"""Ablation: Gaussians rigged to mesh triangles (GaussianAvatars style).

Each point is bound to one triangle of the head mesh (``binding [N]``). Its parameters live in
that triangle's local frame: the frame ``R_f`` (columns: unit first edge, in-plane perpendicular,
normal; :func:`hravatar.gaussians.init.face_frames`), origin at the centroid ``c_f`` and a scale
``k_f`` = mean of the first edge's length and the triangle's height over it. With the mesh posed
by the head model itself (its bases and skinning, not learnable here)::

    mean = k_f R_f mu + c_f,   rotation = R_f r,   scale = k_f exp(s)

so the point follows its triangle rigidly up to the triangle's isotropic stretch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hravatar.gaussians.init import face_frames
from hravatar.geometry.rotations import matrix_to_quat, quat_multiply


def triangle_frames(verts: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Frames of (posed) triangles.

    Args:
        verts: ``[...,V,3]`` vertices (metres); faces: ``[F,3]``.
    Returns:
        ``(R [...,F,3,3], centroid [...,F,3], k [...,F])`` with ``k`` the triangle scale (metres).
    """
    R, c, el = face_frames(verts, faces)
    v0, v1, v2 = verts[..., faces[:, 0], :], verts[..., faces[:, 1], :], verts[..., faces[:, 2], :]
    area2 = torch.cross(v1 - v0, v2 - v0, dim=-1).norm(dim=-1)
    height = area2 / el.clamp_min(1e-12)
    return R, c, (el + height) / 2


def to_local(
    verts: Tensor, faces: Tensor, binding: Tensor, means: Tensor, quats: Tensor, log_scales: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """World (canonical) Gaussians -> parameters in their triangles' local frames.

    Args:
        verts: ``[V,3]`` the mesh the points were placed on; faces ``[F,3]``; binding ``[N]``.
        means ``[N,3]``, quats ``[N,4]`` (unit), log_scales ``[N,3]`` in the world frame.
    Returns:
        ``(local_means [N,3], local_quats [N,4], local_log_scales [N,3])``.
    """
    R, c, k = triangle_frames(verts, faces)
    R, c, k = R[binding], c[binding], k[binding]
    mu = (R.transpose(-1, -2) @ (means - c)[..., None])[..., 0] / k[:, None]
    q_inv_frame = matrix_to_quat(R.transpose(-1, -2))
    r = quat_multiply(q_inv_frame, quats)
    return mu, r, log_scales - k.log()[:, None]


def rigged_deform(
    posed_verts: Tensor,
    faces: Tensor,
    binding: Tensor,
    local_means: Tensor,
    local_quats: Tensor,
    local_log_scales: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Posed Gaussians from a posed mesh.

    Args:
        posed_verts: ``[B,V,3]`` posed mesh (world frame, metres); faces ``[F,3]``; binding ``[N]``.
        local_means ``[N,3]``, local_quats ``[N,4]`` (raw), local_log_scales ``[N,3]``.
    Returns:
        ``(means [B,N,3], quats [B,N,4] unit, scales [B,N,3] linear)``.
    """
    R, c, k = triangle_frames(posed_verts, faces)
    R, c, k = R[:, binding], c[:, binding], k[:, binding]  # [B,N,...]
    means = k[..., None] * (R @ local_means[None, ..., None])[..., 0] + c
    lq = local_quats / local_quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = quat_multiply(matrix_to_quat(R), lq[None])
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return means, q, k[..., None] * local_log_scales.exp()[None]
