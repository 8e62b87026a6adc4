"""Add points to a :class:`~hravatar.gaussians.head_avatar.GaussianHead` (hair and other extras).

The avatar keeps every per-point tensor in one parameter dict; :func:`append_points` returns a new
avatar whose tensors are the old ones followed by the new points' rows. Attributes the caller does
not give get neutral rows (zeros; ``binding`` is required for triangle-rigged avatars).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hravatar.gaussians.head_avatar import GaussianHead


def append_points(avatar: GaussianHead, extra: dict[str, Tensor]) -> GaussianHead:
    """A copy of ``avatar`` with ``M`` more points.

    Args:
        avatar: any :class:`GaussianHead` (N points).
        extra: raw (pre-activation) per-point tensors of the new points, keyed like
            ``avatar.params`` (``means [M,3]`` is required; e.g. ``quats [M,4]``, ``scales [M,3]``
            log, ``opacities [M]`` logit, ``albedo [M,3]`` logit, ``lbs_weights [M,6]``); keys the
            avatar does not have are ignored, missing ones are filled with zeros.
    Returns:
        A new :class:`GaussianHead` with ``N + M`` points, the same config, buffers, meta and frozen
        set (the input avatar is unchanged).
    """
    M = int(extra["means"].shape[0])
    if avatar.rig == "triangle" and "binding" not in extra:
        raise ValueError("appending to a triangle-rigged avatar needs a 'binding' per new point")
    params: dict[str, Tensor] = {}
    frozen = []
    for k, p in avatar.params.items():
        old = p.detach()
        new = extra.get(k)
        if new is None:
            new = old.new_zeros((M, *old.shape[1:]))
        new = new.to(device=old.device, dtype=old.dtype)
        if tuple(new.shape) != (M, *old.shape[1:]):
            raise ValueError(f"append_points: {k} has shape {tuple(new.shape)}, expected {(M, *old.shape[1:])}")
        params[k] = torch.cat([old, new], 0).contiguous()
        if not p.requires_grad:
            frozen.append(k)
    buffers = {k: v for k, v in avatar.named_buffers()}
    return GaussianHead(params, buffers, avatar.config, avatar.head_name, avatar.expr_names, avatar.meta,
                        frozen=tuple(frozen))
