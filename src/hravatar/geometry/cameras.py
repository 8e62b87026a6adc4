"""Pinhole camera maths in the OpenCV / gsplat convention.

* ``viewmat [4,4]`` maps world points to the camera frame (world-to-camera): camera +x points
  right in the image, +y down, +z forward (into the scene).
* ``K [3,3]`` holds pixel intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; pixel ``(i, j)``
  covers ``[i, i+1) x [j, j+1)`` so its centre is at ``(i + 0.5, j + 0.5)`` and the image centre
  is at ``(width / 2, height / 2)``.

The head-model frame (metres, +x subject's left, +y up, +z out of the face) is the usual world
frame; :func:`orbit_cameras` puts azimuth 0 in front of the face (on +z).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "camera_centers",
    "intrinsics",
    "look_at",
    "orbit_cameras",
    "pixel_rays",
    "project_points",
    "ray_directions",
    "ray_directions_at",
]


def _vec(x: Tensor | Sequence[float], dtype: torch.dtype | None, device: torch.device | str | None) -> Tensor:
    if isinstance(x, Tensor):
        dt = dtype or (x.dtype if x.is_floating_point() else torch.float32)
        return x.to(dtype=dt, device=device or x.device)
    return torch.as_tensor(x, dtype=dtype or torch.float32, device=device)


def look_at(
    eye: Tensor | Sequence[float],
    target: Tensor | Sequence[float] = (0.0, 0.0, 0.0),
    up: Tensor | Sequence[float] = (0.0, 1.0, 0.0),
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """World-to-camera matrix of a camera at ``eye`` looking at ``target`` (OpenCV axes).

    Args:
        eye: ``[...,3]`` camera centre in world coordinates (metres).
        target: ``[...,3]`` point the optical axis (+z) passes through.
        up: ``[...,3]`` world direction that appears *up* in the image (camera -y). Must not be
            parallel to ``target - eye``.
        dtype, device: of the result (default: those of ``eye`` if a tensor, else float32/CPU).

    Returns:
        ``[...,4,4]`` viewmat with rows ``[right, down, forward]`` and ``t = -R @ eye``.
    """
    eye = _vec(eye, dtype, device)
    target = _vec(target, eye.dtype, eye.device)
    up = _vec(up, eye.dtype, eye.device)
    eye, target, up = torch.broadcast_tensors(eye, target, up)
    fwd = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, up, dim=-1), dim=-1)
    down = torch.linalg.cross(fwd, right, dim=-1)
    rot = torch.stack([right, down, fwd], dim=-2)  # [...,3,3]
    out = torch.zeros(eye.shape[:-1] + (4, 4), dtype=eye.dtype, device=eye.device)
    out[..., :3, :3] = rot
    out[..., :3, 3] = -(rot @ eye.unsqueeze(-1)).squeeze(-1)
    out[..., 3, 3] = 1.0
    return out


def intrinsics(
    fov_deg: float | None = None,
    width: int | None = None,
    height: int | None = None,
    *,
    focal: float | None = None,
    fov_axis: str = "x",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Pixel intrinsics ``K [3,3]`` of a pinhole camera with square pixels.

    Give either ``fov_deg`` (full field of view in degrees along ``fov_axis``: ``"x"`` = width,
    ``"y"`` = height) or ``focal`` (in pixels). The principal point is the image centre
    ``(width / 2, height / 2)`` (pixel centres at +0.5).

    Example: ``intrinsics(30, 512, 512)`` or ``intrinsics(width=512, height=512, focal=1200.0)``.
    """
    if width is None or height is None:
        raise ValueError("intrinsics: width and height are required")
    if (fov_deg is None) == (focal is None):
        raise ValueError("intrinsics: give exactly one of fov_deg and focal")
    if focal is None:
        if not 0.0 < float(fov_deg) < 180.0:
            raise ValueError(f"intrinsics: fov_deg must be in (0, 180), got {fov_deg}")
        extent = {"x": width, "y": height}[fov_axis]
        focal = 0.5 * extent / math.tan(math.radians(float(fov_deg)) / 2.0)
    return torch.tensor(
        [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device
    )


def orbit_cameras(
    n: int,
    radius: float,
    elevation_deg: float = 0.0,
    *,
    target: Sequence[float] | Tensor = (0.0, 0.0, 0.0),
    start_azimuth_deg: float = 0.0,
    sweep_deg: float = 360.0,
    up: Sequence[float] = (0.0, 1.0, 0.0),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` cameras on a horizontal circle around ``target``, all looking at it.

    Azimuth 0 is on +z (in front of the face in the head-model frame) and increases towards +x
    (the subject's left); elevation is measured up from the horizontal (+y) plane. With
    ``sweep_deg=360`` the last camera stops one step short of the first (a closed loop); with any
    other sweep the cameras span ``[start, start + sweep]`` inclusive.

    Returns:
        ``[n,4,4]`` world-to-camera viewmats (OpenCV axes, image up = world ``up``).
    """
    if n <= 0:
        return torch.zeros(0, 4, 4, dtype=dtype, device=device)
    closed = abs(sweep_deg - 360.0) < 1e-9
    steps = n if closed else max(n - 1, 1)
    az = torch.tensor(
        [math.radians(start_azimuth_deg + sweep_deg * i / steps) for i in range(n)], dtype=torch.float64
    )
    el = math.radians(elevation_deg)
    eye = torch.stack(
        [
            radius * math.cos(el) * torch.sin(az),
            torch.full_like(az, radius * math.sin(el)),
            radius * math.cos(el) * torch.cos(az),
        ],
        dim=-1,
    )
    tgt = _vec(target, torch.float64, "cpu")
    return look_at(eye + tgt, tgt, up, dtype=torch.float64).to(dtype=dtype, device=device)


def project_points(points: Tensor, viewmat: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points to pixels.

    Args:
        points: ``[...,N,3]`` world points (metres).
        viewmat: ``[...,4,4]`` world-to-camera (broadcast against the leading dims of ``points``).
        K: ``[...,3,3]`` pixel intrinsics.

    Returns:
        ``(uv [...,N,2], depth [...,N])``: pixel coordinates (pixel centres at +0.5) and camera-frame
        z in metres. Points with ``depth <= 0`` are behind the camera; their ``uv`` is meaningless.
    """
    cam = points @ viewmat[..., :3, :3].transpose(-1, -2) + viewmat[..., None, :3, 3]
    z = cam[..., 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    x = cam[..., 0] / zs
    y = cam[..., 1] / zs
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    skew = K[..., 0, 1, None]
    uv = torch.stack([fx * x + skew * y + cx, fy * y + cy], dim=-1)
    return uv, z


def camera_centers(viewmats: Tensor) -> Tensor:
    """Camera centres ``[...,3]`` in world coordinates of world-to-camera ``viewmats [...,4,4]``."""
    rot = viewmats[..., :3, :3]
    return -(rot.transpose(-1, -2) @ viewmats[..., :3, 3:4]).squeeze(-1)


def pixel_rays(Ks: Tensor, height: int, width: int, dtype: torch.dtype | None = None) -> Tensor:
    """Camera-frame rays ``[C,H,W,3]`` with ``z = 1`` through the pixel centres (+0.5) of ``Ks [C,3,3]``
    (``dtype``: of the pixel grid and the inverse intrinsics; default ``Ks``'s)."""
    dev, dt = Ks.device, dtype or Ks.dtype
    ys = torch.arange(height, device=dev, dtype=dt) + 0.5
    xs = torch.arange(width, device=dev, dtype=dt) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pix = torch.stack([xx, yy, torch.ones_like(xx)], -1)  # [H, W, 3]
    return torch.einsum("cij,hwj->chwi", torch.linalg.inv(Ks.to(dt)), pix)


def ray_directions(viewmats: Tensor, Ks: Tensor, height: int, width: int) -> Tensor:
    """World-space unit directions ``[C,H,W,3]`` from the camera centre through each pixel centre.

    ``viewmats [C,4,4]`` world-to-camera (OpenCV: +z forward, +y down), ``Ks [C,3,3]`` in pixels,
    pixel centres at +0.5; computed in ``viewmats``' dtype.
    """
    d_cam = pixel_rays(Ks.to(viewmats.device), height, width, viewmats.dtype)
    rot = viewmats[:, :3, :3]  # world -> camera
    d_world = torch.einsum("cji,chwj->chwi", rot, d_cam)  # R^T d
    return torch.nn.functional.normalize(d_world, dim=-1)


def ray_directions_at(viewmats: Tensor, Ks: Tensor, width: int, height: int, flat_idx: Tensor) -> Tensor:
    """:func:`ray_directions` at flat pixel indices ``c*H*W + y*W + x`` only: ``[P,3]`` world unit vectors."""
    hw = height * width
    cam = torch.div(flat_idx, hw, rounding_mode="floor")
    rem = flat_idx - cam * hw
    y = torch.div(rem, width, rounding_mode="floor")
    x = rem - y * width
    dt = viewmats.dtype
    pix = torch.stack([x.to(dt) + 0.5, y.to(dt) + 0.5, torch.ones_like(x, dtype=dt)], -1)  # [P,3]
    kinv = torch.linalg.inv(Ks.to(dt))  # [C,3,3]
    d_cam = torch.einsum("pij,pj->pi", kinv[cam], pix)
    d_world = torch.einsum("pji,pj->pi", viewmats[cam, :3, :3], d_cam)  # R^T d
    return torch.nn.functional.normalize(d_world, dim=-1)
