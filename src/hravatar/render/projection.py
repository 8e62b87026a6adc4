"""Projection of 3D Gaussians to screen-space 2D Gaussians (pure PyTorch, differentiable).

Follows gsplat's ``fully_fused_projection`` (pinhole, "classic" mode) so that every backend
shares the same 2D inputs: EWA splatting with the perspective Jacobian (camera-space x/y clamped
to 1.3x the field of view as gsplat does), ``eps2d`` added to the 2D covariance, and
opacity-aware per-axis radii ``ceil(extend * sqrt(cov2d_ii))`` with
``extend = min(3.33, sqrt(2 ln(255 * opacity)))`` (the bounding box of the region where
``opacity * G >= 1/255``). Gaussians closer than ``near_plane``, farther than ``far_plane``,
with opacity below 1/255 or wholly off screen get radii 0 and are skipped by the rasterizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hravatar.geometry.rotations import quat_to_matrix

#: gsplat's constants (``ALPHA_THRESHOLD``, the alpha clamp, early-stop transmittance, extent cap).
ALPHA_THRESHOLD = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
GAUSSIAN_EXTEND = 3.33
TILE_SIZE = 16


@dataclass
class Projected:
    """Screen-space Gaussians for C cameras (all ``[C,N,...]``).

    Attributes:
        means2d: ``[C,N,2]`` pixel coordinates of the centres (pixel centres at +0.5).
        conics: ``[C,N,3]`` upper triangle ``(a, b, c)`` of the inverse 2D covariance, so that
            ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` (pixels^-2).
        depths: ``[C,N]`` camera-frame z (metres).
        opacities: ``[C,N]`` opacities (broadcast from ``[N]``).
        radii: ``[C,N,2]`` int32 half extents in pixels along x and y; 0 = culled.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    opacities: Tensor
    radii: Tensor


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """World-frame 3D covariances ``[N,3,3] = R S S R^T`` (metres^2).

    ``quats [N,4]`` (w,x,y,z), ``scales [N,3]`` linear.
    """
    m = quat_to_matrix(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
) -> Projected:
    """Project N world-frame Gaussians into C cameras (differentiable in all float inputs).

    Args:
        means: ``[N,3]`` centres (world, metres). quats: ``[N,4]`` w,x,y,z. scales: ``[N,3]`` linear
        std-devs (metres). opacities: ``[N]`` in [0,1]. viewmats: ``[C,4,4]`` world-to-camera
        (OpenCV). Ks: ``[C,3,3]`` pixel intrinsics. width, height: image size in pixels.

    Returns:
        :class:`Projected`. Culled Gaussians have radii 0 and zeroed (finite) 2D attributes.
    """
    C, N = viewmats.shape[0], means.shape[0]
    rv = viewmats[:, :3, :3]  # [C,3,3]
    tv = viewmats[:, :3, 3]  # [C,3]
    means_c = torch.einsum("cij,nj->cni", rv, means) + tv[:, None, :]  # [C,N,3]
    cov = covariances(quats, scales)  # [N,3,3]
    cov_c = torch.einsum("cij,njk,clk->cnil", rv, cov, rv)  # [C,N,3,3]

    tz = means_c[..., 2]
    in_depth = (tz >= near_plane) & (tz <= far_plane)
    tz = torch.where(in_depth, tz, torch.ones_like(tz))  # keeps culled entries finite (and grads 0)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    x, y = means_c[..., 0], means_c[..., 1]
    u, v = x / tz, y / tz
    tx = tz * torch.minimum(torch.maximum(u, -lim_x_neg), lim_x_pos)
    ty = tz * torch.minimum(torch.maximum(v, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(tz)
    jac = torch.stack([fx / tz, zero, -fx * tx / (tz * tz), zero, fy / tz, -fy * ty / (tz * tz)], dim=-1)
    jac = jac.reshape(C, N, 2, 3)
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)  # [C,N,2,2]
    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    good_det = det > 0
    det_s = torch.where(good_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)
    means2d = torch.stack([fx * u + cx, fy * v + cy], dim=-1)

    with torch.no_grad():
        op = opacities.detach().to(a.dtype).expand(C, N)
        extend = torch.sqrt(2.0 * torch.log(op.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=GAUSSIAN_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp(min=0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp(min=0)))
        m2 = means2d.detach()
        keep = in_depth & good_det & (op >= ALPHA_THRESHOLD) & ((rx > radius_clip) | (ry > radius_clip))
        keep &= (m2[..., 0] + rx > 0) & (m2[..., 0] - rx < width)
        keep &= (m2[..., 1] + ry > 0) & (m2[..., 1] - ry < height)
        keep &= torch.isfinite(m2).all(-1) & torch.isfinite(conics.detach()).all(-1)
        radii = torch.stack([rx, ry], dim=-1).masked_fill(~keep[..., None], 0).to(torch.int32)

    k3 = keep[..., None]
    means2d = torch.where(k3, means2d, torch.zeros_like(means2d))
    conics = torch.where(k3, conics, torch.zeros_like(conics))
    depths = torch.where(keep, means_c[..., 2], torch.zeros_like(tz))
    return Projected(means2d, conics, depths, opacities.expand(C, N), radii)


def tile_bounds(
    means2d: Tensor, radii: Tensor, width: int, height: int, tile_size: int = TILE_SIZE
) -> Tensor:
    """Tile rectangle ``[...,4] = (x0, y0, x1, y1)`` (half-open, in tiles) each Gaussian touches.

    Same rule as gsplat's ``isect_tiles``: ``floor((m - r) / t)`` to ``ceil((m + r) / t)``,
    clamped to the tile grid; culled Gaussians (radii 0) get an empty rectangle.
    """
    tw = (width + tile_size - 1) // tile_size
    th = (height + tile_size - 1) // tile_size
    m = means2d.detach().float() / tile_size
    r = radii.float() / tile_size
    lo = torch.floor(m - r).to(torch.int32)
    hi = torch.ceil(m + r).to(torch.int32)
    x0 = lo[..., 0].clamp(0, tw)
    y0 = lo[..., 1].clamp(0, th)
    x1 = hi[..., 0].clamp(0, tw)
    y1 = hi[..., 1].clamp(0, th)
    alive = (radii > 0).all(-1)
    x1 = torch.where(alive, x1, x0)
    y1 = torch.where(alive, y1, y0)
    return torch.stack([x0, y0, x1, y1], dim=-1)
