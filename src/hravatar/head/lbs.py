"""Rotation helpers and batched linear blend skinning (pure PyTorch, differentiable)."""

from __future__ import annotations

import torch
from torch import Tensor


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


def matrix_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices ``[...,3,3]`` -> unit quaternions ``[...,4]`` (w, x, y, z), w >= 0."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    qw = torch.sqrt(torch.clamp(1 + tr, min=1e-12)) / 2
    qx = torch.sqrt(torch.clamp(1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], min=1e-12)) / 2
    qy = torch.sqrt(torch.clamp(1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], min=1e-12)) / 2
    qz = torch.sqrt(torch.clamp(1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], min=1e-12)) / 2
    qx = torch.copysign(qx, m[..., 2, 1] - m[..., 1, 2])
    qy = torch.copysign(qy, m[..., 0, 2] - m[..., 2, 0])
    qz = torch.copysign(qz, m[..., 1, 0] - m[..., 0, 1])
    q = torch.stack([qw, qx, qy, qz], -1)
    return q / q.norm(dim=-1, keepdim=True)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Quaternions ``[...,4]`` (w, x, y, z; normalised here) -> rotation matrices ``[...,3,3]``."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)


def pose_feature(rot: Tensor) -> Tensor:
    """Pose-corrective feature: ``rot [B,J,3,3]`` of the non-global joints -> ``[B, 9*J]``
    (``R - I`` flattened, FLAME/SMPL convention; zero at rest)."""
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    return (rot - eye).reshape(rot.shape[0], -1)


def kinematic_chain(rot: Tensor, joints: Tensor, parents: Tensor) -> Tensor:
    """World transforms of each joint that map rest-pose points to posed points.

    Args:
        rot: ``[B,J,3,3]`` local joint rotations.
        joints: ``[B,J,3]`` rest-pose joint locations.
        parents: ``[J]`` parent index (``-1`` for the root), parents precede children.
    Returns:
        ``[B,J,4,4]`` transforms ``A_j`` with ``x_posed = A_j @ [x_rest, 1]`` for points rigidly
        attached to joint ``j``.
    """
    B, J = rot.shape[:2]
    rel = joints.clone()
    par = parents.tolist()
    for j in range(1, J):
        rel[:, j] = joints[:, j] - joints[:, par[j]]
    local = torch.zeros(B, J, 4, 4, dtype=rot.dtype, device=rot.device)
    local[..., :3, :3] = rot
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1
    chain = [local[:, 0]]
    for j in range(1, J):
        chain.append(chain[par[j]] @ local[:, j])
    world = torch.stack(chain, 1)  # maps joint-local frame to world
    # remove rest-pose joint offset: A_j = G_j @ T(-J_j)
    offset = world[..., :3, :3] @ joints[..., None]  # [B,J,3,1]
    A = world.clone()
    A[..., :3, 3] = world[..., :3, 3] - offset[..., 0]
    return A


def blend_transforms(weights: Tensor, A: Tensor) -> Tensor:
    """Per-point transforms ``[B,N,4,4]`` = sum_j ``weights [N,J]`` * ``A [B,J,4,4]``."""
    return torch.einsum("nj,bjxy->bnxy", weights, A)
