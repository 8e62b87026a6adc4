"""Rotations: axis-angle, unit quaternions (w, x, y, z) and 3x3 matrices (pure PyTorch, differentiable).

The one implementation of each conversion for the whole package (head model, skinning, Gaussian
deformation, projection, densification, the apps' head-rotation edits).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "axis_angle_to_matrix",
    "compose_axis_angle",
    "euler_to_axis_angle",
    "matrix_to_axis_angle",
    "matrix_to_quat",
    "normalize_quat",
    "quat_multiply",
    "quat_to_matrix",
    "rotation_y",
]


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues' formula. ``aa [...,3]`` axis-angle (radians) -> rotation matrices ``[...,3,3]``.

    Smooth at zero (uses a Taylor expansion for tiny angles) so gradients are finite everywhere.
    """
    theta2 = (aa * aa).sum(-1, keepdim=True)  # [...,1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def normalize_quat(q: Tensor) -> Tensor:
    """Unit quaternions ``[...,4]`` from raw (unnormalised) ones."""
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Quaternions ``[...,4]`` (w, x, y, z; normalised here) -> rotation matrices ``[...,3,3]``."""
    q = normalize_quat(q)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices ``[...,3,3]`` -> unit quaternions ``[...,4]`` (w, x, y, z), ``w >= 0``.

    Numerically robust and with bounded gradients: of the four algebraically equivalent formulas
    the one dividing by the largest quaternion component (at least 1/2) is used. For slightly
    non-orthonormal input (a blended skinning matrix) it returns a nearby rotation.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    ).clamp_min(0.0)  # 4 w^2, 4 x^2, 4 y^2, 4 z^2
    cand = torch.stack(
        [
            torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, sq[..., 3]], -1),
        ],
        -2,
    )  # [...,4,4]: row i = 4 q_i * q
    denom = 2.0 * sq.clamp_min(0.01).sqrt()  # 4 |q_i|
    cand = cand / denom[..., None]
    best = sq.argmax(-1)  # [...]
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = normalize_quat(q)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of quaternions ``[...,4]`` (w, x, y, z): ``R(a*b) = R(a) R(b)``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``[...,3,3]`` rotation matrices -> ``[...,3]`` axis-angle (radians, angle in [0, pi])."""
    q = matrix_to_quat(R)
    s = q[..., 1:].norm(dim=-1, keepdim=True)
    ang = 2 * torch.atan2(s, q[..., :1].clamp(-1, 1))
    return torch.where(s > 1e-8, q[..., 1:] / s.clamp_min(1e-12) * ang, 2 * q[..., 1:])


def euler_to_axis_angle(yaw: float, pitch: float, roll: float, like: Tensor | None = None) -> Tensor:
    """Head rotation ``Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (radians; about +y, +x, +z) -> axis-angle ``[3]``
    (on ``like``'s device)."""
    dev = like.device if like is not None else None

    def rot(axis: int, a: float) -> Tensor:
        v = torch.zeros(3, device=dev)
        v[axis] = a
        return axis_angle_to_matrix(v)

    return matrix_to_axis_angle(rot(1, yaw) @ rot(0, pitch) @ rot(2, roll))


def compose_axis_angle(a: Tensor, b: Tensor) -> Tensor:
    """Axis-angle ``[...,3]`` of ``R(a) @ R(b)``."""
    return matrix_to_axis_angle(axis_angle_to_matrix(a) @ axis_angle_to_matrix(b))


def rotation_y(
    angle_deg: float | Tensor, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Rotation matrix ``[3, 3]`` about +y by ``angle_deg`` degrees (right-handed: +z turns toward +x)."""
    a = torch.as_tensor(angle_deg, dtype=dtype, device=device) * (math.pi / 180)
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([c, z, s]), torch.stack([z, o, z]), torch.stack([-s, z, c])])
