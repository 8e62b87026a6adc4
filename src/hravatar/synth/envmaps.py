"""Procedural HDR environment maps for the synthetic subject (no files needed).

Each map is a sky-like gradient (zenith, horizon, ground) plus a few area lights ("softboxes":
spherical caps with soft edges), returned as an equirectangular float32 image ``[H,W,3]``
(linear radiance, channels-last RGB).

Equirectangular convention: the shading module's (:mod:`hravatar.shading.cubemap`). The world
frame is the head-model frame (+x the subject's left, +y up, +z out of the face, toward the
default camera). Row ``i`` has polar angle ``theta = pi (i + 0.5) / H`` from +y; column ``j``
has ``phi = 2 pi ((j + 0.5) / W - 0.5)`` and the direction is
``(sin theta sin phi, cos theta, -sin theta cos phi)``: the centre column looks along -z (behind
the head), the column at ``3/4 W`` along +x, the first/last columns along +z (toward the camera).
Light positions are given as azimuths measured from +z (the camera side) toward +x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hravatar import light_priors as lp


@dataclass(frozen=True)
class Softbox:
    """An area light: a spherical cap with a smooth (smoothstep) rim.

    Attributes:
        azimuth_deg: ``phi`` of the centre (0 = +z toward the camera, +90 = +x subject's left).
        elevation_deg: angle above the horizon (+y).
        radius_deg: angular radius of the cap.
        rgb: linear radiance inside the cap.
        softness: fraction of the radius used for the soft rim.
    """

    azimuth_deg: float
    elevation_deg: float
    radius_deg: float
    rgb: tuple[float, float, float]
    softness: float = 0.35


@dataclass(frozen=True)
class EnvSpec:
    """A procedural environment: gradient colours (linear) and softboxes."""

    name: str
    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    ground: tuple[float, float, float]
    lights: tuple[Softbox, ...] = field(default_factory=tuple)


#: The three built-in environments: the first lights the training video, the other two are
#: unseen during training and give ground-truth relighting.
ENVIRONMENTS: dict[str, EnvSpec] = {
    "studio": EnvSpec(
        "studio",
        zenith=(0.12, 0.14, 0.18), horizon=(0.14, 0.13, 0.12), ground=(0.04, 0.035, 0.03),
        lights=(
            Softbox(-35.0, 30.0, 20.0, (9.0, 8.5, 8.0)),  # key: front, subject's right, above
            Softbox(55.0, 10.0, 26.0, (1.5, 1.6, 1.8)),  # fill: subject's left
            Softbox(170.0, 35.0, 18.0, (4.0, 4.0, 4.0)),  # rim from behind
        ),
    ),
    "sunset": EnvSpec(
        "sunset",
        zenith=(0.05, 0.07, 0.15), horizon=(0.35, 0.18, 0.08), ground=(0.03, 0.02, 0.015),
        lights=(
            Softbox(80.0, 8.0, 9.0, (60.0, 30.0, 10.0), softness=0.5),  # low sun, subject's left
            Softbox(-120.0, 40.0, 30.0, (0.25, 0.35, 0.7)),
        ),
    ),
    "cool": EnvSpec(
        "cool",
        zenith=(0.08, 0.1, 0.2), horizon=(0.05, 0.06, 0.1), ground=(0.02, 0.025, 0.03),
        lights=(
            Softbox(10.0, 70.0, 25.0, (4.0, 4.8, 6.5)),  # overhead, slightly front
            Softbox(-75.0, -10.0, 20.0, (4.0, 1.0, 2.5)),  # magenta from the subject's right, below
            Softbox(110.0, 15.0, 15.0, (1.0, 3.5, 2.2)),  # teal accent, subject's left
        ),
    ),
}

#: Name of the lighting of the training video and the unseen ones.
TRAIN_ENV = "studio"
TEST_ENVS = ("sunset", "cool")

#: Colours of the training light (``hravatar synth --light``): linear-RGB multipliers of every
#: radiance of the training environment (before the brightness normalisation, which keeps the
#: luminance). ``warm``: a tungsten-like cast (a camera white-balanced only part of the way);
#: ``cool``: a bluish daylight / shade cast. Their chromaticities are 13 (warm) and 9 (cool) degrees from grey.
LIGHT_TINTS: dict[str, tuple[float, float, float]] = {
    "neutral": (1.0, 1.0, 1.0),
    "warm": (1.25, 1.0, 0.70),
    "cool": (0.85, 1.0, 1.25),
}


def tinted(spec: EnvSpec, tint: tuple[float, float, float], name: str) -> EnvSpec:
    """``spec`` with every radiance (gradient colours and softboxes) multiplied by ``tint``."""

    def mul(c: tuple[float, float, float]) -> tuple[float, float, float]:
        return (c[0] * tint[0], c[1] * tint[1], c[2] * tint[2])

    return EnvSpec(
        name, zenith=mul(spec.zenith), horizon=mul(spec.horizon), ground=mul(spec.ground),
        lights=tuple(Softbox(L.azimuth_deg, L.elevation_deg, L.radius_deg, mul(L.rgb), L.softness)
                     for L in spec.lights),
    )


for _k, _t in LIGHT_TINTS.items():
    if _k != "neutral":
        ENVIRONMENTS[f"{TRAIN_ENV}_{_k}"] = tinted(ENVIRONMENTS[TRAIN_ENV], _t, f"{TRAIN_ENV}_{_k}")


#: Suffix of an environment name that scales its brightness: ``"studio_warm_level0.5"`` is
#: ``studio_warm`` at half the front irradiance :data:`FRONT_IRRADIANCE` (``hravatar synth
#: --light-level``: a training video exposed darker or brighter than the relighting environments).
LEVEL_SUFFIX = "_level"


def train_env_name(light: str = "neutral", level: float = 1.0) -> str:
    """Name of the training environment lit with colour ``light`` (a key of :data:`ENVIRONMENTS`)
    at ``level`` times the usual front irradiance (a :data:`LEVEL_SUFFIX` when not 1)."""
    if light not in LIGHT_TINTS:
        raise KeyError(f"unknown training light {light!r}; choose from {sorted(LIGHT_TINTS)}")
    if not level > 0:
        raise ValueError(f"light level must be > 0 (got {level})")
    name = TRAIN_ENV if light == "neutral" else f"{TRAIN_ENV}_{light}"
    return name if level == 1.0 else f"{name}{LEVEL_SUFFIX}{level:g}"


def split_level(name: str) -> tuple[str, float]:
    """``(environment name, level)`` of a name that may end in :data:`LEVEL_SUFFIX` ``<level>``."""
    base, sep, lv = name.rpartition(LEVEL_SUFFIX)
    if sep and base in ENVIRONMENTS:
        return base, float(lv)
    return name, 1.0


def equirect_directions(height: int, width: int) -> np.ndarray:
    """Unit directions of pixel centres: ``[H,W,3]`` float32 (see the module docstring)."""
    theta = math.pi * (np.arange(height) + 0.5) / height
    phi = 2 * math.pi * ((np.arange(width) + 0.5) / width - 0.5)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    d = np.stack([np.sin(th) * np.sin(ph), np.cos(th), -np.sin(th) * np.cos(ph)], -1)
    return d.astype(np.float32)


def direction_of(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector ``[3]`` for an azimuth (0 = +z, 90 = +x) and elevation above the horizon."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)], np.float32)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def make_envmap(
    spec: EnvSpec | str, height: int = 128, width: int | None = None, rotate_deg: float = 0.0
) -> np.ndarray:
    """Render a procedural environment.

    Args:
        spec: an :class:`EnvSpec` or the name of one in :data:`ENVIRONMENTS`.
        height: H; ``width`` defaults to ``2 H``.
        rotate_deg: rotate every light about +y by this azimuth (for rotating-light strips).
    Returns:
        ``[H,W,3]`` float32 linear radiance (non-negative).
    """
    if isinstance(spec, str):
        if spec not in ENVIRONMENTS:
            raise KeyError(f"unknown environment {spec!r}; choose from {sorted(ENVIRONMENTS)}")
        spec = ENVIRONMENTS[spec]
    width = width or 2 * height
    d = equirect_directions(height, width)
    y = d[..., 1:2]
    zen, hor, gnd = (np.asarray(c, np.float32) for c in (spec.zenith, spec.horizon, spec.ground))
    up = np.clip(y, 0, 1) ** 0.6
    sky = hor * (1 - up) + zen * up
    down = np.clip(-y, 0, 1) ** 0.4
    ground = hor * 0.5 * (1 - down) + gnd * down
    img = np.where(y >= 0, sky, ground)
    for L in spec.lights:
        c = direction_of(L.azimuth_deg + rotate_deg, L.elevation_deg)
        cosang = d @ c
        r = math.radians(L.radius_deg)
        inner, outer = math.cos(r * (1 - L.softness)), math.cos(r)
        w = _smoothstep(outer, inner, cosang)[..., None]
        img = img + w * np.asarray(L.rgb, np.float32)
    return np.ascontiguousarray(img.astype(np.float32))


def write_hdr(path: str, image: np.ndarray) -> None:
    """Write ``image [H,W,3]`` float32 linear RGB as a Radiance ``.hdr`` (atomically)."""
    import cv2

    from hravatar.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        ok = cv2.imwrite(str(tmp), np.ascontiguousarray(image[..., ::-1].astype(np.float32)))
        if not ok:
            raise OSError(f"{path}: could not write HDR")


#: Mean luminance of the irradiance over front-facing normals that every environment is scaled to,
#: so the unseen environments light the face about as brightly as the training one (the training's
#: level gauge, :func:`hravatar.light_priors.set_light_level`, measures the same statistic).
FRONT_IRRADIANCE = lp.FRONT_IRRADIANCE
#: Prefiltering settings of the ground-truth lighting (roughness levels 0, 0.25, ..., 1); the
#: base resolution is at most half the map's height.
PREFILTER = {"base_res": 64, "levels": 5, "samples": 128}


def front_irradiance(equirect: np.ndarray) -> float:
    """Mean luminance of the irradiance (``1/pi`` cosine convolution) over normals facing +z
    (:func:`hravatar.light_priors.front_directions`, as the level gauge measures it)."""
    import torch

    from hravatar.shading.cubemap import sample_cube
    from hravatar.shading.envmap_tools import irradiance_cube

    irr = irradiance_cube(torch.from_numpy(np.ascontiguousarray(equirect)), 16)
    return float(lp.luminance(sample_cube(irr, lp.front_directions()).mean(0)))


def normalized_envmap(
    name: str, height: int = 128, target: float = FRONT_IRRADIANCE, rotate_deg: float = 0.0
) -> np.ndarray:
    """:func:`make_envmap` scaled so that :func:`front_irradiance` equals ``target``."""
    env = make_envmap(name, height, rotate_deg=rotate_deg)
    base = make_envmap(name, height) if rotate_deg else env
    return (env * (target / max(front_irradiance(base), 1e-9))).astype(np.float32)


def make_lighting(name: str, height: int = 128, cache_dir: str | None = None):
    """A fixed :class:`~hravatar.shading.lighting.EnvironmentLighting` of a built-in environment
    (normalised to :data:`FRONT_IRRADIANCE`, times the level of a :data:`LEVEL_SUFFIX` name).

    The prefiltered maps are cached as ``<cache_dir>/<name>-<height>.safetensors`` when
    ``cache_dir`` is given (prefiltering takes several seconds per map on a CPU).

    Returns:
        ``(equirect [H,2H,3] float32 numpy, lighting)``.
    """
    import torch

    from hravatar.shading.envmap_tools import load_prefiltered, prefilter_envmap, save_prefiltered
    from hravatar.shading.lighting import EnvironmentLighting

    base, level = split_level(name)
    env = normalized_envmap(base, height, target=FRONT_IRRADIANCE * level)
    path = None
    if cache_dir is not None:
        from pathlib import Path

        path = Path(cache_dir) / f"{name}-{height}.safetensors"
        if path.is_file():
            pre = load_prefiltered(path)
            if pre.equirect is not None and np.allclose(pre.equirect.numpy(), env, rtol=1e-5, atol=1e-6):
                return env, EnvironmentLighting(pre)
    kw = dict(PREFILTER, base_res=max(16, min(PREFILTER["base_res"], height // 2)))
    pre = prefilter_envmap(torch.from_numpy(env), meta={"source": f"hravatar.synth.envmaps:{name}"}, **kw)
    if path is not None:
        save_prefiltered(pre, path)
    return env, EnvironmentLighting(pre)
