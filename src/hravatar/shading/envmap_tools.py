"""HDR environment maps -> irradiance cube map + GGX-prefiltered mip chain, in floating point.

Replaces the external C++ prefilter tool (and its 8-bit TGA output) of the official code:

* :func:`irradiance_cube`: cosine convolution by brute-force quadrature over the (area-downsampled)
  equirectangular map. Convention: ``I_irr(N) = 1/pi * integral L(l) max(N.l, 0) dl``, so a
  constant environment of radiance ``L`` gives ``I_irr = L`` and ``diffuse = albedo * L``.
* :func:`prefilter_specular`: for each texel direction ``R`` (with ``N = V = R``, Karis 2013)
  ``sum_s L(l_s) (N.l_s) / sum_s (N.l_s)`` over GGX-importance-sampled ``l_s`` (Hammersley
  points, ``alpha = roughness^2``), each sample read from the mip level of the map whose texel
  matches the sample's solid angle (filtered importance sampling, Krivanek & Colbert 2008), so a
  few hundred to a few thousand samples give smooth results.
* :func:`prefilter_envmap`: both plus the mirror level, in a :class:`PrefilteredEnvmap`; level
  ``i`` of ``L`` levels holds roughness ``i / (L - 1)``. :func:`save_prefiltered` /
  :func:`load_prefiltered` store it as safetensors (what ``hravatar envmap prefilter`` writes).
* :func:`rotate_equirect` (about +y), :func:`apply_exposure` (stops), :func:`background_image`
  (what a camera sees of the map).

Directions and the equirectangular layout are those of :mod:`hravatar.shading.cubemap`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_path
from hravatar.shading.brdf_lut import ggx_sample_half, hammersley
from hravatar.shading.cubemap import (
    dir_to_equirect_uv,
    equirect_directions,
    equirect_mips,
    equirect_solid_angles,
    equirect_to_cube,
    sample_equirect_mips,
    texel_directions,
)

Tensor = torch.Tensor

__all__ = [
    "PrefilteredEnvmap",
    "read_envmap",
    "irradiance_cube",
    "prefilter_specular",
    "prefilter_envmap",
    "save_prefiltered",
    "load_prefiltered",
    "rotate_equirect",
    "apply_exposure",
    "background_image",
    "ggx_d",
]

FORMAT = "hravatar-prefiltered-envmap"
FORMAT_VERSION = 1


@dataclass
class PrefilteredEnvmap:
    """A prefiltered environment: everything split-sum shading needs from an HDR map.

    Attributes:
        irradiance: cube map ``[6, R_i, R_i, 3]``, linear radiance (see module docstring).
        specular: list of cube maps ``[6, R_l, R_l, 3]``, level 0 = mirror (roughness 0).
        roughness: ``[L]`` roughness of each specular level, increasing.
        equirect: the source map ``[H, W, 3]`` (for backgrounds) or ``None``.
        meta: free-form strings (source file name, settings).
    """

    irradiance: Tensor
    specular: list[Tensor]
    roughness: Tensor
    equirect: Tensor | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> PrefilteredEnvmap:
        """A copy with all tensors on ``device``."""
        return PrefilteredEnvmap(
            self.irradiance.to(device),
            [s.to(device) for s in self.specular],
            self.roughness.to(device),
            None if self.equirect is None else self.equirect.to(device),
            dict(self.meta),
        )


def read_envmap(path: str | Path) -> Tensor:
    """Read an equirectangular ``.hdr`` / ``.exr`` as float32 linear RGB ``[H, W, 3]`` (CPU).

    Uses ``hravatar.io.envmap.read_envmap`` when available, else OpenCV for ``.hdr``.
    """
    path = Path(path)
    if not path.is_file():
        raise HRAvatarError(f"{path}: no such environment map; pass an equirectangular .hdr or .exr file")
    try:
        from hravatar.io.envmap import read_envmap as _read  # type: ignore[import-not-found]
    except ImportError:
        _read = None
    if _read is not None:
        img = _read(path)
        return torch.as_tensor(np.ascontiguousarray(img), dtype=torch.float32)[..., :3]
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3:
        raise HRAvatarError(f"{path}: could not read as an HDR image; use a Radiance .hdr (or install openexr)")
    arr = arr[..., :3][..., ::-1].astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _downsample_to(img: Tensor, max_height: int) -> Tensor:
    while img.shape[0] > max_height and img.shape[0] % 2 == 0 and img.shape[1] % 2 == 0:
        img = F.avg_pool2d(img.permute(2, 0, 1).unsqueeze(0), 2)[0].permute(1, 2, 0)
    return img


def irradiance_cube(equirect: Tensor, res: int = 32, max_height: int = 64, chunk: int = 1024) -> Tensor:
    """Irradiance cube map ``[6, res, res, 3]`` of an equirectangular radiance map ``[H, W, 3]``.

    Brute-force quadrature of ``1/pi * sum_p L_p max(N.d_p, 0) Omega_p`` over the pixels of the
    map after area-averaging it down to at most ``max_height`` rows (the cosine lobe is so wide
    that this changes the result by far less than 1 %). Exact pixel solid angles are used and the
    weights are normalised so that a constant map is reproduced exactly.
    """
    src = _downsample_to(equirect.float(), max_height)
    h, w = src.shape[:2]
    d = equirect_directions(h, w, device=src.device).reshape(-1, 3)
    om = equirect_solid_angles(h, w, device=src.device).expand(h, w).reshape(-1)
    vals = src.reshape(-1, src.shape[-1])
    n = texel_directions(res, device=src.device).reshape(-1, 3)
    out = []
    for i in range(0, n.shape[0], chunk):
        wgt = (n[i : i + chunk] @ d.T).clamp_min(0) * om
        out.append((wgt @ vals) / wgt.sum(1, keepdim=True))
    return torch.cat(out).reshape(6, res, res, -1)


def ggx_d(n_dot_h: Tensor, alpha: float | Tensor) -> Tensor:
    """GGX / Trowbridge-Reitz normal distribution ``D`` (per steradian) with width ``alpha``."""
    a2 = alpha * alpha
    t = n_dot_h * n_dot_h * (a2 - 1) + 1
    return a2 / (math.pi * t * t)


def _tangent_frame(n: Tensor) -> tuple[Tensor, Tensor]:
    up = torch.zeros_like(n)
    use_x = n[..., 1].abs() > 0.999
    up[..., 1] = torch.where(use_x, 0.0, 1.0)
    up[..., 0] = torch.where(use_x, 1.0, 0.0)
    t = F.normalize(torch.linalg.cross(up, n, dim=-1), dim=-1)
    b = torch.linalg.cross(n, t, dim=-1)
    return t, b


def prefilter_specular(
    equirect: Tensor,
    roughness: float,
    res: int,
    samples: int | None = None,
    mips: list[Tensor] | None = None,
    chunk_elems: int = 1 << 20,
    lod_bias: float = 1.0,
) -> Tensor:
    """GGX-prefiltered cube map ``[6, res, res, 3]`` of ``equirect [H, W, 3]`` for one roughness.

    Roughness 0 gives the area-filtered mirror map. Otherwise ``N = V = R`` per texel; ``samples``
    half vectors from GGX (``alpha = roughness^2``); each light direction is weighted by ``N.L``
    and read with filtered importance sampling (see the module docstring) at the mip level whose
    texel matches the sample's solid angle, plus ``lod_bias`` levels. ``samples=None`` picks
    ``clamp(4e6 / texels, 128, 4096)`` (small, rough levels get many samples).

    Measured against brute-force Monte-Carlo on a smooth random environment (max relative error
    over texels, roughness 1): bias 1 / 2048 samples 1.5 %, bias 1 / 4096 samples 0.8 %, bias 0 /
    1024 samples 0.8 %. Bias 0 leaves visible mottling around small bright lights (studio
    softboxes) at roughness >= 0.8, bias 0.5 a trace of it, bias 1 (Colbert's) none: hence 1.
    """
    if samples is None:
        samples = int(min(4096, max(128, 4_000_000 // (6 * res * res))))
    if roughness <= 0:
        return equirect_to_cube(equirect, res)
    mips = mips if mips is not None else equirect_mips(equirect.float())
    h, w = mips[0].shape[:2]
    dev = mips[0].device
    alpha = float(roughness) ** 2
    xi = hammersley(samples, device=dev, dtype=torch.float32)
    hl = ggx_sample_half(xi, torch.tensor(alpha, device=dev))  # [S, 3] local, normal = +z
    nl = 2 * hl[:, 2] ** 2 - 1  # N.L with N = V: independent of the texel
    keep = nl > 1e-4
    hl, nl = hl[keep], nl[keep]
    pdf = ggx_d(hl[:, 2], alpha) / 4  # pdf of l with N = V: D (n.h) / (4 v.h) = D / 4
    om_s = 1.0 / (samples * pdf)  # solid angle per sample
    om_p0 = (2 * math.pi / w) * (math.pi / h)  # equirect texel at the equator, level 0
    n_all = texel_directions(res, device=dev).reshape(-1, 3)
    out = []
    step = max(1, chunk_elems // hl.shape[0])
    for i in range(0, n_all.shape[0], step):
        n = n_all[i : i + step]
        t, b = _tangent_frame(n)
        hw = hl[:, 0, None] * t[:, None] + hl[:, 1, None] * b[:, None] + hl[:, 2, None] * n[:, None]  # [T,S,3]
        nh = hl[:, 2]
        lw = 2 * nh[None, :, None] * hw - n[:, None]
        sin_t = torch.sqrt((1 - lw[..., 1] ** 2).clamp_min(0)).clamp_min(1.0 / h)
        level = (0.5 * torch.log2(om_s[None] / (om_p0 * sin_t)) + lod_bias).clamp_min(0)
        val = sample_equirect_mips(mips, lw, level)  # [T, S, 3]
        out.append((val * nl[None, :, None]).sum(1) / nl.sum())
    return torch.cat(out).reshape(6, res, res, -1)


def prefilter_envmap(
    equirect: Tensor,
    base_res: int = 128,
    levels: int = 7,
    min_res: int = 16,
    irradiance_res: int = 32,
    samples: int | None = None,
    meta: dict[str, str] | None = None,
) -> PrefilteredEnvmap:
    """Prefilter an equirectangular HDR map ``[H, W, 3]`` for split-sum shading.

    Specular level ``i`` (of ``levels``) has roughness ``i / (levels - 1)`` and resolution
    ``max(base_res >> i, min_res)``; the irradiance map has ``irradiance_res``. The source map is
    kept (for backgrounds). Float32 throughout; a 1k map takes a few seconds on a CPU.
    """
    eq = equirect.float()
    mips = equirect_mips(eq)
    rough = torch.linspace(0, 1, levels)
    spec = []
    for i in range(levels):
        res = max(base_res >> i, min_res)
        spec.append(prefilter_specular(eq, float(rough[i]), res, samples=samples, mips=mips))
    irr = irradiance_cube(eq, irradiance_res)
    m = {"base_res": str(base_res), "levels": str(levels), "samples": str(samples or "auto")}
    m.update(meta or {})
    return PrefilteredEnvmap(irr, spec, rough, eq, m)


def save_prefiltered(env: PrefilteredEnvmap, path: str | Path) -> None:
    """Write ``env`` to ``path`` (safetensors, float32, atomic)."""
    from safetensors.torch import save_file

    tensors = {"irradiance": env.irradiance.detach().float().cpu().contiguous()}
    for i, s in enumerate(env.specular):
        tensors[f"specular_{i}"] = s.detach().float().cpu().contiguous()
    tensors["roughness"] = env.roughness.detach().float().cpu().contiguous()
    if env.equirect is not None:
        tensors["equirect"] = env.equirect.detach().float().cpu().contiguous()
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "meta": json.dumps(env.meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_prefiltered(path: str | Path, device: torch.device | str = "cpu") -> PrefilteredEnvmap:
    """Read a file written by :func:`save_prefiltered` / ``hravatar envmap prefilter``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HRAvatarError(f"{path}: no such file; create it with `hravatar envmap prefilter MAP.hdr {path}`")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT:
                raise HRAvatarError(
                    f"{path}: not a prefiltered environment map; make one with `hravatar envmap prefilter`"
                )
            keys = set(fh.keys())
            n = len([k for k in keys if k.startswith("specular_")])
            env = PrefilteredEnvmap(
                fh.get_tensor("irradiance"),
                [fh.get_tensor(f"specular_{i}") for i in range(n)],
                fh.get_tensor("roughness"),
                fh.get_tensor("equirect") if "equirect" in keys else None,
                json.loads(meta.get("meta", "{}")),
            )
    except HRAvatarError:
        raise
    except Exception as e:  # safetensors raises several types for damaged files
        raise HRAvatarError(f"{path}: unreadable ({e}); re-create it with `hravatar envmap prefilter`") from e
    return env.to(device)


def rotate_equirect(equirect: Tensor, angle_deg: float) -> Tensor:
    """The map rotated by ``angle_deg`` about +y: ``L'(d) = L(R_y(-angle) d)`` (a horizontal shift).

    Same sense as :func:`hravatar.geometry.rotation_y` and the ``rotation`` of
    :class:`hravatar.shading.lighting.EnvironmentLighting`. Fractional pixel shifts are linear.
    """
    w = equirect.shape[1]
    shift = (angle_deg / 360.0) * w  # new[u] = old[u + angle/360]
    k = math.floor(shift)
    f = shift - k
    a = torch.roll(equirect, shifts=-k, dims=1)
    b = torch.roll(equirect, shifts=-(k + 1), dims=1)
    return a * (1 - f) + b * f


def apply_exposure(x: Tensor, stops: float) -> Tensor:
    """Scale linear radiance by ``2 ** stops``."""
    return x * (2.0**stops)


def background_image(
    equirect: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    height: int,
    width: int,
    rotation_deg: float = 0.0,
    exposure: float = 0.0,
    blur_level: float = 0.0,
) -> Tensor:
    """What each camera sees of the environment: linear radiance ``[C, H, W, 3]``.

    ``blur_level`` > 0 reads coarser mip levels of the map (a defocused backdrop). Rotation and
    exposure follow :func:`rotate_equirect` and :func:`apply_exposure`.
    """
    from hravatar.geometry import ray_directions, rotation_y

    d = ray_directions(viewmats, Ks, height, width).to(equirect.dtype)
    if rotation_deg:
        d = d @ rotation_y(rotation_deg, device=d.device, dtype=d.dtype)  # R(-a) d for row vectors
    if blur_level > 0:
        mips = equirect_mips(equirect)
        img = sample_equirect_mips(mips, d, torch.full(d.shape[:-1], float(blur_level), device=d.device))
    else:
        u, v = dir_to_equirect_uv(d)
        img = sample_equirect_mips([equirect], d, torch.zeros_like(u))
    return apply_exposure(img, exposure)
