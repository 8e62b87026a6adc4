"""Dense pure-PyTorch rasterizer: every pixel against every Gaussian (the test oracle).

Memory is ``O(C * H * W * N)``; use it for small scenes, or with ``torch.no_grad()`` and
``chunk`` for larger ones. Gradients come from PyTorch autograd. The numerics are gsplat's:
front-to-back compositing in depth order (ties by index), a Gaussian is evaluated at a pixel only
if its tile rectangle (:func:`~hravatar.render.projection.tile_bounds`, 16x16 tiles) covers the
pixel's tile, ``alpha = min(0.999, opacity * exp(-sigma))``, skipped when ``sigma < 0`` or
``alpha < 1/255``, and compositing stops before the Gaussian that would bring the transmittance
to ``<= 1e-4``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hravatar.render.projection import ALPHA_MAX, ALPHA_THRESHOLD, T_MIN, TILE_SIZE, tile_bounds


class _AbsGradTap(torch.autograd.Function):
    """Identity on ``means2d [C,N,2]`` broadcast to ``[C,P,N,2]``; backward also stores the
    per-pixel absolute gradient sum on ``owner.absgrad`` (gsplat's ``absgrad``)."""

    @staticmethod
    def forward(ctx, means2d: Tensor, n_pix: int, owner: Tensor) -> Tensor:  # type: ignore[override]
        ctx.owner = owner
        return means2d[:, None].expand(-1, n_pix, -1, -1).clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        absg = grad.abs().sum(1)
        owner = ctx.owner
        prev = getattr(owner, "absgrad", None)
        owner.absgrad = absg if prev is None else prev + absg
        return grad.sum(1), None, None


def rasterize_to_pixels_reference(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    absgrad: bool = False,
    compute_dtype: torch.dtype | None = None,
    tile_size: int = TILE_SIZE,
) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians densely.

    Args:
        means2d: ``[C,N,2]`` pixels. conics: ``[C,N,3]``. colors: ``[C,N,D]``. opacities: ``[C,N]``.
        depths: ``[C,N]`` (sort key only). radii: ``[C,N,2]`` int (0 = culled).
        width, height: image size. backgrounds: ``[C,D]`` or None.
        absgrad: attach ``means2d.absgrad`` (sum over pixels of ``|dL/dmeans2d|``) on backward.
        compute_dtype: e.g. ``torch.float64`` for an accurate oracle (result cast back).

    Returns:
        ``(colors [C,H,W,D], alphas [C,H,W,1])``.
    """
    out_dtype = colors.dtype
    C, N = means2d.shape[:2]
    D = colors.shape[-1]
    device = means2d.device
    cd = compute_dtype or means2d.dtype
    P = width * height
    if N == 0:
        img = torch.zeros(C, height, width, D, dtype=out_dtype, device=device)
        if backgrounds is not None:
            img = img + backgrounds[:, None, None, :].to(out_dtype)
        # keep the graph connected so callers can always backward
        img = img + 0.0 * colors.sum() + 0.0 * means2d.sum() + 0.0 * conics.sum() + 0.0 * opacities.sum()
        return img, torch.zeros(C, height, width, 1, dtype=out_dtype, device=device)

    order = torch.sort(depths.detach(), dim=1, stable=True).indices  # [C,N]

    def g(t: Tensor) -> Tensor:
        return torch.gather(t, 1, order.view(C, N, *([1] * (t.dim() - 2))).expand_as(t))

    m2 = means2d
    if absgrad and means2d.requires_grad:
        m2p = _AbsGradTap.apply(means2d, P, means2d)  # [C,P,N,2]
        m2p = torch.gather(m2p, 2, order[:, None, :, None].expand(C, P, N, 2)).to(cd)
    else:
        m2p = g(m2).to(cd)[:, None]  # [C,1,N,2]
    con = g(conics).to(cd)
    col = g(colors).to(cd)
    op = g(opacities).to(cd)
    tb = g(tile_bounds(means2d, radii, width, height, tile_size))  # [C,N,4]

    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    px = (xs.reshape(-1).to(cd) + 0.5)[None, :, None]  # [1,P,1]
    py = (ys.reshape(-1).to(cd) + 0.5)[None, :, None]
    tx = (xs.reshape(-1) // tile_size)[None, :, None]
    ty = (ys.reshape(-1) // tile_size)[None, :, None]
    covered = (
        (tx >= tb[:, None, :, 0])
        & (tx < tb[:, None, :, 2])
        & (ty >= tb[:, None, :, 1])
        & (ty < tb[:, None, :, 3])
    )  # [C,P,N]

    dx = m2p[..., 0] - px  # gsplat: delta = mean - pixel
    dy = m2p[..., 1] - py
    sigma = 0.5 * (con[:, None, :, 0] * dx * dx + con[:, None, :, 2] * dy * dy) + con[:, None, :, 1] * dx * dy
    alpha = torch.clamp_max(op[:, None, :] * torch.exp(-sigma), ALPHA_MAX)
    valid = covered & (sigma.detach() >= 0) & (alpha.detach() >= ALPHA_THRESHOLD)
    a = torch.where(valid, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - a
    incl_prod = torch.cumprod(one_minus.detach(), dim=-1)
    included = valid & (incl_prod > T_MIN)
    a = torch.where(included, a, torch.zeros_like(a))
    one_minus = 1.0 - a
    trans = torch.cumprod(torch.cat([torch.ones_like(one_minus[..., :1]), one_minus[..., :-1]], -1), -1)
    w = a * trans  # [C,P,N]
    img = torch.einsum("cpn,cnd->cpd", w, col)
    t_final = torch.prod(one_minus, dim=-1, keepdim=True)  # [C,P,1]
    if backgrounds is not None:
        img = img + t_final * backgrounds.to(cd)[:, None, :]
    alphas = 1.0 - t_final
    return (
        img.reshape(C, height, width, D).to(out_dtype),
        alphas.reshape(C, height, width, 1).to(out_dtype),
    )
