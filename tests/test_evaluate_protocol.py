"""The paper-comparable evaluation protocol: fixed test-frame count, full resolution after downscaled
training, black or white background, LPIPS VGG as the headline."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from helpers.tiny_subject import make_tiny_subject
from hravatar.errors import HRAvatarError
from hravatar.evaluate import EvaluateConfig, eval_downscale, evaluate_avatar, over_background
from hravatar.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_half(tmp_path_factory):
    """A tiny avatar trained at half resolution (48 -> 24 px)."""
    root = tmp_path_factory.mktemp("evp")
    subj = make_tiny_subject(root / "subj", size=48, frames=12)
    out = root / "av"
    assert train(TrainConfig(subject=subj, output=out, iterations=20, points_per_face=1, encoder="none",
                             downscale=2, quiet=True)) == 0
    return subj, out


def test_full_resolution_after_downscaled_training(trained_half, tmp_path):
    _, out = trained_half
    m = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "full", images=1, lpips=False))
    assert m["image_size"] == [48, 48] and m["protocol"]["resolution"] == "full"
    assert m["protocol"]["train_downscale"] == 2 and m["protocol"]["lpips_headline"] == "vgg"
    small = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "small", images=0, lpips=False,
                                           resolution="train"))
    assert small["image_size"] == [24, 24]
    assert m["psnr"] != small["psnr"]
    # rendered at 2x the training focal length with the training's footprint: 0.3 px^2 * 2^2
    assert m["protocol"]["render_eps2d_px2"] == pytest.approx(1.2)
    assert small["protocol"]["render_eps2d_px2"] == pytest.approx(0.3)


def test_fixed_test_frame_count_is_the_last_frames(trained_half, tmp_path):
    _, out = trained_half
    m = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "e", images=0, lpips=False, test_frames=2))
    assert m["num_frames"] == 2 and m["protocol"]["num_test_frames"] == 2
    assert m["protocol"]["frames_seen_in_training"] == 0  # training held out round(0.15 * 12) = 2
    with open(tmp_path / "e" / "per_frame.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["00010", "00011"]
    m4 = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "e4", images=0, lpips=False, test_frames=4))
    assert m4["num_frames"] == 4 and m4["protocol"]["frames_seen_in_training"] == 2


def test_white_background_changes_the_measurement(trained_half, tmp_path):
    _, out = trained_half
    b = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "b", images=0, lpips=False))
    w = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "w", images=0, lpips=False,
                                       background="white"))
    assert w["background"] == "white" and w["protocol"]["background"] == "white"
    assert w["psnr"] != b["psnr"]
    assert json.loads((tmp_path / "w" / "metrics.json").read_text())["background"] == "white"


def test_over_background():
    img = torch.tensor([[[0.2, 0.1, 0.0]], [[0.0, 0.0, 0.0]]])  # [2,1,3]: covered, empty
    a = torch.tensor([[[0.5]], [[0.0]]])
    assert torch.equal(over_background(img, a, "black"), img)
    w = over_background(img, a, "white")
    assert torch.allclose(w[0, 0], torch.tensor([0.7, 0.6, 0.5])) and torch.allclose(w[1, 0], torch.ones(3))
    with pytest.raises(HRAvatarError, match="--background"):
        over_background(img, a, "grey")


def test_eval_downscale():
    assert eval_downscale("full", 4) == 1 and eval_downscale("train", 4) == 4 and eval_downscale("train", 1) == 1
    with pytest.raises(HRAvatarError, match="--resolution"):
        eval_downscale("half", 2)


def test_full_resolution_render_keeps_the_training_footprint(trained_half):
    from hravatar.avatar import load_avatar
    from hravatar.data import load_subject

    subj, out = trained_half
    av = load_avatar(out, "cpu")
    fr = load_subject(subj, "test")[0]
    assert av.train_focal == pytest.approx(float(fr.K[0, 0]) / 2)
    auto = av.render_frame(fr, use_encoder=False)  # 48 px, trained at 24 px: eps2d = 0.3 * 2^2
    assert torch.equal(auto.image, av.render_frame(fr, use_encoder=False, eps2d=1.2).image)
    assert not torch.equal(auto.image, av.render_frame(fr, use_encoder=False, eps2d=0.3).image)
    av.info.pop("train_focal_px")  # avatars trained before it was recorded: from the subject's camera
    assert av.train_focal == pytest.approx(float(fr.K[0, 0]) / 2)


def test_report_page(trained_half, tmp_path):
    """``report.html``: the metrics beside the paper's, the frames' panels embedded, the per-frame table."""
    import re

    _, out = trained_half
    m = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "r", images=-1, lpips=False))
    page = (tmp_path / "r" / "report.html").read_text()
    assert f"{m['psnr']:.4f}" in page and "31.2600" in page and "0.0570" in page  # ours and the paper's
    n_shown = min(8, m["num_frames"])
    # one row of panels per shown frame: ground truth, render, error, albedo, normal
    assert page.count('alt="render"') == n_shown and page.count('alt="albedo"') == n_shown
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 5 * n_shown
    assert "Per frame" in page and "http" not in page.split("<body>")[1].replace("https://", "")  # self-contained
