"""``hravatar evaluate``: metrics.json, per-frame CSV, images; ground-truth metrics; missing LPIPS."""

from __future__ import annotations

import csv
import json

import pytest

from helpers.tiny_subject import make_tiny_subject
from hravatar.cli import run
from hravatar.evaluate import EvaluateConfig, evaluate_avatar
from hravatar.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    subj = make_tiny_subject(root / "subj", size=48, frames=10, with_gt=True)
    out = root / "av"
    assert train(TrainConfig(subject=subj, output=out, iterations=30, points_per_face=1, encoder="none",
                             quiet=True)) == 0
    return subj, out


def test_evaluate_cli_outputs(trained):
    subj, out = trained
    assert run(["evaluate", str(out), "--images", "2"]) == 0
    m = json.loads((out / "eval" / "metrics.json").read_text())
    assert m["num_frames"] == 2  # 15% of 10 frames
    assert 5 < m["psnr"] < 60 and 0 < m["ssim"] <= 1 and m["mae100"] > 0
    assert m["albedo_lmse"] is not None and 0 <= m["albedo_lmse"] < 1.5
    assert m["normal_cosine"] is not None and -1 <= m["normal_cosine"] <= 1
    with open(out / "eval" / "per_frame.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["00008", "00009"]
    assert len(list((out / "eval" / "images").glob("*.png"))) == 2


def test_evaluate_without_lpips_weights(trained, monkeypatch, tmp_path):
    import hravatar.metrics as metrics

    monkeypatch.setattr(metrics, "lpips_available", lambda net="alex": False)
    subj, out = trained
    m = evaluate_avatar(EvaluateConfig(avatar=out, output=tmp_path / "e", images=0))
    assert m["lpips_alex"] is None and m["lpips_vgg"] is None
    assert "fetch_assets" in m["lpips_note"] and m["psnr"] is not None
