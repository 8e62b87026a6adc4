"""Lighting modules for split-sum shading: learnable (training) and fixed from an HDR map (relighting).

Both expose the same two lookups, in world space:

* ``irradiance(normals [..., 3]) -> [..., 3]``: ``I_irr(N)`` (diffuse = albedo * I_irr);
* ``specular(reflect_dirs [..., 3], roughness [..., 1]) -> [..., 3]``: prefiltered ``I_env(R, o)``.

:class:`LearnableLighting` follows the official HRAvatar code (read for facts, not copied):

* an irradiance cube map ``6 x 16 x 16 x 3`` and a specular cube map ``6 x 32 x 32 x 3``, both
  parameters initialised to the constant 0.5 (pre-activation);
* each training step the parameters are cosine-convolved (the official code calls nvdiffrec's
  ``diffuse_cubemap`` on the irradiance parameter and ``specular_cubemap(.., roughness=1)`` on the
  specular one; GGX with ``alpha = 1`` has a constant ``D = 1/pi`` so that filter is the same
  ``N.L``-weighted average). ``convolve=False`` skips this and learns the maps directly;
* the specular map gets box-filtered mips 32, 16, 8, 4 (``max_mip_level = 3``, the official
  ``mip_level = 3``) and is read trilinearly at level ``roughness * max_mip_level``;
* a sigmoid is applied *after* the lookup, so learned radiance lies in (0, 1) and starts at
  sigmoid(0.5) = 0.62 everywhere;
* not in the paper: the irradiance is multiplied by a global gain ``exp(diffuse_log_gain)`` (a
  buffer, 1 by default, not optimised) that only the level gauge of
  :func:`hravatar.light_priors.set_light_level` changes, so that a light whose mean is pinned can
  still have peaks above 1 (issue 18).

:class:`EnvironmentLighting` holds a :class:`~hravatar.shading.envmap_tools.PrefilteredEnvmap`
(no activation: linear HDR radiance), with a rotation about +y and an exposure (stops) applied at
lookup time, so a rotating-light video needs no re-filtering. Roughness is mapped to the level
whose prefilter roughness brackets it (piecewise linear; with the default levels ``i / (L - 1)``
that is ``level = roughness * (L - 1)``, the same linear rule as the learnable map).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hravatar.geometry.rotations import rotation_y
from hravatar.shading.cubemap import (
    build_mips,
    cube_to_equirect,
    sample_cube,
    sample_cube_mips,
    texel_directions,
    texel_solid_angles,
)
from hravatar.shading.envmap_tools import (
    PrefilteredEnvmap,
    apply_exposure,
    background_image,
    load_prefiltered,
    prefilter_envmap,
    read_envmap,
)

Tensor = torch.Tensor

__all__ = ["Lighting", "LearnableLighting", "EnvironmentLighting", "cosine_kernel"]


class Lighting(nn.Module):
    """Interface of the lighting used by :func:`hravatar.shading.shade.shade`."""

    def irradiance(self, normals: Tensor) -> Tensor:
        """Irradiance ``[..., 3]`` (linear) for world-space unit normals ``[..., 3]``."""
        raise NotImplementedError

    def specular(self, reflect_dirs: Tensor, roughness: Tensor) -> Tensor:
        """Prefiltered radiance ``[..., 3]`` along world reflection directions, for roughness ``[..., 1]``."""
        raise NotImplementedError


@lru_cache(maxsize=8)
def _cosine_kernel_cached(dst_res: int, src_res: int, device: str) -> Tensor:
    n = texel_directions(dst_res, device=device).reshape(-1, 3)
    d = texel_directions(src_res, device=device).reshape(-1, 3)
    om = texel_solid_angles(src_res, device=device).reshape(-1)
    w = (n @ d.T).clamp_min(0) * om
    return w / w.sum(1, keepdim=True)


def cosine_kernel(dst_res: int, src_res: int, device: torch.device | str = "cpu") -> Tensor:
    """Row-normalised cosine-convolution matrix ``[6 dst_res^2, 6 src_res^2]`` between cube maps.

    ``(K @ src.reshape(-1, C)).reshape(6, dst_res, dst_res, C)`` is ``sum L(d) max(N.d, 0) dOmega``
    divided by its weight sum, i.e. the irradiance convention of this package.
    """
    return _cosine_kernel_cached(dst_res, src_res, str(torch.device(device)))


class LearnableLighting(Lighting):
    """HRAvatar's learnable environment (see the module docstring for the exact conventions).

    Args:
        diffuse_res: irradiance cube-map resolution (paper: 16).
        specular_res: specular cube-map resolution (paper: 32).
        max_mip_level: mips below ``specular_res`` (paper/official: 3 -> 32, 16, 8, 4).
        init: constant initial value of both parameters (official: 0.5, before the sigmoid).
        convolve: cosine-convolve the parameters before lookup as the official code does.
        conv_src_res: the specular parameter is area-averaged to this resolution before its
            convolution (the kernel is 6144 x 1536 instead of 6144 x 6144; the cosine lobe is
            far wider than a texel, so the difference is negligible).
    """

    def __init__(
        self,
        diffuse_res: int = 16,
        specular_res: int = 32,
        max_mip_level: int = 3,
        init: float = 0.5,
        convolve: bool = True,
        conv_src_res: int = 16,
    ):
        super().__init__()
        self.max_mip_level = int(max_mip_level)
        self.convolve = bool(convolve)
        self.conv_src_res = int(min(conv_src_res, specular_res))
        self.diffuse_map = nn.Parameter(torch.full((6, diffuse_res, diffuse_res, 3), float(init)))
        self.specular_map = nn.Parameter(torch.full((6, specular_res, specular_res, 3), float(init)))
        self.register_buffer("diffuse_log_gain", torch.zeros(()))

    #: State entries that files written before they existed may lack (loaded as their default).
    optional_state = ("diffuse_log_gain",)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        for k in self.optional_state:  # a checkpoint from before the gain: gain 1
            state_dict.setdefault(prefix + k, getattr(self, k).detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def diffuse_gain(self) -> float:
        """The irradiance's global gain ``exp(diffuse_log_gain)`` (1 unless a level gauge set it)."""
        return float(torch.exp(self.diffuse_log_gain))

    @staticmethod
    def activation(x: Tensor) -> Tensor:
        """Official activation after lookup: sigmoid."""
        return torch.sigmoid(x)

    def diffuse_cube(self) -> Tensor:
        """Pre-activation irradiance cube map ``[6, R, R, 3]`` (after the optional convolution)."""
        m = self.diffuse_map
        if not self.convolve:
            return m
        r = m.shape[1]
        k = cosine_kernel(r, r, m.device).to(m.dtype)
        return (k @ m.reshape(-1, 3)).reshape(6, r, r, 3)

    def specular_levels(self) -> list[Tensor]:
        """Pre-activation specular mip chain (``max_mip_level + 1`` cube maps, sharpest first)."""
        m = self.specular_map
        if self.convolve:
            r, rs = m.shape[1], self.conv_src_res
            src = m
            while src.shape[1] > rs:
                src = F.avg_pool2d(src.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
            k = cosine_kernel(r, src.shape[1], m.device).to(m.dtype)
            m = (k @ src.reshape(-1, 3)).reshape(6, r, r, 3)
        return build_mips(m, self.max_mip_level + 1)

    def irradiance(self, normals: Tensor) -> Tensor:
        return self.activation(sample_cube(self.diffuse_cube(), normals)) * torch.exp(self.diffuse_log_gain)

    def specular(self, reflect_dirs: Tensor, roughness: Tensor) -> Tensor:
        levels = self.specular_levels()
        return self.activation(sample_cube_mips(levels, reflect_dirs, roughness * (len(levels) - 1)))

    @torch.no_grad()
    def to_equirect(self, height: int = 64) -> dict[str, Tensor]:
        """Activated maps as equirect images ``[H, 2H, 3]`` (``irradiance``, ``specular``) for reports."""
        return {
            "irradiance": self.activation(cube_to_equirect(self.diffuse_cube(), height)) * self.diffuse_gain,
            "specular": self.activation(cube_to_equirect(self.specular_levels()[0], height)),
        }


class EnvironmentLighting(Lighting):
    """Fixed lighting from a prefiltered HDR environment (relighting).

    Args:
        env: the prefiltered maps (see :func:`hravatar.shading.envmap_tools.prefilter_envmap`).
        rotation: rotation of the environment about +y in degrees (``L'(d) = L(R_y(-rot) d)``;
            positive turns +z toward +x).
        exposure: exposure in stops (radiance times ``2 ** exposure``).
    """

    def __init__(self, env: PrefilteredEnvmap, rotation: float = 0.0, exposure: float = 0.0):
        super().__init__()
        self.rotation = float(rotation)
        self.exposure = float(exposure)
        self.meta = dict(env.meta)
        self.register_buffer("irradiance_map", env.irradiance.float(), persistent=False)
        self.n_levels = len(env.specular)
        for i, s in enumerate(env.specular):
            self.register_buffer(f"specular_{i}", s.float(), persistent=False)
        self.register_buffer("level_roughness", env.roughness.float(), persistent=False)
        eq = env.equirect.float() if env.equirect is not None else None
        self.register_buffer("equirect", eq, persistent=False)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        rotation: float = 0.0,
        exposure: float = 0.0,
        device: torch.device | str = "cpu",
        **prefilter_kw: int,
    ) -> EnvironmentLighting:
        """From a prefiltered ``.safetensors`` (fast) or an ``.hdr``/``.exr`` (prefiltered now)."""
        path = Path(path)
        if path.suffix.lower() == ".safetensors":
            env = load_prefiltered(path)
        else:
            env = prefilter_envmap(read_envmap(path), meta={"source": path.name}, **prefilter_kw)
        return cls(env, rotation, exposure).to(device)

    @classmethod
    def from_equirect(
        cls, equirect: Tensor, rotation: float = 0.0, exposure: float = 0.0, **prefilter_kw: int
    ) -> EnvironmentLighting:
        """From an equirectangular radiance map ``[H, W, 3]`` (prefiltered now, on its device)."""
        return cls(prefilter_envmap(equirect, **prefilter_kw), rotation, exposure)

    def specular_levels(self) -> list[Tensor]:
        """The prefiltered cube maps, level 0 (mirror) first."""
        return [getattr(self, f"specular_{i}") for i in range(self.n_levels)]

    def _rotate(self, d: Tensor) -> Tensor:
        if not self.rotation:
            return d
        return d @ rotation_y(self.rotation, device=d.device, dtype=d.dtype)  # R(-rot) d

    def roughness_to_level(self, roughness: Tensor) -> Tensor:
        """Fractional specular level ``[...]`` for roughness ``[...]`` (piecewise linear in the table)."""
        r = self.level_roughness.to(roughness.dtype)
        x = roughness.clamp(float(r[0]), float(r[-1]))
        i = torch.searchsorted(r, x.detach().contiguous(), right=True).clamp(1, len(r) - 1) - 1
        r0, r1 = r[i], r[i + 1]
        return i.to(x.dtype) + (x - r0) / (r1 - r0)

    def irradiance(self, normals: Tensor) -> Tensor:
        e = sample_cube(self.irradiance_map, self._rotate(normals))
        return apply_exposure(e, self.exposure)

    def specular(self, reflect_dirs: Tensor, roughness: Tensor) -> Tensor:
        if roughness.dim() == reflect_dirs.dim():
            roughness = roughness.squeeze(-1)
        level = self.roughness_to_level(roughness)
        s = sample_cube_mips(self.specular_levels(), self._rotate(reflect_dirs), level)
        return apply_exposure(s, self.exposure)

    def background(self, viewmats: Tensor, Ks: Tensor, height: int, width: int, blur_level: float = 0.0) -> Tensor:
        """Linear radiance ``[C, H, W, 3]`` seen by the cameras (rotation and exposure applied)."""
        if self.equirect is None:
            from hravatar.geometry.cameras import ray_directions

            d = ray_directions(viewmats, Ks, height, width)
            return self.specular(d, torch.zeros(d.shape[:-1], device=d.device))
        return background_image(self.equirect, viewmats, Ks, height, width, self.rotation, self.exposure, blur_level)

    @torch.no_grad()
    def mean_irradiance(self) -> float:
        """Solid-angle-weighted mean irradiance over all normal directions (for auto exposure)."""
        m = self.irradiance_map
        om = texel_solid_angles(m.shape[1], device=m.device)
        return float((m.mean(-1) * om).sum() / om.sum()) * 2.0**self.exposure
