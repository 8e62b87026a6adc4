"""Rendering an avatar larger than it was trained: the training's pixel footprint (eps2d scaled by the
squared focal ratio) makes the large render the training-resolution image, sampled more finely."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hravatar.avatar.render import EPS2D, footprint_eps2d
from hravatar.render import rasterize

pytestmark = pytest.mark.usefixtures("one_thread")


def test_footprint_eps2d():
    assert footprint_eps2d(512.0, 128.0) == pytest.approx(EPS2D * 16)
    assert footprint_eps2d(256.0, 256.0) == pytest.approx(EPS2D)
    assert footprint_eps2d(64.0, 128.0) == pytest.approx(EPS2D)  # smaller than training: unchanged
    assert footprint_eps2d(512.0, None) == EPS2D and footprint_eps2d(512.0, 0.0) == EPS2D


def _thin_gaussians(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Needle-like Gaussians (one axis ~0.1 training pixels) in front of a camera at the origin."""
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 0.3, 1.0 + 0.2 * torch.rand(n, 1, generator=g)], 1)
    quats = F.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.stack([0.02 + 0.02 * torch.rand(n, generator=g), torch.full((n,), 2e-4),
                          torch.full((n,), 2e-4)], 1)
    opac = 0.5 + 0.5 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    return means, quats, scales, opac, colors


def _render(size: int, focal: float, eps2d: float, g: tuple[torch.Tensor, ...]) -> torch.Tensor:
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    img, _, _ = rasterize(*g, torch.eye(4)[None], K[None], size, size, eps2d=eps2d, backend="cpu")
    return img[0]


def test_footprint_render_is_the_training_image_sampled_finer():
    g = _thin_gaussians()
    small = _render(32, 40.0, EPS2D, g)  # "training" resolution
    k = 4
    plain = _render(32 * k, 40.0 * k, EPS2D, g)
    matched = _render(32 * k, 40.0 * k, footprint_eps2d(40.0 * k, 40.0), g)

    def down(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.permute(2, 0, 1)[None], k)[0].permute(1, 2, 0)

    err_plain = (down(plain) - small).abs().mean()
    err_matched = (down(matched) - small).abs().mean()
    # the plain 0.3 px^2 at 4x shows the needles at a quarter of their training coverage
    assert err_matched < 0.25 * err_plain
    assert matched.sum() > 2 * plain.sum()
