"""Training losses of HRAvatar with the paper's weights (DESIGN.md section 5).

    L = 0.8 L1 + 0.2 D-SSIM                  (shaded image vs. frame; D-SSIM = 1 - SSIM)
      + 0.1 ||jaw_tracked - jaw_pred||^2      (jaw regulariser, when the encoder predicts the jaw)
      + 1e-2 mean_fg(1 - <N_depth, N_render>) (normal consistency; N_depth from rendered depth)
      + 0.25 L1(A, A_pseudo)                  (albedo prior, when pseudo albedos exist)
      + 2e-2 TV(roughness map)                (total variation)
      + w_p LPIPS_alex(crop(image), crop(frame))  (optional perceptual term, off by default; not in the paper:
                                               :func:`perceptual_loss`, README "Quality on a real clip")

and, for subjects without pseudo albedos, after every shaded step the learned light's colour cast
moves into the albedo (``light_cast_transfer``, :func:`hravatar.light_priors.transfer_light_cast`),
half of the face albedo's distance to the published skin locus moves back into the light
(``skin_locus``, :func:`hravatar.light_priors.transfer_skin_cast`) and the light's level is set to
the relighting convention (``light_level``, :func:`hravatar.light_priors.set_light_level`); the
other colour priors of :mod:`hravatar.light_priors` are off by default.

Images are channels-last ``[B,H,W,C]`` (a single ``[H,W,C]`` counts as B = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hravatar.metrics import ssim, ssim_map


def _b(x: Tensor) -> Tensor:
    return x[None] if x.dim() == 3 else x


@dataclass
class LossWeights:
    """Loss weights; defaults are the paper's."""

    l1: float = 0.8
    """weight of the L1 photometric term"""
    dssim: float = 0.2
    """weight of D-SSIM = 1 - SSIM (11x11 Gaussian window, sigma 1.5)"""
    saturation: float = 254.0 / 255.0
    """frame values at or above this are saturated (the camera clipped them; the truth is this or
    brighter): there the render only has to reach the frame's value, brighter costs nothing
    (hravatar.losses.clip_to_saturation; not in the paper; 0 = off). Without it a clipped channel, e.g.
    the red of light skin under a warm light, drags the albedo and the light's colour down"""
    jaw: float = 0.1
    """jaw regulariser: squared distance between predicted and tracked jaw axis-angle"""
    normal: float = 1e-2
    """normal consistency between depth-derived and rendered normals on the foreground"""
    albedo: float = 0.25
    """L1 to pseudo albedos (used only when the subject has them)"""
    roughness_tv: float = 2e-2
    """total variation of the rendered roughness map"""
    silhouette: float = 0.0
    """L1 between the rendered alpha and the subject's matte (not in the paper; used only when the
    frame has a matte, i.e. some pixel below 1): over a black background a dark or thin outline
    costs the photometric loss little, so the silhouette drifts inside the matte"""
    perceptual: float = 0.0
    """LPIPS (AlexNet) between the shaded image and the frame, on the foreground box; not in the
    paper, off by default: on the real clip it lowered LPIPS AlexNet (its own network) by a quarter
    but LPIPS VGG (the evaluation's headline) only by 2.5%, and cost PSNR and SSIM (README,
    "Quality on a real clip": the perceptual term)"""
    perceptual_from: float = 0.0
    """fraction of the run after which the perceptual term is on (0: from the first iteration)"""
    perceptual_crop: int = 0
    """side (pixels) of a random square crop of the foreground box the perceptual term sees
    (cheaper; 0: the whole box)"""
    # ---- albedo / light colour priors (hravatar.light_priors; issue 18), used without pseudo albedos ----
    light_exposure: float = 0.0
    """mean front irradiance of the learned light has the relighting environments' luminance"""
    light_neutral: float = 0.0
    """mean front irradiance of the learned light is grey (grey world, as a loss)"""
    light_specular_wb: float = 0.0
    """mean irradiance has the colour of the learned specular light (white balance from highlights)"""
    light_specular_colour: float = 10.0
    """the learned specular light's mean colour is pulled to the diffuse light's (detached): F0 is
    achromatic, so highlights have the light's colour (hravatar.light_priors.specular_colour_loss).
    With light_cast_specular = 1, diffuse and specular share one light colour, anchored by the
    skin-locus gauge; by default only for the first half of the run (light_specular_until), which
    fixes the diffuse / specular split; chosen by benchmarks/relight_priors.py, the demo and the
    real clip (README, issue 18); 0 = off"""
    light_specular_colour_tolerance: float = 0.0
    """light_specular_colour costs nothing while the two colours are within this log-chromaticity
    distance (0.1 is about 5 degrees)"""
    light_specular_until: float = 0.5
    """fraction of the run after which light_cast_specular and light_specular_colour switch off
    (grey world and a free specular light from then on; 1 = never). 0.5 by default: the shared
    colour sets the diffuse / specular split, grey world then sets the colour (README, issue 18)"""
    skin_albedo: float = 0.0
    """mean foreground albedo within a plausible band of skin chromaticity and brightness"""
    light_cast_transfer: float = 1.0
    """not a loss: after every shaded step, move this fraction of the learned light's colour cast
    into the albedo (grey world as a hard gauge fix; 0 = off). On by default for subjects without
    pseudo albedos: chosen by benchmarks/relight_priors.py (README, issue 18)"""
    light_cast_specular: float = 1.0
    """with light_cast_transfer: the cast transfer leaves the learned light the colour of its
    specular light (at roughness 1) raised to this power instead of grey (0 = grey world; 1, the
    default while light_specular_until lasts, = the specular light's colour; with
    light_specular_colour, which keeps the specular light the diffuse light's colour, diffuse and
    specular then share one light colour)"""
    skin_locus: float = 0.5
    """not a loss: after every shaded step (after the cast transfer), move the face region's mean
    albedo this fraction (in log) of the way to the chromaticity of published skin reflectance of
    its luminance (the ColorChecker skin patches' locus, hravatar.light_priors.skin_locus_colour),
    the light by the inverse (the image is unchanged; 0 = off, grey world alone; 0.5, the default:
    halfway between the grey-world and the skin-locus estimates of the light's colour; chosen by
    benchmarks/relight_priors.py, README, issue 18)"""
    light_level: float = 0.85
    """not a loss: after every shaded step, rescale the learned irradiance so that its mean over
    front-facing normals has this luminance, and the albedo by the inverse (the image is unchanged;
    an exposure convention, the level relighting environments are normalised to; 0 = off). On by
    default for subjects without pseudo albedos: chosen by benchmarks/relight_priors.py (README)"""
    light_level_specular: float = 0.0
    """not a loss: after every shaded step, move this fraction (in log) of the way from the learned
    irradiance's level to the learned specular light's level at roughness 1, the albedo by the
    inverse (the highlights measure the light's absolute level; 0 = off; overrides light_level)"""


def _nonzero_box(pred: Tensor, target: Tensor, margin: int) -> tuple[int, int, int, int] | None:
    """Rows/cols ``(y0, y1, x0, x1)`` (half-open) of the box holding every non-zero pixel of ``pred``
    or ``target`` (``[B,H,W,C]``), grown by ``margin`` and clamped to the image; ``None`` when
    that box is the whole image or there is no non-zero pixel at all."""
    with torch.no_grad():
        nz = ((pred != 0) | (target != 0)).any(-1).any(0)  # [H,W]
        rows, cols = nz.any(1), nz.any(0)
        if not bool(rows.any()):
            return None
        ry, rx = rows.nonzero()[:, 0], cols.nonzero()[:, 0]
        H, W = nz.shape
        y0, y1 = max(0, int(ry[0]) - margin), min(H, int(ry[-1]) + 1 + margin)
        x0, x1 = max(0, int(rx[0]) - margin), min(W, int(rx[-1]) + 1 + margin)
    if (y0, y1, x0, x1) == (0, H, 0, W):
        return None
    return y0, y1, x0, x1


#: the SSIM box's sides are rounded up to this multiple on CUDA (see :func:`ssim_black_background`).
CUDA_BOX_MULTIPLE = 64


def _grow_to_multiple(lo: int, hi: int, n: int, m: int) -> tuple[int, int]:
    """``[lo, hi)`` inside ``[0, n)`` grown to a length that is a multiple of ``m`` (or ``n``):
    first towards ``n``, then towards 0."""
    length = min(n, -(-(hi - lo) // m) * m)
    hi = min(n, lo + length)
    return hi - length, hi


def ssim_black_background(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5,
                          box_multiple: int | None = None) -> Tensor:
    """:func:`hravatar.metrics.ssim` (zero-padded "same" SSIM, mean per image ``[B]``) computed only
    where it can differ from 1.

    Where both images are exactly 0 in a pixel's whole window (a black background), SSIM is
    exactly ``(c1 c2) / (c1 c2) = 1`` and its derivatives with respect to every pixel of that
    window are exactly 0. So SSIM differs from 1 only within one window radius r of the non-zero
    pixels, and only pixels within 2r get a gradient: the SSIM map is computed on the box of
    non-zero pixels grown by 2r (inside it the zero padding sees the same zeros as the full image
    would) and every pixel outside counts as 1: the same value up to the order of the sum, the
    same gradient.

    ``box_multiple``: the box's sides are rounded up to a multiple of this (default: 64 on CUDA,
    1 elsewhere), which changes nothing but the shapes the convolutions see.
    """
    pred, target = _b(pred), _b(target)
    box = _nonzero_box(pred, target, 2 * (window // 2))
    if box is None:
        return ssim(pred, target, window, sigma)
    H, W, C = pred.shape[1:4]
    y0, y1, x0, x1 = box
    m = box_multiple or (CUDA_BOX_MULTIPLE if pred.is_cuda else 1)
    if m > 1:
        # any larger box gives the same value: grow its sides to a multiple of m, so that cuDNN
        # meets a few box shapes (it plans every new convolution shape, ~0.4 s each on an H200)
        y0, y1 = _grow_to_multiple(y0, y1, H, m)
        x0, x1 = _grow_to_multiple(x0, x1, W, m)
    inner = ssim_map(pred[:, y0:y1, x0:x1], target[:, y0:y1, x0:x1], window, sigma).flatten(1).sum(1)
    n_out = (H * W - (y1 - y0) * (x1 - x0)) * C
    return (inner + n_out) / (H * W * C)


def clip_to_saturation(pred: Tensor, target: Tensor, threshold: float) -> Tensor:
    """``pred`` where it is compared with unclipped frame values; ``min(pred, target)`` where the
    frame is saturated (``target >= threshold``, per channel). Any ``[..., C]`` shape.

    A camera clips: a saturated pixel says only "at least this bright". Comparing the render with
    it through this makes the photometric loss one-sided there (a brighter render costs nothing,
    a darker one costs as before). ``threshold <= 0`` returns ``pred`` unchanged.
    """
    if threshold <= 0:
        return pred
    return torch.where(target >= threshold, torch.minimum(pred, target), pred)


def photometric_loss(
    pred: Tensor, target: Tensor, l1_weight: float = 0.8, dssim_weight: float = 0.2
) -> Tensor:
    """``l1_weight * L1 + dssim_weight * (1 - SSIM)`` over ``[B,H,W,3]`` images; scalar.

    SSIM is the full-image zero-padded one (:func:`hravatar.metrics.ssim`), evaluated through
    :func:`ssim_black_background`: images over a black background cost only their foreground box.
    """
    pred, target = _b(pred), _b(target)
    loss = l1_weight * (pred - target).abs().mean()
    if dssim_weight:
        loss = loss + dssim_weight * (1 - ssim_black_background(pred, target)).mean()
    return loss


def silhouette_loss(alpha: Tensor, matte: Tensor, weight: float) -> Tensor:
    """``weight * mean|alpha - matte|`` over ``[B,H,W,1]`` (or ``[H,W,1]``) maps in [0,1]; scalar.

    The rendered accumulated opacity against the ground-truth matte, so that the avatar's outline
    (hair, ears, cheeks, the neck's cut) is trained directly and not only through its colour."""
    return weight * (_b(alpha) - _b(matte)).abs().mean()


def foreground_crop(pred: Tensor, target: Tensor, crop: int = 0, margin: int = 8,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``pred`` and ``target`` (``[B,H,W,C]``) cut to the box of their non-zero pixels grown by
    ``margin`` (the whole images when there is none); with ``crop > 0`` a random ``crop x crop``
    window of that box (drawn from ``generator`` or torch's global generator; the box itself
    when it is smaller). Returns the two crops ``[B,h,w,C]``."""
    pred, target = _b(pred), _b(target)
    box = _nonzero_box(pred, target, margin)
    y0, y1, x0, x1 = box if box is not None else (0, pred.shape[1], 0, pred.shape[2])
    if crop > 0:
        h, w = min(crop, y1 - y0), min(crop, x1 - x0)
        r = torch.randint(0, 1 << 30, (2,), generator=generator)
        y0 += int(r[0]) % (y1 - y0 - h + 1)
        x0 += int(r[1]) % (x1 - x0 - w + 1)
        y1, x1 = y0 + h, x0 + w
    return pred[:, y0:y1, x0:x1], target[:, y0:y1, x0:x1]


def perceptual_loss(pred: Tensor, target: Tensor, net: torch.nn.Module, weight: float = 0.1, crop: int = 0,
                    generator: torch.Generator | None = None) -> Tensor:
    """``weight * LPIPS(pred, target)`` on the foreground box (:func:`foreground_crop`), batch
    mean; ``net`` is a :class:`hravatar.metrics.LPIPS` (frozen; the gradient flows to ``pred``).
    Images ``[B,H,W,3]`` in [0,1] over a black background. Scalar."""
    a, b = foreground_crop(pred, target, crop, generator=generator)
    if min(a.shape[1], a.shape[2]) < 32:  # AlexNet's pooling needs some room; a tiny box has no texture
        return pred.sum() * 0.0
    return weight * net(a, b).mean()


def jaw_loss(jaw_pred: Tensor, jaw_tracked: Tensor, weight: float = 0.1) -> Tensor:
    """``weight * ||jaw_tracked - jaw_pred||^2`` (axis-angle ``[B,3]``, radians), batch mean; scalar."""
    return weight * ((jaw_pred - jaw_tracked) ** 2).sum(-1).mean()


def normal_consistency_loss(n_depth: Tensor, n_render: Tensor, mask: Tensor, weight: float = 1e-2) -> Tensor:
    """``weight * mean_mask(1 - <n_depth, n_render>)``; normals ``[B,H,W,3]`` in the same frame,
    ``mask [B,H,W,1]`` in [0,1] (foreground, times depth validity). The depth normals are
    compared as given (callers usually detach neither: both geometry paths learn). Scalar."""
    n_depth, n_render, mask = _b(n_depth), _b(n_render), _b(mask)
    a, b = F.normalize(n_depth, dim=-1, eps=1e-12), F.normalize(n_render, dim=-1, eps=1e-12)
    cos = (a * b).sum(-1, keepdim=True)
    return weight * ((1 - cos) * mask).sum() / mask.sum().clamp_min(1.0)


def albedo_prior_loss(
    albedo: Tensor, pseudo: Tensor, mask: Tensor | None = None, weight: float = 0.25
) -> Tensor:
    """``weight * L1(albedo, pseudo)`` over ``[B,H,W,3]`` maps (foreground ``mask`` if given). Scalar."""
    d = (_b(albedo) - _b(pseudo)).abs()
    if mask is None:
        return weight * d.mean()
    m = _b(mask).expand_as(d)
    return weight * (d * m).sum() / m.sum().clamp_min(1.0)


def tv_loss(x: Tensor, mask: Tensor | None = None, weight: float = 2e-2) -> Tensor:
    """Anisotropic total variation ``weight * mean(|dx| + |dy|)`` of a map ``[B,H,W,C]``; with
    ``mask [B,H,W,1]`` only differences between two foreground pixels count. Scalar."""
    x = _b(x)
    dx = (x[:, :, 1:] - x[:, :, :-1]).abs()
    dy = (x[:, 1:] - x[:, :-1]).abs()
    if mask is None:
        return weight * (dx.mean() + dy.mean())
    m = _b(mask)
    mx = m[:, :, 1:] * m[:, :, :-1]
    my = m[:, 1:] * m[:, :-1]
    return weight * ((dx * mx).sum() / (mx.sum() * x.shape[-1]).clamp_min(1.0)
                     + (dy * my).sum() / (my.sum() * x.shape[-1]).clamp_min(1.0))
