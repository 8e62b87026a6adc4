"""The split-sum GGX lookup table (Karis 2013), computed by this project, and the Fresnel term.

The table holds, for roughness ``o`` and ``c = N.V``, the scale ``A`` and bias ``B`` of the
environment BRDF integral of a GGX microfacet BRDF with Schlick's Fresnel:

    A = integral of  f/F * (1 - (1 - V.H)^5) * N.L  dL,     B = integral of  f/F * (1 - V.H)^5 * N.L  dL

with ``f = D G F / (4 N.L N.V)``, ``D`` the GGX (Trowbridge-Reitz) distribution with
``alpha = o^2``, and ``G`` Smith's shadowing with the Schlick-GGX factor and the IBL remapping
``k = alpha / 2`` (Karis 2013). It is estimated by importance sampling half vectors from ``D``
(Hammersley points), as in Karis' notes, with a vectorised torch loop (CPU: about a second).

Layout: ``[N_roughness, N_nv, 2]`` (last axis ``A, B``); texel ``(i, j)`` is at roughness
``(i + 0.5) / N`` and ``N.V = (j + 0.5) / N``. :class:`BrdfLut` looks it up with bilinear
filtering (clamped at the borders). The table is cached in ``cache_dir()/shading/``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from hravatar.io.atomic import atomic_path

Tensor = torch.Tensor

__all__ = ["hammersley", "ggx_sample_half", "compute_brdf_lut", "brdf_lut_table", "BrdfLut", "fresnel_ks"]

LUT_VERSION = 1


def hammersley(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` Hammersley points ``[n, 2]`` in ``[0, 1)^2`` (``i / n`` and the base-2 radical inverse)."""
    i = torch.arange(n, dtype=torch.int64)
    bits = i.clone()
    rev = torch.zeros_like(bits)
    for _ in range(32):
        rev = (rev << 1) | (bits & 1)
        bits = bits >> 1
    x2 = rev.to(torch.float64) / 2.0**32
    return torch.stack([i.to(torch.float64) / n, x2], -1).to(device=device, dtype=dtype)


def ggx_sample_half(xi: Tensor, alpha: Tensor) -> Tensor:
    """Half vectors ``[..., 3]`` in the local frame (normal = +z) distributed as ``D(h) (n.h)``.

    Args:
        xi: uniform samples ``[..., 2]``.
        alpha: GGX width (``roughness^2``), broadcastable to ``xi[..., 0]``.
    """
    phi = 2 * math.pi * xi[..., 0]
    a2 = alpha * alpha
    cos_t = torch.sqrt((1 - xi[..., 1]) / (1 + (a2 - 1) * xi[..., 1]))
    sin_t = torch.sqrt((1 - cos_t * cos_t).clamp_min(0))
    return torch.stack([sin_t * torch.cos(phi), sin_t * torch.sin(phi), cos_t], -1)


def compute_brdf_lut(size: int = 128, samples: int = 1024, device: torch.device | str | None = None) -> Tensor:
    """Compute the split-sum table ``[size (roughness), size (N.V), 2]`` (float32, values in [0, 1]).

    Importance sampling of GGX half vectors (``alpha = roughness^2``), Smith/Schlick-GGX geometry
    with ``k = alpha / 2``, Schlick Fresnel split into scale and bias. Roughness 0 is avoided
    because texel centres are at ``(i + 0.5) / size``.
    """
    xi = hammersley(samples, device=device, dtype=torch.float32)  # [S, 2]
    rough = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size
    nv = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size
    out = torch.empty(size, size, 2, dtype=torch.float32, device=device)
    v = torch.stack([torch.sqrt(1 - nv * nv), torch.zeros_like(nv), nv], -1)  # [Nv, 3]
    for i in range(size):
        alpha = rough[i] ** 2
        k = alpha / 2
        h = ggx_sample_half(xi, alpha)  # [S, 3]
        vh = v @ h.T  # [Nv, S]
        nh = h[:, 2].unsqueeze(0)
        nl = (2 * vh * nh - nv.unsqueeze(1)).clamp(max=1.0)  # (2 (v.h) h - v).z
        ok = (nl > 0) & (vh > 0)
        nl_c = nl.clamp_min(1e-12)
        nv_c = nv.unsqueeze(1)
        g = (nv_c / (nv_c * (1 - k) + k)) * (nl_c / (nl_c * (1 - k) + k))
        g_vis = torch.where(ok, g * vh / (nh * nv_c), torch.zeros_like(g))
        fc = 1 - vh.clamp(0, 1)
        fc = fc * fc * fc * fc * fc
        out[i, :, 0] = ((1 - fc) * g_vis).mean(1)
        out[i, :, 1] = (fc * g_vis).mean(1)
    return out.clamp(0, 1).float()


def _cache_file(size: int, samples: int) -> Path:
    from hravatar.assets import cache_dir

    return cache_dir() / "shading" / f"brdf_lut_{size}x{size}_s{samples}_v{LUT_VERSION}.npy"


def brdf_lut_table(size: int = 128, samples: int = 1024, cache: bool = True) -> Tensor:
    """The split-sum table ``[size, size, 2]`` (CPU float32): read from the cache or computed and cached.

    The cache file is written atomically, so concurrent first uses are safe.
    """
    if not cache:
        return compute_brdf_lut(size, samples)
    path = _cache_file(size, samples)
    if path.is_file():
        try:
            arr = np.load(path)
            if arr.shape == (size, size, 2):
                return torch.from_numpy(arr.astype(np.float32))
        except (OSError, ValueError):
            pass
    table = compute_brdf_lut(size, samples)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, table.numpy())
    return table


def _lut_bilinear(table: Tensor, roughness: Tensor, n_dot_v: Tensor) -> Tensor:
    nr, nv = table.shape[0], table.shape[1]
    y = (roughness * nr - 0.5).clamp(0, nr - 1)
    x = (n_dot_v * nv - 0.5).clamp(0, nv - 1)
    y0 = y.detach().floor().clamp(max=nr - 2)
    x0 = x.detach().floor().clamp(max=nv - 2)
    wy, wx = (y - y0).unsqueeze(-1), (x - x0).unsqueeze(-1)
    flat = table.reshape(-1, 2)
    b = (y0.long() * nv + x0.long()).reshape(-1)
    shape = (*x.shape, 2)
    t00, t01 = flat[b].reshape(shape), flat[b + 1].reshape(shape)
    t10, t11 = flat[b + nv].reshape(shape), flat[b + nv + 1].reshape(shape)
    return (t00 * (1 - wx) + t01 * wx) * (1 - wy) + (t10 * (1 - wx) + t11 * wx) * wy


class BrdfLut(torch.nn.Module):
    """Bilinear lookup of the split-sum table: ``lut(roughness, n_dot_v) -> [..., 2]`` (scale A, bias B).

    The table is a non-persistent buffer (moves with ``.to(device)``, not saved in checkpoints).
    Differentiable w.r.t. ``roughness`` and ``n_dot_v``.
    """

    def __init__(self, size: int = 128, samples: int = 1024, table: Tensor | None = None):
        super().__init__()
        t = brdf_lut_table(size, samples) if table is None else table
        self.register_buffer("table", t.float(), persistent=False)

    def forward(self, roughness: Tensor, n_dot_v: Tensor) -> Tensor:
        """``roughness``, ``n_dot_v``: broadcastable ``[...]`` (a trailing 1 is squeezed) -> ``[..., 2]``."""
        if roughness.dim() and roughness.shape[-1] == 1:
            roughness = roughness.squeeze(-1)
        if n_dot_v.dim() and n_dot_v.shape[-1] == 1:
            n_dot_v = n_dot_v.squeeze(-1)
        roughness, n_dot_v = torch.broadcast_tensors(roughness, n_dot_v)
        return _lut_bilinear(self.table.to(roughness.dtype), roughness, n_dot_v)


_DEFAULT: dict[str, BrdfLut] = {}


def default_lut(device: torch.device | str | None = None) -> BrdfLut:
    """A shared :class:`BrdfLut` (128 x 128, 1024 samples) on ``device``."""
    key = str(torch.device(device) if device is not None else torch.device("cpu"))
    if key not in _DEFAULT:
        if "cpu" not in _DEFAULT:
            _DEFAULT["cpu"] = BrdfLut()
        if key != "cpu":
            _DEFAULT[key] = BrdfLut(table=_DEFAULT["cpu"].table.to(key))
    return _DEFAULT[key]


def fresnel_ks(f0: Tensor, roughness: Tensor, c: Tensor) -> Tensor:
    """HRAvatar's roughness-aware Schlick Fresnel (spherical-Gaussian exponent form).

    ``k_s = F0 + (max(1 - o, F0) - F0) * 2^((-5.55473 c - 6.98316) c)``, with ``c = N.V``; the
    caller passes ``c`` already clamped and detached (see :func:`hravatar.shading.shade.shade`).
    All inputs broadcastable, e.g. ``[..., 1]``.
    """
    return f0 + (torch.maximum(1 - roughness, f0) - f0) * torch.pow(2.0, (-5.55473 * c - 6.98316) * c)
