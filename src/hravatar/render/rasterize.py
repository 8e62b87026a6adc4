"""``rasterize``: the one entry point for rendering Gaussians, shaped like ``gsplat.rasterization``.

Backends (see :func:`select_backend`):

* ``"cpu"``: this package's C++ kernel (OpenMP over 16x16 tiles, SIMD inside), compiled on first
  use; forward and backward.
* ``"cuda"``: gsplat's CUDA rasterizer, imported lazily, for CUDA tensors.
* ``"reference"``: dense PyTorch (all pixels x all Gaussians), the test oracle; small scenes only.

All backends share the projection of :mod:`hravatar.render.projection` (``"cpu"`` runs its C++
port with a hand-written backward, :func:`hravatar.render.cpu.project_gaussians_cpu`, unless the
cameras need gradients; ``"cuda"`` uses gsplat's fused projection with the same numerics) and
return the same outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hravatar.render.projection import TILE_SIZE, project_gaussians
from hravatar.render.reference import rasterize_to_pixels_reference

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "cpu", "cuda", "reference")


def select_backend(device: torch.device | str | None = None) -> str:
    """Backend ``rasterize(..., backend="auto")`` uses for tensors on ``device``.

    ``"cuda"`` for CUDA devices (gsplat, imported when first used); otherwise ``"cpu"`` when the
    C++ kernel is built or can be built (this may compile it, ~5 s, once per machine), else
    ``"reference"`` (after one warning naming the reason).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return "cuda"
    from hravatar.render import cpu  # noqa: PLC0415

    return "cpu" if cpu.available() else "reference"


def _check(name: str, t: Tensor, shape: tuple) -> None:
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
        raise ValueError(f"rasterize: {name} has shape {tuple(t.shape)}, expected {shape} (None = any)")


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    absgrad: bool = False,
    backend: str = "auto",
    radius_clip: float = 0.0,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render N 3D Gaussians into C pinhole cameras (differentiable).

    Args:
        means: ``[N,3]`` centres, world frame (metres).
        quats: ``[N,4]`` rotations (w,x,y,z), normalised inside.
        scales: ``[N,3]`` linear standard deviations along the local axes (metres).
        opacities: ``[N]`` in [0,1].
        colors: ``[N,D]`` or per-camera ``[C,N,D]`` features, any D >= 1 (e.g. RGB, or a G-buffer).
        viewmats: ``[C,4,4]`` world-to-camera (OpenCV: +x right, +y down, +z forward).
        Ks: ``[C,3,3]`` pixel intrinsics (pixel centres at +0.5).
        width, height: image size in pixels.
        near_plane, far_plane: camera-z range (metres) of rendered Gaussians.
        eps2d: added to the diagonal of the 2D covariance (pixels^2), gsplat's low-pass filter.
        backgrounds: ``[C,D]`` colour behind the Gaussians (not applied to the depth channel).
        render_mode: ``"RGB"`` (the D feature channels), ``"D"`` (accumulated depth ``sum w_i z_i``),
            ``"ED"`` (expected depth = accumulated depth / alpha), ``"RGB+D"``, ``"RGB+ED"`` (depth
            appended as the last channel).
        absgrad: after ``backward()``, ``meta["means2d"].absgrad`` holds ``[C,N,2]`` sums over
            pixels of the absolute per-pixel gradient (for densification, as gsplat).
        backend: ``"auto"`` (see :func:`select_backend`), ``"cpu"``, ``"cuda"`` or ``"reference"``.
        radius_clip: Gaussians whose radii are both ``<= radius_clip`` pixels are skipped.

    Returns:
        ``(render_colors [C,H,W,D or D+1 or 1], render_alphas [C,H,W,1], meta)``. ``meta`` holds
        ``radii [C,N,2]`` int32 (0 = not rendered), ``means2d [C,N,2]`` (pixels; call
        ``meta["means2d"].retain_grad()`` before ``backward`` to read the screen-space gradient
        densification uses), ``depths [C,N]`` (camera z), ``conics [C,N,3]``, ``opacities [C,N]``,
        ``visible [C,N]`` bool, ``width``, ``height``, ``n_cameras``, ``tile_size``, ``backend``,
        ``render_mode``, ``gaussian_ids``/``camera_ids`` (None: not packed, as gsplat with
        ``packed=False``).
    """
    if render_mode not in RENDER_MODES:
        raise ValueError(f"rasterize: render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    N = means.shape[0]
    C = viewmats.shape[0]
    _check("means", means, (N, 3))
    _check("quats", quats, (N, 4))
    _check("scales", scales, (N, 3))
    _check("opacities", opacities, (N,))
    _check("viewmats", viewmats, (C, 4, 4))
    _check("Ks", Ks, (C, 3, 3))
    if colors.dim() == 2:
        _check("colors", colors, (N, None))
        colors = colors.expand(C, N, colors.shape[-1])
    else:
        _check("colors", colors, (C, N, None))
    if backgrounds is not None:
        if backgrounds.dim() == 1:
            backgrounds = backgrounds.expand(C, backgrounds.shape[0])
        _check("backgrounds", backgrounds, (C, colors.shape[-1]))
    named = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
             "viewmats": viewmats, "Ks": Ks, "backgrounds": backgrounds}
    devices = {k: t.device for k, t in named.items() if t is not None}
    if len(set(devices.values())) > 1:  # the C++ kernel would read a CUDA pointer as host memory
        raise ValueError("rasterize: all tensors must be on one device, got "
                         + ", ".join(f"{k} on {d}" for k, d in devices.items()))
    width, height = int(width), int(height)
    if backend == "auto":
        backend = select_backend(means.device)
    if backend == "cuda":
        from hravatar.render.cuda import rasterize_gsplat  # noqa: PLC0415

        return rasterize_gsplat(
            means,
            quats,
            scales,
            opacities,
            colors,
            viewmats,
            Ks,
            width,
            height,
            near_plane=near_plane,
            far_plane=far_plane,
            eps2d=eps2d,
            backgrounds=backgrounds,
            render_mode=render_mode,
            absgrad=absgrad,
            radius_clip=radius_clip,
        )

    cams_need_grad = viewmats.requires_grad or Ks.requires_grad
    if backend == "cpu" and not cams_need_grad and means.dtype == torch.float32:
        from hravatar.render.cpu import project_gaussians_cpu as project  # noqa: PLC0415
    else:
        project = project_gaussians
    proj = project(
        means,
        quats,
        scales,
        opacities,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        radius_clip=radius_clip,
    )
    feats = colors
    bgs = backgrounds
    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([colors, proj.depths[..., None].to(colors.dtype)], dim=-1)
        if bgs is not None:
            bgs = torch.cat([bgs, bgs.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        feats = proj.depths[..., None].to(colors.dtype)
        bgs = None

    if backend == "cpu":
        from hravatar.render.cpu import rasterize_to_pixels_cpu  # noqa: PLC0415

        render, alphas = rasterize_to_pixels_cpu(
            proj.means2d,
            proj.conics,
            feats,
            proj.opacities,
            proj.depths,
            proj.radii,
            width,
            height,
            backgrounds=bgs,
            absgrad=absgrad,
        )
    elif backend == "reference":
        render, alphas = rasterize_to_pixels_reference(
            proj.means2d,
            proj.conics,
            feats,
            proj.opacities,
            proj.depths,
            proj.radii,
            width,
            height,
            backgrounds=bgs,
            absgrad=absgrad,
        )
    else:
        raise ValueError(f"rasterize: unknown backend {backend!r}")

    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)

    meta: dict[str, Any] = {
        "radii": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": proj.opacities,
        "visible": (proj.radii > 0).all(-1),
        "width": width,
        "height": height,
        "n_cameras": C,
        "tile_size": TILE_SIZE,
        "backend": backend,
        "render_mode": render_mode,
        "camera_ids": None,
        "gaussian_ids": None,
    }
    return render, alphas, meta
