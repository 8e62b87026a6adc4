"""Priors that resolve the albedo / light colour ambiguity of inverse rendering (issue 18).

The image constrains only the product ``albedo x irradiance``: a redder light and a bluer albedo,
or a brighter light and a darker albedo, give the same video. The paper pins the split with
pseudo-ground-truth albedos from a diffusion model; without one, these priors do it, each with
its own weight in :class:`hravatar.losses.LossWeights` (0 switches it off):

* :func:`exposure_loss` (``light_exposure``): the learned irradiance averaged over front-facing
  normals has the luminance :data:`FRONT_IRRADIANCE`, the level every relighting environment of
  the synthetic subject is normalised to (a convention, like a camera's exposure: it fixes the
  overall brightness split, not the colour);
* :func:`neutral_light_loss` (``light_neutral``): that mean irradiance is grey (grey world on the
  light: right for a white-balanced video, wrong by the cast of a coloured light);
* :func:`specular_white_balance_loss` (``light_specular_wb``): the mean irradiance has the colour
  of the learned specular light (F0 is achromatic, so the colour of specular reflection is the
  light's: a white balance read from the highlights);
* :func:`skin_albedo_loss` (``skin_albedo``): the mean albedo of the foreground lies in a
  plausible band of skin reflectance chromaticity and brightness (hinge: no force inside it);
* :func:`transfer_light_cast` (``light_cast_transfer``, not a loss, on by default): after every
  shaded step the learned light's colour cast moves into the albedo (grey world as a projection);
* :func:`transfer_light_cast` with ``reference=`` :func:`specular_cast` (``light_cast_specular``):
  the cast transfer leaves the light the colour of the learned specular light instead of grey;
* :func:`specular_colour_loss` (``light_specular_colour``): the learned specular light is pulled
  to the diffuse light's colour. With the previous item diffuse and specular share one light
  colour (as F0 is achromatic), anchored by the skin-locus gauge; by default both act during the
  first half of the run only (``light_specular_until``), then grey world and a free specular
  light take over;
* :func:`transfer_skin_cast` (``skin_locus``, not a loss, on by default at 0.5): after the cast
  transfer the face's mean albedo moves toward published skin reflectance of its luminance
  (:func:`skin_locus_colour`, the ColorChecker skin patches), the light by the inverse;
* :func:`set_light_level` (``light_level`` / ``light_level_specular``, not a loss): after every
  shaded step the learned irradiance is rescaled to a level and the albedo by the inverse (the
  image is unchanged): a fixed level (an exposure convention) or the level of the learned
  specular light (:func:`specular_light_level`: F0 is bounded, so the highlights' magnitude
  measures the light's absolute level independently of the camera's exposure).

Colours are compared as log-chromaticities ``(log r - log g, log b - log g)``, which ignore the
overall scale. All functions return scalars and are differentiable.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

#: Luminance of the mean irradiance over front-facing normals that relighting environments are
#: normalised to (:data:`hravatar.synth.envmaps.FRONT_IRRADIANCE` is this constant).
FRONT_IRRADIANCE = 0.85
#: Rec. 709 luminance weights (linear RGB).
LUMA = (0.2126, 0.7152, 0.0722)
#: Plausible mean skin reflectance (linear RGB) as ``(lo, hi)`` bands of ``g/r``, ``b/r`` and
#: luminance: light to dark skin has green / red about 0.42-0.70 and blue / red about 0.20-0.55
#: (reflectance red-dominant, blue lowest, darker skin more saturated).
SKIN_BANDS = {"g_over_r": (0.42, 0.70), "b_over_r": (0.20, 0.55), "luminance": (0.04, 0.65)}


@lru_cache(maxsize=4)
def _front_dirs_cached(n: int, device: str) -> Tensor:
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(4 * n, 3, generator=g), dim=-1)
    d = d[d[:, 2] > 0.2][:n]
    return d.to(device)


def front_directions(n: int = 256, device: torch.device | str = "cpu") -> Tensor:
    """``[n,3]`` fixed random unit directions with z > 0.2 (facing the default camera, +z)."""
    return _front_dirs_cached(int(n), str(device))


def log_chroma(c: Tensor, eps: float = 1e-6) -> Tensor:
    """``[..., 2]`` log-chromaticity ``(log r - log g, log b - log g)`` of colours ``[..., 3]``."""
    lc = torch.log(c.clamp_min(eps))
    return torch.stack([lc[..., 0] - lc[..., 1], lc[..., 2] - lc[..., 1]], -1)


def luminance(c: Tensor) -> Tensor:
    """``[...]`` Rec. 709 luminance of linear RGB ``[..., 3]``."""
    w = torch.tensor(LUMA, dtype=c.dtype, device=c.device)
    return (c * w).sum(-1)


def _device_of(lighting) -> torch.device:  # noqa: ANN001 - any Lighting (learned or fixed)
    return next(iter([*lighting.parameters(), *lighting.buffers()]), torch.zeros(())).device


def mean_front_irradiance(lighting, n: int = 256) -> Tensor:  # noqa: ANN001 - any Lighting
    """``[3]`` mean irradiance of ``lighting`` over :func:`front_directions` (differentiable)."""
    dev = _device_of(lighting)
    return lighting.irradiance(front_directions(n, dev)).mean(0)


def mean_front_specular(lighting, roughness: float = 0.75, n: int = 256) -> Tensor:  # noqa: ANN001
    """``[3]`` mean prefiltered specular radiance over :func:`front_directions` at ``roughness``."""
    dev = _device_of(lighting)
    d = front_directions(n, dev)
    return lighting.specular(d, torch.full((d.shape[0], 1), float(roughness), device=dev)).mean(0)


def exposure_loss(irradiance_mean: Tensor, target: float = FRONT_IRRADIANCE, weight: float = 1.0) -> Tensor:
    """``weight * log(lum(E) / target)^2`` for the mean front irradiance ``E [3]``."""
    return weight * torch.log(luminance(irradiance_mean).clamp_min(1e-6) / target) ** 2


def neutral_light_loss(irradiance_mean: Tensor, weight: float = 1.0) -> Tensor:
    """``weight * |log_chroma(E)|^2``: 0 for a grey mean irradiance ``E [3]``."""
    return weight * (log_chroma(irradiance_mean) ** 2).sum()


def specular_white_balance_loss(irradiance_mean: Tensor, specular_mean: Tensor, weight: float = 1.0) -> Tensor:
    """``weight * |log_chroma(E) - log_chroma(S)|^2`` with the specular colour ``S [3]`` detached
    (the highlights are the measurement; only the diffuse light is pulled toward their colour)."""
    return weight * ((log_chroma(irradiance_mean) - log_chroma(specular_mean.detach())) ** 2).sum()


def specular_colour_loss(specular_mean: Tensor, irradiance_mean: Tensor, weight: float = 1.0,
                         tolerance: float = 0.0) -> Tensor:
    """``weight * max(0, |log_chroma(S) - log_chroma(E)| - tolerance)^2`` with the diffuse light's
    colour ``E [3]`` detached: the learned specular light ``S [3]`` is pulled to the colour of the
    diffuse light, up to ``tolerance`` (log-chromaticity distance; 0.1 is about 5 degrees).

    Physics: F0 is achromatic, so highlights have the colour of the light that also lights the
    diffuse term. Left free, the specular light takes on the skin's hue and the diffuse term
    explains the (whitish) highlights instead, which leaves the albedo too pale. The tolerance
    lets the highlights differ a little from the light's mean colour (an environment is not one
    colour; the mean diffuse colour is itself an estimate).
    """
    d2 = ((log_chroma(specular_mean) - log_chroma(irradiance_mean.detach())) ** 2).sum()
    if tolerance <= 0:
        return weight * d2
    return weight * torch.relu(d2.add(1e-12).sqrt() - float(tolerance)) ** 2


def _hinge(x: Tensor, lo: float, hi: float) -> Tensor:
    return torch.relu(lo - x) ** 2 + torch.relu(x - hi) ** 2


def mean_albedo(albedo: Tensor, mask: Tensor, alpha: Tensor | None = None) -> Tensor:
    """``[3]`` mean (straight) albedo over the ``mask``.

    Args:
        albedo: ``[B,H,W,3]`` or ``[H,W,3]`` alpha-premultiplied albedo (the rasterizer's) when
            ``alpha`` is given, else straight.
        mask: ``[...,H,W,1]`` weights in [0,1] (e.g. the foreground).
        alpha: ``[...,H,W,1]`` accumulated opacity of ``albedo``.
    """
    a = albedo.reshape(-1, 3)
    m = mask.reshape(-1, 1).to(a)
    den = (m * alpha.reshape(-1, 1)).sum() if alpha is not None else m.sum()
    return (a * m).sum(0) / den.clamp_min(1e-6)


def skin_albedo_loss(albedo_mean: Tensor, weight: float = 1.0, bands: dict | None = None) -> Tensor:
    """``weight *`` squared distance of the mean albedo ``[3]`` outside :data:`SKIN_BANDS`, summed
    over ``log(g/r)``, ``log(b/r)`` and ``log(luminance)`` (0 inside every band)."""
    b = SKIN_BANDS if bands is None else bands
    lc = torch.log(albedo_mean.clamp_min(1e-6))
    gr, br = lc[1] - lc[0], lc[2] - lc[0]
    ll = torch.log(luminance(albedo_mean).clamp_min(1e-6))
    loss = _hinge(gr, *(float(torch.log(torch.tensor(v))) for v in b["g_over_r"]))
    loss = loss + _hinge(br, *(float(torch.log(torch.tensor(v))) for v in b["b_over_r"]))
    loss = loss + _hinge(ll, *(float(torch.log(torch.tensor(v))) for v in b["luminance"]))
    return weight * loss


def chromaticity_angle_deg(a: Tensor, b: Tensor) -> float:
    """Angle in degrees between two RGB colours ``[3]`` (0 = the same chromaticity, any scale)."""
    a, b = a.double().flatten(), b.double().flatten()
    c = float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-12))
    return float(torch.rad2deg(torch.arccos(torch.tensor(min(1.0, max(-1.0, c))))))


def specular_cast(lighting, n: int = 256) -> Tensor:  # noqa: ANN001 - any Lighting
    """``[3]`` colour cast (luminance 1) of the learned specular light at roughness 1, averaged over
    :func:`front_directions`: the light's colour as the highlights measure it (F0 is achromatic)."""
    s = mean_front_specular(lighting, roughness=1.0, n=n)
    return s / luminance(s).clamp_min(1e-6)


#: Largest mean of the irradiance's sigmoid that :func:`move_colour_to_albedo` asks for: above it
#: the light would flatten into the sigmoid's ceiling (a target of 1 or more is unreachable).
_SIGMOID_MEAN_MAX = 0.8


@torch.no_grad()
def move_colour_to_albedo(albedo_logits: Tensor, lighting, c: Tensor, iters: int = 6) -> Tensor:  # noqa: ANN001
    """Multiply the albedo by the per-channel factor ``c [3]`` and divide the learned irradiance by it.

    The product albedo x irradiance is unchanged for the diffuse term (up to the sigmoid's clamp):
    the irradiance's mean over front-facing normals becomes ``E / c`` by a per-channel shift of
    the irradiance parameter (the cosine kernel's rows sum to 1, so a constant shift passes
    through the convolution) found by a few Newton steps on the log of the mean: exact in the
    sigmoid's exponential tail too, where the light of a long run under a coloured light sits
    (Newton on the mean itself stalled there and left the light in place while the albedo moved,
    so the image changed). Where a channel would need a sigmoid mean above 0.8 (unreachable at 1,
    a flat saturated light near it), the shared gain ``diffuse_log_gain`` is raised first and the
    sigmoid asked for correspondingly less.

    Args:
        albedo_logits: ``[N,3]`` pre-sigmoid albedo parameter (modified in place).
        lighting: a :class:`~hravatar.shading.lighting.LearnableLighting` (its ``diffuse_map``
            and ``diffuse_log_gain`` are modified in place).
        c: ``[3]`` positive factors.
    Returns:
        ``[3]`` the factor applied to the albedo (``c``).
    """
    from hravatar.shading.cubemap import sample_cube

    e = mean_front_irradiance(lighting)
    target = e / c / torch.exp(lighting.diffuse_log_gain)  # in units of the sigmoid (before the gain)
    hi = float(target.max())
    if hi > _SIGMOID_MEAN_MAX:  # a sigmoid's mean cannot reach it: the shared gain takes the excess
        lighting.diffuse_log_gain.add_(math.log(hi / _SIGMOID_MEAN_MAX))
        target = target * (_SIGMOID_MEAN_MAX / hi)
    dirs = front_directions(256, lighting.diffuse_map.device)
    yd = sample_cube(lighting.diffuse_cube(), dirs)  # [n,3] pre-activation at the directions
    delta = torch.zeros(3, device=yd.device, dtype=yd.dtype)
    log_t = torch.log(target.clamp_min(1e-30))
    for _ in range(iters):  # Newton on log(mean(sigmoid(yd + delta))) = log(target), per channel
        sg = torch.sigmoid(yd + delta)
        m = sg.mean(0).clamp_min(1e-30)
        f = torch.log(m) - log_t
        df = ((sg * (1 - sg)).mean(0) / m).clamp_min(1e-6)  # in (0, 1]: ~1 in the tail, small near 1
        delta = (delta - f / df).clamp(-8.0, 8.0)
    lighting.diffuse_map.add_(delta)
    a = (torch.sigmoid(albedo_logits) * c).clamp(1e-4, 1 - 1e-4)
    albedo_logits.copy_(torch.log(a / (1 - a)))
    return c


#: Largest pre-activation of the learned irradiance that :func:`renormalise_light_tail` leaves deep
#: in the sigmoid's tail: below it ``sigmoid(x) = exp(x) (1 + O(4.5e-5))``.
TAIL_CEILING = -10.0


@torch.no_grad()
def renormalise_light_tail(lighting) -> float:  # noqa: ANN001 - a LearnableLighting
    """Keep a learned irradiance that has sunk into the sigmoid's exponential tail from underflowing.

    Under a coloured light the gauges' colour moves dim the light a little each step and the level
    gauge restores it through the gain, so over a run the irradiance's pre-activation sinks (about
    -6 after 200 iterations, -15 to -25 after 1500) and the gain grows; in the tail
    the sigmoid is an exponential, which gives the light a high dynamic range (measured: better
    fits than a light held in the sigmoid's middle), but float32 underflows below about -87.
    When every texel lies below :data:`TAIL_CEILING` the map is shifted up until its largest texel
    is there and the gain lowered by the same amount: ``sigmoid(x + d) exp(-d) = sigmoid(x)`` to
    within 4.5e-5 relative, so the irradiance (and the image) is kept.

    Returns:
        the shift ``d`` (0 when nothing moved).
    """
    top = float(lighting.diffuse_map.max())
    if top >= TAIL_CEILING:
        return 0.0
    d = TAIL_CEILING - top
    lighting.diffuse_map.add_(d)
    lighting.diffuse_log_gain.sub_(d)
    return d


@torch.no_grad()
def transfer_light_cast(albedo_logits: Tensor, lighting, fraction: float = 1.0, iters: int = 6,  # noqa: ANN001
                        reference: Tensor | None = None) -> Tensor:
    """Move the colour cast of the learned light into the albedo (grey world as a gauge fix).

    With ``E`` the mean front irradiance and ``c = E / lum(E)`` its cast (luminance 1), the albedo
    is multiplied by ``c ** fraction`` and the irradiance divided by it
    (:func:`move_colour_to_albedo`: the diffuse image is unchanged).

    Why a projection and not only a loss: the light's learning rate is 10x the albedo's, so with
    the loss alone the albedo learns the face's colour too slowly in a short run.

    Args:
        albedo_logits: ``[N,3]`` pre-sigmoid albedo parameter (modified in place).
        lighting: a :class:`~hravatar.shading.lighting.LearnableLighting` (modified in place).
        fraction: 1 moves the whole cast, 0 nothing.
        reference: ``[3]`` the colour the light's mean should keep (``None``: grey, the grey-world
            assumption); only the cast relative to it moves into the albedo. E.g.
            :func:`specular_cast`: the diffuse light takes the highlights' colour.
    Returns:
        ``[3]`` the factor applied to the albedo.
    """
    e = mean_front_irradiance(lighting)
    c = e / luminance(e).clamp_min(1e-6)
    if reference is not None:
        r = reference.detach().to(c).clamp_min(1e-6)
        c = c / (r / luminance(r).clamp_min(1e-6))
    return move_colour_to_albedo(albedo_logits, lighting, c.clamp(0.2, 5.0) ** float(fraction), iters)


#: Published skin reflectance used by the skin-locus gauge: the ColorChecker Classic's "light
#: skin" and "dark skin" patches, 8-bit sRGB (194, 150, 130) and (115, 82, 68) (BabelColor's
#: average of measured charts, D50 -> sRGB; the patches were designed to reproduce the spectral
#: reflectance of light and dark human skin: McCamy, Marcus & Davidson 1976). Linear RGB about
#: (0.539, 0.305, 0.223) and (0.171, 0.084, 0.058): luminance 0.35 and 0.10.
SKIN_PATCHES_SRGB8 = ((194.0, 150.0, 130.0), (115.0, 82.0, 68.0))


def srgb_decode(c: Tensor) -> Tensor:
    """sRGB-encoded values -> linear (IEC 61966-2-1)."""
    c = c.clamp(0, 1)
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def srgb_encode(c: Tensor) -> Tensor:
    """Linear values -> sRGB-encoded (IEC 61966-2-1)."""
    c = c.clamp(0, 1)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def skin_locus_colour(lum: Tensor | float) -> Tensor:
    """``[3]`` linear skin reflectance of luminance ``lum`` on the locus through
    :data:`SKIN_PATCHES_SRGB8`: the log-chromaticity ``(log g/r, log b/r)`` interpolated linearly in
    ``log(luminance)`` between the light and the dark patch (extrapolated at most one patch
    distance beyond either end): darker skin is redder (more melanin absorbs more blue and green)."""
    lum_t = torch.as_tensor(lum, dtype=torch.float32).clamp_min(1e-4)
    p = srgb_decode(torch.tensor(SKIN_PATCHES_SRGB8, device=lum_t.device) / 255.0)  # [2,3] linear
    lc = log_chroma(p)  # [2,2] (log r/g, log b/g)
    ll = torch.log(luminance(p))
    t = ((torch.log(lum_t) - ll[0]) / (ll[1] - ll[0])).clamp(-1.0, 2.0)
    lc_t = lc[0] * (1 - t) + lc[1] * t
    rgb = torch.exp(torch.stack([lc_t[0], torch.zeros((), device=lum_t.device), lc_t[1]]))  # g = 1
    return rgb * lum_t / luminance(rgb)


@torch.no_grad()
def transfer_skin_cast(albedo_logits: Tensor, lighting, face_weights: Tensor, fraction: float = 1.0,  # noqa: ANN001
                       srgb_frames: bool = False) -> Tensor:
    """Skin-locus gauge: give the face's mean albedo the chromaticity of published skin reflectance
    of the same luminance (:func:`skin_locus_colour`), moving the difference into the light.

    With ``A`` the (weighted) mean albedo of the face points and ``T`` the locus colour of
    ``A``'s luminance, the albedo is multiplied by ``c = (T / lum T) / (A / lum A)`` (to the power
    ``fraction``) and the irradiance divided by it (:func:`move_colour_to_albedo`: the image is
    unchanged). The video's light colour along the skin locus (warm / cool) is then read from the
    face's brightness, which the level gauge ties to the exposure convention.

    Args:
        albedo_logits: ``[N,3]`` pre-sigmoid albedo (modified in place).
        lighting: a :class:`~hravatar.shading.lighting.LearnableLighting` (modified in place).
        face_weights: ``[N]`` weight of each point in the face mean (e.g. opacity on face-region
            points, 0 elsewhere).
        fraction: 1 reaches the locus, smaller values move part of the way (in log).
        srgb_frames: the training frames are sRGB-encoded (a video) rather than linear (the
            synthetic subject): the albedo is decoded before the locus is looked up and the
            target encoded back, so the prior compares reflectances either way.
    Returns:
        ``[3]`` the factor applied to the albedo (ones when there are no face points).
    """
    w = face_weights.to(albedo_logits).reshape(-1, 1)
    if float(w.sum()) <= 0:
        return torch.ones(3, device=albedo_logits.device)
    a = (torch.sigmoid(albedo_logits) * w).sum(0) / w.sum()
    lin = srgb_decode(a) if srgb_frames else a
    t = skin_locus_colour(luminance(lin)).to(a)
    t = srgb_encode(t) if srgb_frames else t
    c = (t / luminance(t).clamp_min(1e-6)) / (a / luminance(a).clamp_min(1e-6))
    return move_colour_to_albedo(albedo_logits, lighting, c.clamp(0.2, 5.0) ** float(fraction))


def specular_light_level(lighting, n: int = 256) -> Tensor:  # noqa: ANN001 - any Lighting
    """Luminance of the mean specular radiance at roughness 1 over :func:`front_directions`.

    At roughness 1 the prefiltered specular light is (nearly) the cosine-weighted average of the
    environment, the same average the irradiance is, so a physically consistent light has
    ``specular_light_level == luminance(mean_front_irradiance)``. In the image the specular term is
    ``~F0 x`` this light and F0 is bounded (the avatar's [0.04, 0.15]; skin about 0.03-0.05), so
    the highlights fix the specular light's absolute level whatever the camera's exposure.
    """
    return luminance(mean_front_specular(lighting, roughness=1.0, n=n))


@torch.no_grad()
def matched_exposure(env, reference) -> float:  # noqa: ANN001 - any two Lightings
    """Exposure (stops) that gives ``env`` the front irradiance level of ``reference``.

    The level is the luminance of :func:`mean_front_irradiance`, the statistic the training's
    level gauge (:func:`set_light_level`) fixes, so an avatar's albedo meets a new environment at
    the brightness it was learned at. ``env``'s own exposure is ignored (the result replaces it);
    0 when either level is not positive.
    """
    e0 = env.exposure
    env.exposure = 0.0
    try:
        m_env = float(luminance(mean_front_irradiance(env)))
    finally:
        env.exposure = e0
    m_ref = float(luminance(mean_front_irradiance(reference)))
    if not (m_env > 0 and m_ref > 0):
        return 0.0
    return float(torch.log2(torch.tensor(m_ref / m_env, dtype=torch.float64)))


@torch.no_grad()
def set_light_level(albedo_logits: Tensor, lighting, level: float | Tensor, fraction: float = 1.0) -> float:  # noqa: ANN001
    """Gauge fix of the brightness split: rescale the learned irradiance to ``level`` (luminance of
    its mean over front-facing normals) and the albedo by the inverse factor.

    The irradiance is ``exp(diffuse_log_gain) * sigmoid(...)``: the gain is multiplied by
    ``s = (level / current) ** fraction`` and the albedo divided by ``s``, so ``albedo x irradiance``
    and the diffuse image are unchanged (except where ``albedo / s`` would leave (0, 1): clamped to
    [1e-4, 1 - 1e-4]); the specular light is left as it is. Unlike a loss on the level (the
    ``light_exposure`` prior) it costs the fit nothing: the light's shape keeps the sigmoid's whole
    range and its peaks can exceed 1.

    Args:
        albedo_logits: ``[N,3]`` pre-sigmoid albedo (modified in place).
        lighting: a :class:`~hravatar.shading.lighting.LearnableLighting` (its gain is modified).
        level: target luminance of the mean front irradiance (> 0).
        fraction: 1 reaches the level at once, smaller values move part of the way (in log).
    Returns:
        ``s``, the factor applied to the irradiance.
    """
    e = float(luminance(mean_front_irradiance(lighting)))
    s = (max(float(level), 1e-6) / max(e, 1e-6)) ** float(fraction)
    lighting.diffuse_log_gain.add_(float(torch.log(torch.tensor(s, dtype=torch.float64))))
    a = (torch.sigmoid(albedo_logits) / s).clamp(1e-4, 1 - 1e-4)
    albedo_logits.copy_(torch.log(a / (1 - a)))
    return s
