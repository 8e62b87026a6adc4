"""The silhouette loss: the rendered alpha trained against the subject's matte (README, Train)."""

from __future__ import annotations

import csv

import pytest
import torch

from helpers.synthetic_head import synthetic_head
from helpers.tiny_subject import make_tiny_subject, tiny_camera
from hravatar.avatar import Camera, FrameParams, render
from hravatar.gaussians import AvatarConfig, GaussianHead
from hravatar.losses import LossWeights, silhouette_loss
from hravatar.shading.lighting import LearnableLighting
from hravatar.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_silhouette_loss_value():
    a = torch.zeros(1, 4, 4, 1)
    m = torch.zeros(1, 4, 4, 1)
    m[0, :2] = 1.0  # half the pixels are foreground, the render covers none
    assert float(silhouette_loss(a, m, 0.5)) == pytest.approx(0.25)
    assert float(silhouette_loss(m[0], m[0], 1.0)) == 0.0


def test_alpha_gradient_reaches_the_gaussians():
    """The loss acts only if the rasterizer's backward carries the alpha channel's gradient."""
    head = synthetic_head(subdivisions=1, seed=0)
    g = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=1, seed=1, init_opacity=0.5))
    vm, K = tiny_camera(32)
    p = FrameParams(torch.zeros(1, head.num_shape), torch.zeros(1, head.num_expr), torch.zeros(1, 5, 3),
                    torch.zeros(1, 3))
    out = render(g, LearnableLighting(convolve=False), p, Camera(vm, K, 32, 32), "color")
    silhouette_loss(out.alpha[0], torch.ones(32, 32, 1), 1.0).backward()
    grads = {k: v.grad for k, v in g.params.items() if v.grad is not None}
    assert "opacities" in grads, sorted(grads)
    go = grads["opacities"]
    assert float(go.abs().sum()) > 0
    assert float(go.sum()) < 0  # more opacity everywhere lowers the loss against an all-foreground matte


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_tiny_subject(tmp_path_factory.mktemp("sil") / "tiny", size=48, frames=8)


def _train(subject, out, weight):
    cfg = TrainConfig(subject=subject, output=out, iterations=6, points_per_face=1, encoder_width=0.25,
                      encoder_input_size=32, encoder_warmup_steps=1, quiet=True, log_every=1,
                      checkpoint_minutes=60.0, loss=LossWeights(silhouette=weight))
    assert train(cfg) == 0
    with open(out / "curves.csv") as f:
        return list(csv.DictReader(f))


def test_trainer_uses_the_matte(subject, tmp_path):
    on = _train(subject, tmp_path / "on", 1.0)
    assert "silhouette" in on[0] and all(float(r["silhouette"]) > 0 for r in on)
    off = _train(subject, tmp_path / "off", 0.0)
    assert "silhouette" not in off[0] or all(r["silhouette"] in ("", "0", "0.0") for r in off)


def test_random_background_trains(subject, tmp_path):
    """A random colour behind render and frame: the run completes, the avatar learns, and the
    photometric loss differs from the black-background run (the background takes part)."""
    def run(name, bg):
        cfg = TrainConfig(subject=subject, output=tmp_path / name, iterations=6, points_per_face=1,
                          encoder_width=0.25, encoder_input_size=32, encoder_warmup_steps=1, quiet=True,
                          log_every=1, checkpoint_minutes=60.0, train_background=bg)
        assert train(cfg) == 0
        with open(tmp_path / name / "curves.csv") as f:
            return [float(r["photo"]) for r in csv.DictReader(f)]

    rnd, black = run("rnd", "random"), run("black", "black")
    assert all(torch.isfinite(torch.tensor(rnd)))
    assert rnd[0] != pytest.approx(black[0], rel=1e-3)
