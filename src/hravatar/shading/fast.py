"""Inference-only (no autograd) C++ shading of the covered pixels of a G-buffer.

:func:`shade_foreground_fast` computes :func:`hravatar.shading.shade.shade`'s ``image`` (the
reference; tests compare them) for the pixels with alpha > 0 and the background elsewhere, in one
C++ pass (``csrc/shade.cpp``): cube-map lookups with the seam border and bilinear + mip
interpolation by roughness, the split-sum LUT, HRAvatar's Fresnel term. Lighting maps are
prepared once per lighting state (:func:`prepare_lighting`, cached while the parameters are
unchanged). Supported lighting: :class:`~hravatar.shading.lighting.LearnableLighting` and
:class:`~hravatar.shading.lighting.EnvironmentLighting`; :func:`fast_shading_available` says
whether a lighting object (and device) can be shaded here.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

_SRC = Path(__file__).with_name("csrc") / "shade.cpp"


def _bind(lib: ctypes.CDLL) -> None:
    p, i32, f32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.hrs_shade.restype = i32
    lib.hrs_shade.argtypes = [i32] * 4 + [p] * 5 + [i32, p, i32, p, p, p, p, i32, f32, p, i32, i32, i32, p, p]


def _lib() -> ctypes.CDLL:
    from hravatar.render.cpu import INFERENCE_FLAGS, load_library  # noqa: PLC0415

    return load_library(_SRC, _bind, INFERENCE_FLAGS)


@dataclass
class PreparedLighting:
    """Lighting in the kernel's layout: padded irradiance cube, flat padded mip chain, level table."""

    irr: Tensor  # [6,Ri+2,Ri+2,3]
    irr_res: int
    spec: Tensor  # [T,3] flat padded levels
    spec_res: Tensor  # [L] int32
    spec_off: Tensor  # [L] int64 (texels)
    rough_table: Tensor  # [L]
    dir_m: Tensor | None  # [3,3] (d' = d @ M) or None
    sigmoid: bool
    scale: float


_cache: dict[int, tuple[tuple, PreparedLighting]] = {}


def _key(lighting: Any) -> tuple:
    from hravatar.shading.lighting import EnvironmentLighting  # noqa: PLC0415

    if isinstance(lighting, EnvironmentLighting):
        return ("env", lighting.rotation, lighting.exposure, lighting.irradiance_map.data_ptr())
    return ("learn", lighting.diffuse_map.data_ptr(), lighting.diffuse_map._version,
            lighting.specular_map.data_ptr(), lighting.specular_map._version, lighting.convolve,
            lighting.max_mip_level)


def fast_shading_available(lighting: Any, device: torch.device | str = "cpu") -> bool:
    """Whether :func:`shade_foreground_fast` supports ``lighting`` on ``device`` (builds the kernel)."""
    from hravatar.shading.lighting import EnvironmentLighting, LearnableLighting  # noqa: PLC0415

    if torch.device(device).type != "cpu" or type(lighting) not in (EnvironmentLighting, LearnableLighting):
        return False
    try:
        _lib()
    except RuntimeError:
        return False
    return True


@torch.no_grad()
def prepare_lighting(lighting: Any) -> PreparedLighting:
    """The kernel's view of ``lighting`` (cached per lighting object and parameter version)."""
    from hravatar.geometry.rotations import rotation_y  # noqa: PLC0415
    from hravatar.shading.cubemap import pad_cube  # noqa: PLC0415
    from hravatar.shading.lighting import EnvironmentLighting, LearnableLighting  # noqa: PLC0415

    key = _key(lighting)
    hit = _cache.get(id(lighting))
    if hit is not None and hit[0] == key:
        return hit[1]
    if isinstance(lighting, EnvironmentLighting):
        irr_cube = lighting.irradiance_map
        levels = lighting.specular_levels()
        table = lighting.level_roughness.float()
        dir_m = rotation_y(lighting.rotation, device="cpu", dtype=torch.float32) if lighting.rotation else None
        sig, scale = False, float(2.0**lighting.exposure)
    elif isinstance(lighting, LearnableLighting):
        irr_cube = lighting.diffuse_cube()
        levels = lighting.specular_levels()
        L = len(levels)
        table = torch.arange(L, dtype=torch.float32) / max(L - 1, 1)
        dir_m, sig, scale = None, True, 1.0
    else:
        raise TypeError(f"shade_foreground_fast: unsupported lighting {type(lighting).__name__}")
    padded = [pad_cube(c.detach().float()).reshape(-1, 3) for c in levels]
    sizes = torch.tensor([p.shape[0] for p in padded], dtype=torch.int64)
    prep = PreparedLighting(
        irr=pad_cube(irr_cube.detach().float()).contiguous(),
        irr_res=int(irr_cube.shape[1]),
        spec=torch.cat(padded, 0).contiguous(),
        spec_res=torch.tensor([c.shape[1] for c in levels], dtype=torch.int32),
        spec_off=(torch.cumsum(sizes, 0) - sizes).contiguous(),
        rough_table=table.contiguous(),
        dir_m=None if dir_m is None else dir_m.float().contiguous(),
        sigmoid=sig,
        scale=scale,
    )
    _cache.clear()
    _cache[id(lighting)] = (key, prep)
    return prep


def _p(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


@torch.no_grad()
def shade_foreground_fast(
    colors: Tensor,
    alphas: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    lighting: Any,
    background: Tensor | float | None = None,
) -> Tensor:
    """Shade the covered pixels of a rasterized G-buffer and composite over ``background`` (C++).

    Args:
        colors: G-buffer ``[C,H,W,D>=8]`` (albedo 3, roughness 1, F0 1, normal 3, alpha-accumulated;
            further channels such as depth are ignored); alphas: ``[C,H,W,1]``.
        viewmats: ``[C,4,4]`` OpenCV world-to-camera; Ks: ``[C,3,3]`` pixels.
        lighting: :class:`~hravatar.shading.lighting.LearnableLighting` or
            :class:`~hravatar.shading.lighting.EnvironmentLighting`.
        background: ``[C,H,W,3]``, ``[H,W,3]``, ``[3]``, a scalar or ``None`` (black).
    Returns:
        ``[C,H,W,3]``: :func:`hravatar.shading.shade.shade` ``(..., premultiplied=True)["image"]``
        up to float round-off (float32, CPU).
    """
    lib = _lib()
    from hravatar.shading.brdf_lut import default_lut  # noqa: PLC0415

    C, H, W, D = colors.shape
    if D < 8:
        raise ValueError(f"shade_foreground_fast: G-buffer has {D} channels, needs >= 8")
    prep = prepare_lighting(lighting)
    lut = default_lut("cpu").table.float().contiguous()
    g = colors.detach().float().contiguous()
    gain = float(getattr(lighting, "diffuse_gain", 1.0))
    if gain != 1.0:  # the learned irradiance's gain (issue 18's level gauge): diffuse = (gain albedo) I_irr
        g = g.clone()
        g[..., :3] *= gain
    a = alphas.detach().float().reshape(C, H, W).contiguous()
    vms = viewmats.detach().float().reshape(C, 4, 4).contiguous()
    kinv = torch.linalg.inv(Ks.detach().double().reshape(C, 3, 3)).float().contiguous()
    bg_mode, bg = 0, None
    if background is not None:
        b = torch.as_tensor(background, dtype=torch.float32).detach()
        if b.dim() <= 1:
            bg_mode, bg = 1, b.reshape(-1).expand(3).contiguous()
        else:
            bg_mode, bg = 2, b.expand(C, H, W, 3).contiguous()
    from hravatar.render.cpu import num_threads  # noqa: PLC0415

    out = torch.empty(C, H, W, 3)
    for c in range(C):
        bgc = bg if bg_mode != 2 else bg[c]
        rc = lib.hrs_shade(
            H, W, D, num_threads(), _p(g[c]), _p(a[c]), _p(vms[c]), _p(kinv[c]),
            _p(prep.irr), prep.irr_res, _p(prep.spec), int(prep.spec_res.numel()), _p(prep.spec_res),
            _p(prep.spec_off), _p(prep.rough_table), _p(prep.dir_m), int(prep.sigmoid), prep.scale,
            _p(lut), int(lut.shape[0]), int(lut.shape[1]), bg_mode, _p(bgc), _p(out[c]),
        )  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"hrs_shade failed (code {rc})")
    return out.to(colors.dtype)
