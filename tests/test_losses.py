"""Losses: values on known inputs, depth normals of a plane, gradients."""

from __future__ import annotations

import pytest
import torch

from hravatar.losses import (
    albedo_prior_loss,
    clip_to_saturation,
    jaw_loss,
    normal_consistency_loss,
    photometric_loss,
    tv_loss,
)
from hravatar.shading.normals import normals_from_depth

EYE = torch.eye(4)[None]  # world = OpenCV camera frame


def test_photometric():
    a = torch.zeros(1, 16, 16, 3)
    assert float(photometric_loss(a, a)) == pytest.approx(0.0, abs=1e-7)
    b = torch.full_like(a, 0.5)
    # SSIM of two constant images: (2*0*0.5 + c1) / (0 + 0.25 + c1) (c2 terms cancel)
    c1 = 0.01**2
    want = 0.8 * 0.5 + 0.2 * (1 - c1 / (0.25 + c1))
    assert float(photometric_loss(a, b)) == pytest.approx(want, rel=1e-3)


def test_clip_to_saturation_is_one_sided_where_the_frame_is_saturated():
    target = torch.tensor([0.5, 1.0, 1.0, 1.0])
    pred = torch.tensor([0.7, 1.3, 0.8, 1.0], requires_grad=True)
    got = clip_to_saturation(pred, target, 254 / 255)
    assert got.tolist() == pytest.approx([0.7, 1.0, 0.8, 1.0])
    (got - target).abs().sum().backward()
    # unsaturated: as before; saturated and brighter: free; saturated and darker: pulled up
    assert pred.grad.tolist() == pytest.approx([1.0, 0.0, -1.0, 0.0])
    assert clip_to_saturation(pred, target, 0.0) is pred  # 0 = off


@pytest.mark.parametrize("aware", [True, False])
def test_saturation_aware_fit_recovers_a_clipped_reflectance(aware):
    """A reflectance under varying shading, seen by a camera that clips at 1: only the
    saturation-aware comparison recovers it; the plain L1 drags it toward the clipped values."""
    shading = torch.linspace(0.4, 2.5, 64)[None, :, None, None].expand(1, 64, 4, 3)
    truth = 0.7
    frame = (truth * shading).clamp(max=1.0)
    assert float((frame >= 1).float().mean()) > 0.4  # a badly clipped channel
    a = torch.tensor(0.3, requires_grad=True)
    opt = torch.optim.Adam([a], lr=0.02)
    for _ in range(400):
        pred = a * shading
        if aware:
            pred = clip_to_saturation(pred, frame, 254 / 255)
        loss = photometric_loss(pred, frame, 1.0, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if aware:
        assert float(a.detach()) == pytest.approx(truth, abs=0.01)
    else:
        assert float(a.detach()) < truth - 0.05


def test_jaw_and_albedo():
    assert float(jaw_loss(torch.tensor([[0.1, 0.0, 0.0]]), torch.zeros(1, 3))) == pytest.approx(0.1 * 0.01)
    a = torch.zeros(1, 4, 4, 3)
    m = torch.zeros(1, 4, 4, 1)
    m[:, :2] = 1
    p = torch.ones_like(a)
    p[:, 2:] = 5  # outside the mask: ignored
    assert float(albedo_prior_loss(a, p, m)) == pytest.approx(0.25)


def test_plane_normals():
    """A tilted plane z = 1 + 0.5 x (camera frame) gives the analytic normal everywhere inside."""
    H = W = 16
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    # ray through pixel u: x = (u - cx)/fx * z; plane z = 1 + 0.5 x  ->  z = 1 / (1 - 0.5 dx)
    u = torch.arange(W) + 0.5
    dx = ((u - 8) / 20).view(1, W).expand(H, W)
    z = 1 / (1 - 0.5 * dx)
    n, valid = normals_from_depth(z[None, ..., None], K[None], EYE)
    want = torch.nn.functional.normalize(torch.tensor([0.5, 0.0, -1.0]), dim=0)
    inner = n[0, 1:-1, 1:-1].reshape(-1, 3)
    assert torch.allclose(inner, want.expand_as(inner), atol=1e-4)
    assert float(valid.sum()) == (H - 2) * (W - 2)
    loss = normal_consistency_loss(n, want.view(1, 1, 1, 3).expand_as(n), valid)
    assert float(loss) == pytest.approx(0.0, abs=1e-7)
    assert float(normal_consistency_loss(n, -n, valid)) == pytest.approx(2e-2, rel=1e-5)


def test_tv():
    x = torch.zeros(1, 4, 4, 1)
    assert float(tv_loss(x)) == 0.0
    x[:, :, 2:] = 1  # one vertical edge: |dx| = 1 on one of the 3 column pairs
    assert float(tv_loss(x, weight=1.0)) == pytest.approx(1 / 3)
    m = torch.ones(1, 4, 4, 1)
    m[:, :, 2:] = 0
    assert float(tv_loss(x, m, weight=1.0)) == 0.0


def test_gradients_finite():
    g = torch.Generator().manual_seed(0)
    depth = (1 + 0.1 * torch.rand(1, 8, 8, 1, generator=g)).requires_grad_(True)
    K = torch.tensor([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]])
    n, valid = normals_from_depth(depth, K[None], EYE)
    r = torch.rand(1, 8, 8, 3, generator=g).requires_grad_(True)
    loss = normal_consistency_loss(n, r, valid) + tv_loss(r[..., :1])
    loss.backward()
    assert torch.isfinite(depth.grad).all() and torch.isfinite(r.grad).all()


@pytest.mark.parametrize("multiple", [1, 16])  # 16: the box grown to a multiple (CUDA's shape buckets)
@pytest.mark.parametrize("where", ["middle", "corner", "empty", "full"])
def test_ssim_black_background_matches_full_ssim(where, multiple):
    from hravatar.losses import ssim_black_background
    from hravatar.metrics import ssim

    g = torch.Generator().manual_seed(0)
    B, H, W = 2, 40, 56
    m = torch.zeros(B, H, W, 1)
    if where == "middle":
        m[0, 12:25, 20:31] = 1
        m[1, 15:22, 9:30] = 1
    elif where == "corner":
        m[:, :9, 50:] = 1
    elif where == "full":
        m[:] = 1
    pred = (torch.rand(B, H, W, 3, generator=g) * m).requires_grad_()
    target = torch.rand(B, H, W, 3, generator=g) * m
    target[1, 14, 8] = 0.5  # a target pixel outside the predicted foreground
    full = ssim(pred, target)
    fast = ssim_black_background(pred, target, box_multiple=multiple)
    torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)
    w = torch.tensor([0.3, 0.7])
    (g_full,) = torch.autograd.grad((full * w).sum(), pred)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), pred)
    torch.testing.assert_close(g_fast, g_full, rtol=1e-5, atol=1e-8)


def test_grow_to_multiple():
    from hravatar.losses import _grow_to_multiple

    assert _grow_to_multiple(10, 20, 100, 16) == (10, 26)
    assert _grow_to_multiple(90, 100, 100, 16) == (84, 100)  # no room above: grows downwards
    assert _grow_to_multiple(3, 50, 40, 16) == (0, 40)  # never beyond the image
    assert _grow_to_multiple(5, 37, 100, 16) == (5, 37)  # already a multiple
