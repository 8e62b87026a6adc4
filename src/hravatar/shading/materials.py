"""Material editing: scale or set roughness and Fresnel F0 everywhere or in a (soft) region.

Works on any tensors: per-point attributes ``[N, 1]`` before rasterization or G-buffer channels
``[C, H, W, 1]`` after it; ``mask`` broadcasts against them (bool or float weights in [0, 1];
a float mask blends the edit in smoothly).

Ranges. Training keeps the paper's ranges: roughness in [0.5, 1], F0 in [0.04, 0.15] (0.8 upper
bound for harsh light). Edits may leave them on purpose (a glossy roughness of 0.2, a metallic
F0 of 0.9); the results are only clamped to the physically meaningful [0, 1] (the LUT and the
specular mip chain cover all of it). The official relighting script's "reflectance scale" is
``f0_toward=(1.0, t)`` here and its "roughness scale" is ``roughness_scale``.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

__all__ = ["edit_material", "edit_materials"]


def edit_material(
    value: Tensor,
    mask: Tensor | None = None,
    scale: float | Tensor | None = None,
    set_to: float | Tensor | None = None,
    toward: tuple[float, float] | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """Edit one material channel.

    Applied in this order: ``set_to`` (replace), ``scale`` (multiply), ``toward = (target, t)``
    (``value + (target - value) * t``), then the blend with ``mask`` and the clamp.

    Args:
        value: ``[..., 1]`` (or any shape) material values.
        mask: broadcastable bool/float region; ``None`` = everywhere.
        clamp: ``(lo, hi)`` or ``None`` to keep the raw result.
    Returns:
        the edited tensor (same shape; differentiable; the input is not modified).
    """
    out = value
    if set_to is not None:
        out = torch.as_tensor(set_to, dtype=value.dtype, device=value.device).expand_as(value)
    if scale is not None:
        out = out * torch.as_tensor(scale, dtype=value.dtype, device=value.device)
    if toward is not None:
        target, t = toward
        out = out + (target - out) * t
    if mask is not None:
        m = mask.to(value.dtype)
        out = value + (out - value) * m
    if clamp is not None:
        out = out.clamp(*clamp)
    return out


def edit_materials(
    roughness: Tensor,
    f0: Tensor,
    mask: Tensor | None = None,
    roughness_scale: float | None = None,
    roughness_set: float | None = None,
    f0_scale: float | None = None,
    f0_set: float | None = None,
    f0_toward: tuple[float, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Edit roughness and F0 together (see :func:`edit_material`) -> ``(roughness, f0)``."""
    r = edit_material(roughness, mask, scale=roughness_scale, set_to=roughness_set)
    f = edit_material(f0, mask, scale=f0_scale, set_to=f0_set, toward=f0_toward)
    return r, f
