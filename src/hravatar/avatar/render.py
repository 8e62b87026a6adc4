"""Deform -> G-buffer -> shade: the one render path of an avatar (training and every app alike).

:func:`rasterize_gbuffer` poses the Gaussians with a :class:`~hravatar.avatar.params.FrameParams`
and rasterizes their materials and camera-facing normals into a :class:`GBuffer` whose channel
layout (:data:`GBUFFER_LAYOUT`) is owned here; :func:`render` shades it with any
:class:`~hravatar.shading.lighting.Lighting` (split-sum, only the covered pixels by default) and
returns a :class:`RenderOutput`. Both are differentiable (the trainer calls them under autograd);
:meth:`hravatar.avatar.Avatar.render` is the inference entry point (no autograd).

Inference fast path: when no gradient is needed (``torch.no_grad()``), on the CPU, with the
``auto``/``cpu`` backend and a blendshape-rigged avatar, ``fast=None`` (the default) uses the C++
inference kernels: :func:`hravatar.render.fast.fast_gbuffer` (fused deformation, projection +
rasterization) and :func:`hravatar.shading.fast.shade_foreground_fast` (learned or environment
lighting). The images equal the differentiable path's up to float round-off
(``tests/test_render_fast.py``). ``fast=False`` forces the differentiable path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from hravatar.avatar.params import Camera, FrameParams

Mode = Literal["pbr", "albedo", "color"]

#: Channels of the rasterized G-buffer features (alpha-accumulated): albedo 3, roughness 1, F0 1,
#: world normal 3 (each Gaussian's shortest axis, facing the camera). The rasterizer appends the
#: expected depth (``render_mode="RGB+ED"``), kept separately in :attr:`GBuffer.depth`.
GBUFFER_LAYOUT: dict[str, slice] = {"albedo": slice(0, 3), "roughness": slice(3, 4), "f0": slice(4, 5),
                                    "normal": slice(5, 8)}
#: Channels of the no-PBR ablation's features: plain per-point colour.
COLOR_LAYOUT: dict[str, slice] = {"color": slice(0, 3)}
#: Material names :func:`render` accepts as per-point overrides.
MATERIALS = ("albedo", "roughness", "f0", "colors")
#: gsplat's screen-space low-pass (pixels^2 added to every 2D covariance), the value training uses.
EPS2D = 0.3


def footprint_eps2d(render_focal: float, train_focal: float | None, eps2d: float = EPS2D) -> float:
    """The 2D low-pass that renders an avatar at another resolution as it was trained (pixels^2).

    Training adds ``eps2d`` px^2 to every projected covariance at the training resolution, so the
    optimiser is free to make Gaussians much thinner than a training pixel (a 128 px avatar is full
    of them: eyelids, lip lines, hair strands). Rendered with a focal length ``k`` times longer
    (a 4x larger image), the same 0.3 px^2 is ``k^2`` times too small a blur: the thin Gaussians
    show as dark streaks and holes, and the silhouette erodes (Mip-Splatting's "zoom-in"
    artefact; on the real clip, a 128 px avatar at 512 px lost 6 dB PSNR against its own
    128 px render upsampled). Adding ``eps2d * k^2`` instead is, to first order in the projection,
    the training's low-pass in world units: the image is then the training-resolution image
    sampled more finely. Rendering smaller than training (``k < 1``) keeps ``eps2d``.

    Args:
        render_focal: focal length of the render camera (pixels, ``K[0,0]``).
        train_focal: focal length of the training images (pixels); ``None``: unknown, ``eps2d``.
    Returns:
        ``eps2d * max(1, render_focal / train_focal)^2``.
    """
    if not train_focal or train_focal <= 0:
        return eps2d
    return eps2d * max(1.0, float(render_focal) / float(train_focal)) ** 2


@dataclass
class GBuffer:
    """A rasterized G-buffer, all ``[C,H,W,*]`` (C cameras; one here).

    Attributes:
        features: ``[C,H,W,D+1]`` the rasterizer's output: alpha-accumulated features in the channel
            layout ``layout`` (:data:`GBUFFER_LAYOUT`, or :data:`COLOR_LAYOUT` for the no-PBR
            ablation), then the depth channel.
        alpha: ``[C,H,W,1]`` accumulated opacity. depth: ``[C,H,W,1]`` expected camera z (metres,
            alpha-normalised by the rasterizer). meta: the rasterizer's (for densification).
    """

    features: Tensor
    alpha: Tensor
    depth: Tensor
    meta: dict[str, Any]
    layout: Mapping[str, slice]

    def accumulated(self, name: str) -> Tensor:
        """Channel(s) ``name`` as rasterized (alpha-accumulated over black)."""
        return self.features[..., self.layout[name]]

    def average(self, name: str, eps: float = 1e-6) -> Tensor:
        """Channel(s) ``name`` per covered surface: divided by ``alpha.clamp_min(eps)``."""
        return self.accumulated(name) / self.alpha.clamp_min(eps)

    def normal(self) -> Tensor:
        """``[C,H,W,3]`` unit world normals (zero where nothing is covered)."""
        return F.normalize(self.accumulated("normal"), dim=-1, eps=1e-8)

    def shading_input(self) -> dict[str, Tensor]:
        """The alpha-accumulated maps for :func:`hravatar.shading.shade.shade` (``premultiplied=True``)."""
        return {k: self.accumulated(k) for k in ("albedo", "roughness", "f0", "normal")} | {"alpha": self.alpha}


@dataclass
class RenderOutput:
    """What :func:`render` returns; images ``[1,H,W,*]``.

    Attributes:
        image: ``[1,H,W,3]`` linear radiance composited over the background (not clamped).
        alpha: ``[1,H,W,1]``. depth: ``[1,H,W,1]`` expected z (metres).
        albedo: ``[1,H,W,3]`` alpha-accumulated over black; roughness, f0: ``[1,H,W,1]``
            per surface (divided by alpha); normal: ``[1,H,W,3]`` world, unit. ``None`` in
            ``"color"`` mode.
        gbuffer: the :class:`GBuffer` they come from. shading: with ``shading_maps``, the dict of
            :func:`hravatar.shading.shade.shade` (every intermediate map), else ``None``.
    """

    image: Tensor
    alpha: Tensor
    depth: Tensor
    gbuffer: GBuffer
    albedo: Tensor | None = None
    roughness: Tensor | None = None
    f0: Tensor | None = None
    normal: Tensor | None = None
    shading: dict[str, Tensor] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """The rasterizer's meta data (screen-space means and radii for densification)."""
        return self.gbuffer.meta


def _check_materials(materials: Mapping[str, Tensor]) -> None:
    bad = sorted(set(materials) - set(MATERIALS))
    if bad:
        raise ValueError(f"render: unknown material override(s) {bad}; use {', '.join(MATERIALS)}")


def use_fast_path(gaussians: Any, backend: str = "auto", fast: bool | None = None) -> bool:
    """Whether :func:`rasterize_gbuffer`/:func:`render` take the C++ inference path (see the module
    docstring): ``fast`` if given (``True`` raises where impossible), else automatically."""
    if fast is False:
        return False
    if fast is None and (torch.is_grad_enabled() or backend not in ("auto", "cpu")):
        return False
    from hravatar.render.fast import fast_available

    ok = fast_available(gaussians)
    if fast and not ok:
        raise ValueError("render: fast=True needs a blendshape-rigged avatar on the CPU and a C++ compiler")
    return ok


def rasterize_gbuffer(
    gaussians: Any,
    params: FrameParams,
    camera: Camera,
    mode: Mode = "pbr",
    materials: Mapping[str, Tensor] | None = None,
    backend: str = "auto",
    fast: bool | None = None,
    eps2d: float = EPS2D,
) -> GBuffer:
    """Deform the Gaussians with ``params`` and rasterize their G-buffer from ``camera``.

    Args:
        gaussians: a :class:`~hravatar.gaussians.GaussianHead`.
        params: a batch of one; camera: its camera.
        mode: ``"color"`` rasterizes the plain per-point colour (:data:`COLOR_LAYOUT`), any other
            mode the materials and normals (:data:`GBUFFER_LAYOUT`).
        materials: per-point overrides of the activated materials, ``{"albedo" [N,3], "roughness"
            [N,1], "f0" [N,1], "colors" [N,3]}`` (material edits; no copy of the avatar).
        backend: rasterizer backend (``auto``, ``cpu``, ``cuda``, ``reference``).
        fast: the C++ inference path (no autograd); ``None``: when no gradient is needed
            (:func:`use_fast_path`).
        eps2d: screen-space low-pass (pixels^2; :func:`footprint_eps2d` for a resolution other
            than the training one).
    """
    from hravatar.render import camera_centers, rasterize

    mats = dict(materials or {})
    _check_materials(mats)
    if use_fast_path(gaussians, backend, fast):
        from hravatar.render.fast import fast_gbuffer

        with torch.no_grad():
            colors, alphas, meta = fast_gbuffer(gaussians, params.shape, params.expression, params.pose,
                                                params.translation, camera.viewmat, camera.K, camera.width,
                                                camera.height, mode, mats, eps2d=eps2d)
        return GBuffer(colors, alphas, colors[..., -1:], meta, COLOR_LAYOUT if mode == "color" else GBUFFER_LAYOUT)
    g = gaussians.deform(params.shape, params.expression, params.pose, params.translation)
    vm, Ks = camera.viewmat[None], camera.K[None]
    if mode == "color":
        feats = mats["colors"] if "colors" in mats else gaussians.colors
        layout = COLOR_LAYOUT
    else:
        n = g.normals(camera_centers(vm))[0]
        albedo = mats["albedo"] if "albedo" in mats else gaussians.albedo
        rough = mats["roughness"] if "roughness" in mats else gaussians.roughness
        f0 = mats["f0"] if "f0" in mats else gaussians.f0
        feats = torch.cat([albedo, rough, f0, n], -1)
        layout = GBUFFER_LAYOUT
    colors, alphas, meta = rasterize(g.means[0], g.quats[0], g.scales[0], g.opacities[0], feats, vm, Ks,
                                     camera.width, camera.height, eps2d=eps2d, render_mode="RGB+ED", backend=backend)
    return GBuffer(colors, alphas, colors[..., -1:], meta, layout)


def render(
    gaussians: Any,
    lighting: Any,
    params: FrameParams,
    camera: Camera,
    mode: Mode = "pbr",
    background: Tensor | float | None = None,
    materials: Mapping[str, Tensor] | None = None,
    backend: str = "auto",
    shading_maps: bool = False,
    fast: bool | None = None,
    eps2d: float = EPS2D,
) -> RenderOutput:
    """Render the Gaussians for one set of parameters and one camera (differentiable).

    Args:
        gaussians: a :class:`~hravatar.gaussians.GaussianHead`; lighting: a
            :class:`~hravatar.shading.lighting.Lighting` (learned or an environment map).
        params: :class:`FrameParams` (batch of one); camera: :class:`Camera`.
        mode: ``"pbr"`` (shaded), ``"albedo"`` (the albedo map is the image: the trainer's warm-up)
            or ``"color"`` (no-PBR ablation: plain per-point colour).
        background: ``[1,H,W,3]``, ``[3]`` or a scalar behind the avatar (default black).
        materials: per-point material overrides (see :func:`rasterize_gbuffer`).
        backend: rasterizer backend.
        shading_maps: also return every intermediate shading map (pbr only); this shades all
            pixels. By default only covered pixels (alpha > 0) are shaded
            (:func:`hravatar.shading.shade.shade_foreground`: the same image up to float round-off).
        fast: the C++ inference kernels (no autograd; see the module docstring); ``None``: when no
            gradient is needed and the backend is ``auto``/``cpu``.
        eps2d: screen-space low-pass (pixels^2), see :func:`rasterize_gbuffer`.
    """
    from hravatar.shading.shade import shade, shade_foreground

    fast = use_fast_path(gaussians, backend, fast)
    gb = rasterize_gbuffer(gaussians, params, camera, mode, materials, backend, fast, eps2d)
    alphas = gb.alpha
    bg = 0.0 if background is None else background
    if mode == "color":
        return RenderOutput(gb.accumulated("color") + (1 - alphas) * bg, alphas, gb.depth, gb)
    a = alphas.clamp_min(1e-6)
    out = RenderOutput(alphas, alphas, gb.depth, gb, albedo=gb.accumulated("albedo"),
                       roughness=gb.accumulated("roughness") / a, f0=gb.accumulated("f0") / a, normal=gb.normal())
    if mode == "albedo":
        out.image = out.albedo + (1 - alphas) * bg
    elif not shading_maps and fast and _fast_shading(lighting, alphas):
        from hravatar.shading.fast import shade_foreground_fast

        out.image = shade_foreground_fast(gb.features, alphas, camera.viewmat[None], camera.K[None], lighting,
                                          background)
    elif not shading_maps:
        out.image = shade_foreground(gb.features, alphas, GBUFFER_LAYOUT, camera.viewmat[None], camera.K[None],
                                     lighting, background)
    else:
        sh = shade(gb.shading_input(), (camera.viewmat[None], camera.K[None]), lighting, background=background,
                   premultiplied=True)
        out.image, out.shading = sh["image"], sh
    return out


def _fast_shading(lighting: Any, like: Tensor) -> bool:
    from hravatar.shading.fast import fast_shading_available

    # the kernel reads albedo 0:3, roughness 3, F0 4, normal 5:8
    assert GBUFFER_LAYOUT == {"albedo": slice(0, 3), "roughness": slice(3, 4), "f0": slice(4, 5),
                              "normal": slice(5, 8)}
    return like.dtype == torch.float32 and fast_shading_available(lighting, like.device)


__all__ = ["COLOR_LAYOUT", "EPS2D", "GBUFFER_LAYOUT", "MATERIALS", "GBuffer", "RenderOutput", "footprint_eps2d",
           "rasterize_gbuffer", "render", "use_fast_path"]
