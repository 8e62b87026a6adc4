"""Deferred split-sum shading of a G-buffer (HRAvatar, section 3.3; DESIGN.md section 5).

Per pixel, with ``N`` the world normal, ``V`` the unit direction from the surface to the camera,
``o`` the roughness and ``c = clamp(N.V, 1e-4, 1)`` *detached*::

    I_diffuse  = A * I_irr(N)
    I_specular = I_env(R, o) * (k_s * LUT(o, c)[0] + LUT(o, c)[1]),   R = 2 (N.V) N - V
    k_s        = F0 + (max(1 - o, F0) - F0) * 2^((-5.55473 c - 6.98316) c)
    color      = I_diffuse + I_specular
    image      = color * alpha + background * (1 - alpha)

``R`` uses the un-detached ``N.V`` so the normal gets the reflection's gradient; the LUT and
Fresnel use the detached ``c`` as in the paper. All outputs are linear radiance (not clamped).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from hravatar.geometry.cameras import ray_directions, ray_directions_at
from hravatar.shading.brdf_lut import BrdfLut, default_lut, fresnel_ks
from hravatar.shading.lighting import Lighting

Tensor = torch.Tensor

__all__ = ["view_directions", "shade", "shade_foreground", "unpremultiply"]


def view_directions(viewmats: Tensor, Ks: Tensor, height: int, width: int) -> Tensor:
    """World-space unit directions ``[C, H, W, 3]`` from the surface seen in each pixel toward the camera.

    ``viewmats [C, 4, 4]`` world-to-camera (OpenCV), ``Ks [C, 3, 3]`` in pixels, pixel centres at
    +0.5. For a pinhole camera this is minus the pixel's viewing ray, whatever the depth.
    """
    return -ray_directions(viewmats, Ks, height, width)


def unpremultiply(gbuffer: Mapping[str, Tensor], eps: float = 1e-6) -> dict[str, Tensor]:
    """Divide alpha-accumulated attributes (albedo, roughness, f0) by ``alpha`` (rasterizer output).

    A Gaussian rasterizer returns ``sum_i w_i x_i`` with ``sum_i w_i = alpha``; shading wants the
    per-surface average ``x``. Normals are only renormalised (in :func:`shade`).
    """
    out = dict(gbuffer)
    a = gbuffer["alpha"].clamp_min(eps)
    for k in ("albedo", "roughness", "f0"):
        out[k] = gbuffer[k] / a
    return out


def _as_background(bg: Tensor | float | None, like: Tensor) -> Tensor:
    if bg is None:
        return torch.zeros_like(like)
    bg = torch.as_tensor(bg, dtype=like.dtype, device=like.device)
    return bg.expand_as(like) if bg.dim() <= 1 else bg.expand_as(like)


def shade(
    gbuffer: Mapping[str, Tensor],
    viewdirs_or_camera: Tensor | tuple[Tensor, Tensor],
    lighting: Lighting,
    background: Tensor | float | None = None,
    lut: BrdfLut | None = None,
    premultiplied: bool = False,
) -> dict[str, Tensor]:
    """Shade a G-buffer with split-sum image-based lighting.

    Args:
        gbuffer: ``albedo [C,H,W,3]``, ``roughness [C,H,W,1]``, ``f0 [C,H,W,1]``, ``normal
            [C,H,W,3]`` (world frame, renormalised here), ``alpha [C,H,W,1]``. Any leading shape
            works as long as it is shared.
        viewdirs_or_camera: unit directions surface -> camera ``[C,H,W,3]`` (world), or a tuple
            ``(viewmats [C,4,4], Ks [C,3,3])`` from which they are computed per pixel.
        lighting: a :class:`~hravatar.shading.lighting.Lighting` (learnable or from an HDR map).
        background: ``[C,H,W,3]``, ``[3]`` or a scalar; ``None`` = black (the paper's evaluation).
        lut: split-sum table (default: the shared 128 x 128 one on the G-buffer's device).
        premultiplied: the attributes are alpha-accumulated (see :func:`unpremultiply`).
    Returns:
        dict of ``[C,H,W,*]`` tensors: ``image`` (composited), ``color`` (uncomposited
        ``diffuse + specular``), ``diffuse``, ``specular``, ``irradiance`` (``I_irr``),
        ``env_specular`` (``I_env``), ``ks``, ``lut`` ([..., 2]), ``n_dot_v`` (clamped, detached),
        ``alpha``.
    """
    gb = unpremultiply(gbuffer) if premultiplied else dict(gbuffer)
    albedo, rough, f0, alpha = gb["albedo"], gb["roughness"], gb["f0"], gb["alpha"]
    n = F.normalize(gb["normal"], dim=-1, eps=1e-8)
    if isinstance(viewdirs_or_camera, (tuple, list)):
        viewmats, Ks = viewdirs_or_camera
        h, w = n.shape[-3], n.shape[-2]
        v = view_directions(viewmats, Ks, h, w).to(n.dtype)
    else:
        v = F.normalize(viewdirs_or_camera, dim=-1)
    n_dot_v = (n * v).sum(-1, keepdim=True)
    c = n_dot_v.clamp(1e-4, 1.0).detach()
    refl = 2 * n_dot_v * n - v
    lut = lut if lut is not None else default_lut(n.device)
    fg = lut(rough, c)  # [..., 2]
    ks = fresnel_ks(f0, rough, c)
    irr = lighting.irradiance(n)
    env = lighting.specular(refl, rough)
    diffuse = albedo * irr
    specular = env * (ks * fg[..., 0:1] + fg[..., 1:2])
    color = diffuse + specular
    image = color * alpha + _as_background(background, color) * (1 - alpha)
    return {
        "image": image,
        "color": color,
        "diffuse": diffuse,
        "specular": specular,
        "irradiance": irr,
        "env_specular": env,
        "ks": ks,
        "lut": fg,
        "n_dot_v": c,
        "alpha": alpha,
    }


def shade_foreground(
    features: Tensor,
    alphas: Tensor,
    layout: Mapping[str, slice],
    viewmats: Tensor,
    Ks: Tensor,
    lighting: Lighting,
    background: Tensor | float | None = None,
) -> Tensor:
    """:func:`shade` (``premultiplied=True``) of the covered pixels only, composited over ``background``.

    Args:
        features: packed alpha-accumulated G-buffer ``[C,H,W,D]``; ``layout`` maps ``albedo``,
            ``roughness``, ``f0`` and ``normal`` to their channel slices (other channels are
            ignored). alphas: ``[C,H,W,1]``.
        viewmats ``[C,4,4]`` (OpenCV world-to-camera), Ks ``[C,3,3]`` (pixels); lighting: a
            :class:`~hravatar.shading.lighting.Lighting`; background: ``[C,H,W,3]``, ``[3]``, a
            scalar or ``None`` (black).
    Returns:
        the image ``[C,H,W,3]``: :func:`shade`'s ``image`` up to float round-off. Pixels with alpha
        0 have no contributing Gaussian, so there the image is the background and no parameter gets
        a gradient from them: they are not shaded at all (one gather of the covered pixels, one
        scatter back).
    """
    C, H, W, D = features.shape
    idx = torch.nonzero(alphas.reshape(-1) > 0).squeeze(1)  # [P] covered pixels
    g = features.reshape(-1, D).index_select(0, idx)
    a = alphas.reshape(-1, 1).index_select(0, idx)
    v = (-ray_directions_at(viewmats, Ks, W, H, idx)).to(features.dtype)
    bg_full = None
    if background is not None and torch.is_tensor(background) and background.dim() > 1:
        bg_full = background.to(features).expand(C, H, W, 3).reshape(-1, 3)
        bg_fg = bg_full.index_select(0, idx)
    else:
        bg_fg = background
    gb = {k: g[:, layout[k]] for k in ("albedo", "roughness", "f0", "normal")}
    gb["alpha"] = a
    img_fg = shade(gb, v, lighting, background=bg_fg, premultiplied=True)["image"]  # [P,3]
    if bg_full is None:
        if background is None:
            base = features.new_zeros(C * H * W, 3)
        else:
            base = torch.as_tensor(background, dtype=features.dtype, device=features.device).expand(C * H * W, 3)
    else:
        base = bg_full
    return base.index_copy(0, idx, img_fg).reshape(C, H, W, 3)
