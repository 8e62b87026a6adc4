"""``hravatar evaluate``: metrics.json, per-frame CSV, images; ground-truth metrics; missing LPIPS."""

from __future__ import annotations

import csv
import json

import pytest

from helpers.tiny_subject import make_tiny_subject, train_tiny_avatar
from hravatar.cli import run
from hravatar.evaluate import EvaluateConfig, evaluate_avatar

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    subj = make_tiny_subject(root / "subj", size=48, frames=10, with_gt=True)
    out = root / "av"
    # the default: an expression encoder (tiny here) drives expression and jaw
    train_tiny_avatar(subj, out, 30, warmup_steps=3)
    return subj, out


def test_evaluate_cli_outputs(trained, tmp_path):
    import torch

    from hravatar.avatar import load_avatar
    from hravatar.data import load_subject
    from hravatar.metrics import lmse, normal_cosine, psnr

    subj, out = trained
    assert run(["evaluate", str(out), "--images", "2", "--no-lpips"]) == 0
    m = json.loads((out / "eval" / "metrics.json").read_text())
    assert m["num_frames"] == 2 and m["use_encoder"] is True  # 15% of 10 frames; the default path
    with open(out / "eval" / "per_frame.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["00008", "00009"]
    assert len(list((out / "eval" / "images").glob("*.png"))) == 2
    for k in ("psnr", "albedo_lmse", "normal_cosine"):
        assert m[k] == pytest.approx(sum(float(r[k]) for r in rows) / 2, rel=1e-6), k
    # frame 00008 recomputed here through the encoder: the same image, albedo and normal numbers
    ta = load_avatar(out, None)
    ds = load_subject(subj, "test")
    fr = ds[0]
    with torch.no_grad():
        r = ta.render_frame(fr)  # use_encoder=True
    assert float(psnr(r.image[0].clamp(0, 1), fr.image)[0]) == pytest.approx(float(rows[0]["psnr"]), abs=1e-4)
    gm = ds.gt_map(0, "mask")
    alb = float(lmse(r.albedo[0].clamp(0, 1), ds.gt_map(0, "albedo"), gm)[0])
    assert alb == pytest.approx(float(rows[0]["albedo_lmse"]), rel=1e-4)  # of the albedo map, not the image
    assert float(lmse(r.image[0].clamp(0, 1), ds.gt_map(0, "albedo"), gm)[0]) != pytest.approx(alb, rel=1e-2)
    n_cam = torch.einsum("ij,hwj->hwi", fr.viewmat[:3, :3], r.normal[0])
    cos = float(normal_cosine(n_cam, ds.gt_map(0, "normal"), gm * (r.alpha[0] > 0.5))[0])
    assert cos == pytest.approx(float(rows[0]["normal_cosine"]), rel=1e-4)
    # the trained normals face the ground truth's (camera frame); a frame mix-up gives about -0.7
    assert m["normal_cosine"] > 0.6
    # tracked expressions instead of the encoder: a different evaluation
    m2 = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "tracked", images=0, use_encoder=False,
                                        lpips=False))
    assert m2["use_encoder"] is False and abs(m2["psnr"] - m["psnr"]) > 1e-3


def test_evaluate_without_lpips_weights(trained, monkeypatch, tmp_path):
    import hravatar.metrics as metrics

    monkeypatch.setattr(metrics, "lpips_available", lambda net="alex": False)
    subj, out = trained
    m = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "e", images=0))
    assert m["lpips_alex"] is None and m["lpips_vgg"] is None
    assert "fetch_assets" in m["lpips_note"] and m["psnr"] is not None
