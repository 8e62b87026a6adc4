"""Normals from a rendered depth map by finite differences (for the normal-consistency loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hravatar.geometry.cameras import pixel_rays

Tensor = torch.Tensor

__all__ = ["depth_to_points", "normals_from_depth"]


def depth_to_points(depth: Tensor, Ks: Tensor) -> Tensor:
    """Back-project z-depth ``[C,H,W,1]`` to camera-frame points ``[C,H,W,3]`` (OpenCV, pixel centres)."""
    _, h, w, _ = depth.shape
    rays = pixel_rays(Ks.to(depth.device), h, w, depth.dtype)  # z = 1
    return rays * depth


def normals_from_depth(
    depth: Tensor,
    Ks: Tensor,
    viewmats: Tensor,
    alpha: Tensor | None = None,
    alpha_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """World-space unit normals ``[C,H,W,3]`` and a validity mask ``[C,H,W,1]`` (bool) from depth.

    Central differences of the back-projected points, ``n = normalize(dP/dy x dP/dx)`` turned to
    face the camera, then rotated to world (``R^T n``).

    Args:
        depth: camera z-depth ``[C,H,W,1]`` (metres, *not* alpha-premultiplied: divide a
            rasterizer's accumulated depth by alpha first); 0 or less = no surface.
        Ks: ``[C,3,3]`` intrinsics (pixels); ``viewmats``: ``[C,4,4]`` world-to-camera.
        alpha: optional ``[C,H,W,1]``; pixels whose 4-neighbourhood has alpha below
            ``alpha_threshold`` are invalid.
    Returns:
        ``(normals, valid)``: invalid pixels (image border, missing neighbours) have normal 0.
        Differentiable w.r.t. ``depth``.
    """
    p = depth_to_points(depth, Ks)  # [C,H,W,3]
    pp = F.pad(p.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)
    dx = pp[:, 1:-1, 2:] - pp[:, 1:-1, :-2]
    dy = pp[:, 2:, 1:-1] - pp[:, :-2, 1:-1]
    n = torch.linalg.cross(dy, dx, dim=-1)
    n = F.normalize(n, dim=-1, eps=1e-12)
    flip = (n * p).sum(-1, keepdim=True) > 0  # should point back toward the camera (origin)
    n = torch.where(flip, -n, n)
    ok = depth > 0
    if alpha is not None:
        ok = ok & (alpha >= alpha_threshold)
    okp = F.pad(ok.permute(0, 3, 1, 2).float(), (1, 1, 1, 1), value=0.0).permute(0, 2, 3, 1) > 0.5
    valid = ok & okp[:, 1:-1, 2:] & okp[:, 1:-1, :-2] & okp[:, 2:, 1:-1] & okp[:, :-2, 1:-1]
    rot = viewmats[:, :3, :3].to(n.dtype)
    nw = torch.einsum("cji,chwj->chwi", rot, n)
    return nw * valid, valid
