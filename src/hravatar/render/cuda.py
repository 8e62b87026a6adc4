"""CUDA backend: gsplat's ``rasterization`` (imported lazily, only for CUDA tensors).

Maps :func:`hravatar.render.rasterize`'s inputs and outputs to and from gsplat's (unpacked mode,
``rasterize_mode="classic"``), so the caller sees the same shapes and ``meta`` keys on every
backend: ``radii`` is always ``[C,N,2]`` (gsplat < 1.5 returns ``[C,N]``), float64 inputs are
rendered in float32 and the outputs cast back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hravatar.errors import HRAvatarError


def _gsplat():
    try:
        import gsplat  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise HRAvatarError(
            "rendering CUDA tensors needs gsplat; install it with `pip install 'gsplat>=1.4'` "
            "(or move the tensors to the CPU to use the C++ rasterizer)"
        ) from exc
    return gsplat


def rasterize_gsplat(
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
    radius_clip: float = 0.0,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Same contract as :func:`hravatar.render.rasterize` (``colors`` already ``[C,N,D]``)."""
    if means.device.type != "cuda":
        raise ValueError("the cuda rasterizer backend needs CUDA tensors")
    gsplat = _gsplat()
    out_dtype = colors.dtype

    def f32(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.float()

    render, alphas, meta = gsplat.rasterization(
        means=f32(means),
        quats=f32(quats),
        scales=f32(scales),
        opacities=f32(opacities),
        colors=f32(colors),
        viewmats=f32(viewmats),
        Ks=f32(Ks),
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        eps2d=eps2d,
        sh_degree=None,
        packed=False,
        tile_size=16,
        backgrounds=f32(backgrounds),
        render_mode=render_mode,
        absgrad=absgrad,
        rasterize_mode="classic",
    )
    radii = meta["radii"]
    if radii.dim() == 2:  # gsplat < 1.5: one radius per Gaussian
        radii = torch.stack([radii, radii], dim=-1)
    radii = radii.to(torch.int32)
    C = viewmats.shape[0]
    out_meta: dict[str, Any] = dict(meta)
    out_meta.update(
        radii=radii,
        means2d=meta["means2d"],
        depths=meta["depths"],
        conics=meta["conics"],
        opacities=meta.get("opacities"),
        visible=(radii > 0).all(-1),
        width=width,
        height=height,
        n_cameras=C,
        tile_size=16,
        backend="cuda",
        render_mode=render_mode,
        camera_ids=None,
        gaussian_ids=None,
    )
    return render.to(out_dtype), alphas.to(out_dtype), out_meta
