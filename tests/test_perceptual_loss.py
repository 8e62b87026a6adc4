"""The perceptual (LPIPS-AlexNet) training term: crop, gradient, that it sharpens, and that training uses it."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from helpers.tiny_subject import make_tiny_subject
from hravatar.errors import HRAvatarError
from hravatar.losses import LossWeights, foreground_crop, perceptual_loss
from hravatar.metrics import lpips_available
from hravatar.train import TrainConfig, check_config, train

pytestmark = pytest.mark.usefixtures("one_thread")

needs_alex = pytest.mark.skipif(not lpips_available("alex"),
                                reason="LPIPS weights not fetched (python scripts/fetch_assets.py)")


def _textured(size: int = 96, seed: int = 0) -> torch.Tensor:
    """A face-sized textured disc on black ``[1,H,W,3]``: fine noise over smooth colour."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = ((x**2 + y**2) < 0.6).float()[..., None]
    base = torch.stack([0.6 + 0.2 * x, 0.45 + 0.1 * y, 0.35 + 0.0 * x], -1)
    tex = 0.15 * torch.rand(size, size, 1, generator=g)
    return ((base + tex).clamp(0, 1) * disc)[None]


def _blur(img: torch.Tensor) -> torch.Tensor:
    x = img.permute(0, 3, 1, 2)
    k = torch.ones(3, 1, 5, 5) / 25
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=3).permute(0, 2, 3, 1)


def test_foreground_crop_box_and_random_window():
    img = torch.zeros(1, 64, 80, 3)
    img[0, 20:30, 10:50] = 0.5
    a, b = foreground_crop(img, torch.zeros_like(img), margin=2)
    assert a.shape[1:3] == (14, 44) and b.shape == a.shape and float(a.sum()) == float(img.sum())
    g = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(20):
        c, _ = foreground_crop(img, img, crop=8, margin=2, generator=g)
        assert c.shape[1:3] == (8, 8)
        seen.add(float(c.sum()))
    assert len(seen) > 1  # the window moves
    c, _ = foreground_crop(img, img, crop=100, margin=2, generator=g)  # larger than the box: the box
    assert c.shape[1:3] == (14, 44)


@needs_alex
def test_perceptual_loss_gradient_and_sharpening():
    """Its gradient is non-zero, and descending it alone from a blurred image lowers the perceptual
    distance to the textured target by more than half (and more than the same steps on the blurred
    image itself would by chance: a zero-weight run leaves it unchanged)."""
    from hravatar.metrics import load_lpips

    net = load_lpips("alex")
    target = _textured()
    start = _blur(target)
    x = start.clone().requires_grad_(True)
    loss = perceptual_loss(x, target, net, weight=1.0)
    loss.backward()
    assert float(loss.detach()) > 0 and float(x.grad.abs().sum()) > 0

    def fit(weight: float) -> float:
        x = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=1e-2)
        for _ in range(25):
            opt.zero_grad()
            (perceptual_loss(x, target, net, weight) + 0.0 * x.sum()).backward()
            opt.step()
        with torch.no_grad():
            return float(net(x.clamp(0, 1), target))

    d0 = float(net(start, target))
    assert fit(0.0) == pytest.approx(d0, rel=1e-5)
    assert fit(0.1) < 0.5 * d0, d0


@needs_alex
def test_training_uses_the_perceptual_term(tmp_path):
    subject = make_tiny_subject(tmp_path / "tiny", size=64, frames=6)
    out = tmp_path / "av"
    cfg = TrainConfig(subject=subject, output=out, iterations=6, points_per_face=1, encoder_width=0.25,
                      encoder_input_size=32, encoder_warmup_steps=1, quiet=True, log_every=1)
    cfg.loss.perceptual, cfg.loss.perceptual_from = 0.1, 0.5
    assert train(cfg) == 0
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    vals = [r.get("perceptual", "") for r in rows]
    assert all(v == "" for v in vals[:3]) and all(float(v) > 0 for v in vals[3:]), vals


def test_perceptual_options_are_checked():
    for kw, opt in (({"perceptual": -1.0}, "--loss.perceptual"), ({"perceptual_from": 1.5}, "--loss.perceptual-from"),
                    ({"perceptual_crop": -2}, "--loss.perceptual-crop")):
        cfg = TrainConfig(subject=".")
        for k, v in kw.items():
            setattr(cfg.loss, k, v)
        with pytest.raises(HRAvatarError, match=opt):
            check_config(cfg)



def test_perceptual_is_off_by_default():
    assert LossWeights().perceptual == 0.0
