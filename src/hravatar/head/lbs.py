"""Batched linear blend skinning (pure PyTorch, differentiable); rotations are in :mod:`hravatar.geometry`."""

from __future__ import annotations

import torch
from torch import Tensor


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
