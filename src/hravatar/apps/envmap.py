"""``hravatar envmap prefilter IN OUT``: prefilter an HDR environment map once for fast relighting."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from hravatar.errors import HRAvatarError
from hravatar.progress import log


@dataclass
class EnvmapPrefilterConfig:
    """Prefilter an equirectangular .hdr/.exr into an irradiance cube map and a GGX mip chain."""

    input: Annotated[Path, tyro.conf.Positional]
    """equirectangular HDR environment map (.hdr or .exr, linear float)"""
    output: Annotated[Path, tyro.conf.Positional]
    """where to write the prefiltered maps (.safetensors), loaded by relighting"""
    base_res: int = 128
    """cube-map resolution of the mirror level (roughness 0); level i has max(base_res >> i, min_res)"""
    levels: int = 7
    """number of specular levels; level i is prefiltered for roughness i / (levels - 1)"""
    min_res: int = 16
    """smallest cube-map resolution of the specular levels"""
    irradiance_res: int = 32
    """cube-map resolution of the irradiance (cosine-convolved) map"""
    samples: int | None = None
    """GGX importance samples per texel (default: about 4e6 / texels, within 128..4096)"""
    rotation: float = 0.0
    """bake a rotation about +y (degrees) into the stored maps; relighting can also rotate at render time"""
    exposure: float = 0.0
    """bake an exposure (stops) into the stored maps"""


def envmap_prefilter(cfg: EnvmapPrefilterConfig) -> int:
    """Read ``cfg.input``, prefilter it (float32, CPU or the default device), write ``cfg.output``."""
    from hravatar.shading.envmap_tools import (
        apply_exposure,
        prefilter_envmap,
        read_envmap,
        rotate_equirect,
        save_prefiltered,
    )

    if cfg.output.suffix.lower() != ".safetensors":
        raise HRAvatarError(f"{cfg.output}: the output must end in .safetensors")
    if cfg.levels < 2 or cfg.base_res < 1 or (cfg.samples is not None and cfg.samples < 1):
        raise HRAvatarError("envmap prefilter: --levels must be >= 2, --base-res and --samples >= 1")
    t0 = time.perf_counter()
    eq = read_envmap(cfg.input)
    if cfg.rotation:
        eq = rotate_equirect(eq, cfg.rotation)
    if cfg.exposure:
        eq = apply_exposure(eq, cfg.exposure)
    env = prefilter_envmap(
        eq,
        base_res=cfg.base_res,
        levels=cfg.levels,
        min_res=cfg.min_res,
        irradiance_res=cfg.irradiance_res,
        samples=cfg.samples,
        meta={"source": cfg.input.name, "rotation": str(cfg.rotation), "exposure": str(cfg.exposure)},
    )
    save_prefiltered(env, cfg.output)
    dt = time.perf_counter() - t0
    log.info(
        "%s: %dx%d map -> %s (%d specular levels, irradiance %d^2) in %.1f s",
        cfg.input.name,
        eq.shape[1],
        eq.shape[0],
        cfg.output,
        len(env.specular),
        cfg.irradiance_res,
        dt,
    )
    return 0
