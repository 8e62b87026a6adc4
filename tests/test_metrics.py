"""Metrics: PSNR, SSIM (vs a brute-force loop), LPIPS, LMSE, normal cosine."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest
import torch

from hravatar.errors import HRAvatarError
from hravatar.metrics import (
    LPIPS,
    lmse,
    lpips_available,
    mae100,
    normal_cosine,
    psnr,
    read_numpy_pickle,
    ssim,
)


def _img(seed: int, H: int = 24, W: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, H, W, 3, generator=g)


def test_psnr_mae():
    a = torch.zeros(2, 4, 4, 3)
    b = torch.full((2, 4, 4, 3), 0.1)
    assert torch.allclose(psnr(a, b), torch.full((2,), 20.0), atol=1e-4)
    assert torch.allclose(mae100(a, b), torch.full((2,), 10.0), atol=1e-5)


def _ssim_brute(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Per-pixel loops with zero padding ('same'), straight from the SSIM formula."""
    H, W, C = x.shape
    r = win // 2
    g = np.exp(-((np.arange(win) - r) ** 2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    xp = np.pad(x, ((r, r), (r, r), (0, 0)))
    yp = np.pad(y, ((r, r), (r, r), (0, 0)))
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(H):
        for j in range(W):
            for c in range(C):
                px, py = xp[i:i + win, j:j + win, c], yp[i:i + win, j:j + win, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx = (w * px * px).sum() - mx**2
                vy = (w * py * py).sum() - my**2
                cxy = (w * px * py).sum() - mx * my
                vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_brute_force():
    a = _img(0, 16, 13).double()
    b = (a + 0.1 * _img(1, 16, 13).double()).clamp(0, 1)
    got = float(ssim(a, b))
    want = _ssim_brute(a[0].numpy(), b[0].numpy())
    assert abs(got - want) < 1e-9
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-9)
    # valid padding ~ skimage-style; still 1 for identical images and < 1 for different ones
    assert float(ssim(a, b, padding="valid")) < 1.0


def test_ssim_differentiable():
    a = _img(0).requires_grad_(True)
    b = _img(1)
    (1 - ssim(a, b)).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_lmse_scale_invariant():
    t = _img(2, 40, 40)
    assert float(lmse(t * 0.5, t)) < 1e-10  # a global scale costs nothing
    assert float(lmse(torch.zeros_like(t), t)) == pytest.approx(1.0)
    noisy = (t + 0.2 * _img(3, 40, 40)).clamp(0, 1)
    assert 0 < float(lmse(noisy, t)) < 1


def test_normal_cosine():
    n = torch.zeros(1, 4, 4, 3)
    n[..., 2] = 1
    assert float(normal_cosine(n, n)) == pytest.approx(1.0)
    m = torch.zeros(1, 4, 4, 1)
    m[:, :2] = 1
    flipped = n.clone()
    flipped[:, 2:] *= -1
    assert float(normal_cosine(flipped, n, m)) == pytest.approx(1.0)
    assert float(normal_cosine(flipped, n)) == pytest.approx(0.0)


def _smooth(H: int = 64, W: int = 64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([x, y, 0.5 * (x + y)], -1)[None]


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_zero_and_grows_with_noise(net):
    if not lpips_available(net):
        pytest.skip("LPIPS weights not fetched (python scripts/fetch_assets.py)")
    from hravatar.metrics import load_lpips

    m = load_lpips(net)
    img = _smooth()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(img.shape, generator=g)
    vals = [float(m(img, (img + s * noise).clamp(0, 1))) for s in (0.0, 0.03, 0.1, 0.3)]
    assert vals[0] == 0.0
    assert vals[0] < vals[1] < vals[2] < vals[3]


def test_lpips_structure_without_weights():
    """Architecture and the flax->torch kernel layout, checked with a synthetic weight dict."""
    g = np.random.default_rng(0)
    net = LPIPS("alex")
    w = {"AlexNet_0": {}}
    for i, c in enumerate(net.convs):
        k = c.kernel_size[0]
        w["AlexNet_0"][f"Conv_{i}"] = {
            "kernel": g.normal(size=(k, k, c.in_channels, c.out_channels)).astype(np.float32) * 0.05,
            "bias": np.zeros(c.out_channels, np.float32)}
    for i, lin in enumerate(net.lins):
        k = np.abs(g.normal(size=(1, 1, lin.in_channels, 1))).astype(np.float32)
        w[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": k}}
    net.load_numpy(w)
    k0 = w["AlexNet_0"]["Conv_0"]["kernel"]
    assert torch.allclose(net.convs[0].weight[5, 2], torch.from_numpy(k0[:, :, 2, 5]))
    img = _smooth()
    assert float(net(img, img)) == 0.0 and float(net(img, 1 - img)) > 0


def test_numpy_pickle_reader_refuses_code(tmp_path):
    p = tmp_path / "w.ckpt"
    p.write_bytes(pickle.dumps({"a": {"kernel": np.ones((2, 2), np.float32)}}))
    assert read_numpy_pickle(p)["a"]["kernel"].sum() == 4
    buf = io.BytesIO()
    pickle.dump({"x": math.pi, "f": math.sqrt}, buf)
    p.write_bytes(buf.getvalue())
    with pytest.raises(HRAvatarError):
        read_numpy_pickle(p)
