"""Analytic G-buffers for tests, demos and strips: a sphere seen by pinhole cameras."""

from __future__ import annotations

import torch

from hravatar.geometry import ray_directions

Tensor = torch.Tensor

__all__ = ["sphere_gbuffer"]


def sphere_gbuffer(
    viewmats: Tensor,
    Ks: Tensor,
    height: int,
    width: int,
    center: tuple[float, float, float] = (0.0, 0.0, 0.0),
    radius: float = 1.0,
    albedo: tuple[float, float, float] | Tensor = (0.8, 0.8, 0.8),
    roughness: float | Tensor = 0.5,
    f0: float | Tensor = 0.04,
) -> dict[str, Tensor]:
    """Ray-traced G-buffer of a sphere (world frame) for cameras ``viewmats [C,4,4]``, ``Ks [C,3,3]``.

    Returns ``albedo [C,H,W,3]``, ``roughness [C,H,W,1]``, ``f0 [C,H,W,1]``, ``normal [C,H,W,3]``
    (analytic, world), ``depth [C,H,W,1]`` (camera z, 0 off the sphere), ``alpha [C,H,W,1]``
    (1 on the sphere, 0 elsewhere: no anti-aliasing). Materials may be scalars or broadcastable
    tensors (e.g. ``[C,1,1,1]``).
    """
    dev, dt = viewmats.device, viewmats.dtype
    d = ray_directions(viewmats, Ks, height, width)  # [C,H,W,3]
    rot, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    eye = -(rot.transpose(1, 2) @ t.unsqueeze(-1)).squeeze(-1)  # [C,3]
    c = torch.as_tensor(center, dtype=dt, device=dev)
    oc = (eye - c)[:, None, None, :]
    b = (d * oc).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius * radius)
    hit = disc > 0
    s = -b - torch.sqrt(disc.clamp_min(0))
    hit = hit & (s > 0)
    p = eye[:, None, None, :] + s.unsqueeze(-1) * d
    normal = torch.nn.functional.normalize(p - c, dim=-1) * hit.unsqueeze(-1)
    fwd = rot[:, 2, :]  # camera +z in world
    depth = (s.unsqueeze(-1) * (d * fwd[:, None, None, :]).sum(-1, keepdim=True)) * hit.unsqueeze(-1)
    alpha = hit.unsqueeze(-1).to(dt)
    shape = (*alpha.shape[:-1],)
    a = torch.as_tensor(albedo, dtype=dt, device=dev).expand(*shape, 3)
    r = torch.as_tensor(roughness, dtype=dt, device=dev).expand(*shape, 1)
    f = torch.as_tensor(f0, dtype=dt, device=dev).expand(*shape, 1)
    return {
        "albedo": a * alpha,
        "roughness": r * alpha,
        "f0": f * alpha,
        "normal": normal,
        "depth": depth,
        "alpha": alpha,
    }
