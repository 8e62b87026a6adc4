"""End-to-end training on a tiny synthetic subject: learning, exact resume, NaN guard, ablations."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from helpers.tiny_subject import make_tiny_subject
from hravatar.avatar import load_avatar
from hravatar.gaussians import DensifyConfig, load_gaussians
from hravatar.train import TrainConfig, scaled_schedule, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_tiny_subject(tmp_path_factory.mktemp("subj") / "tiny", size=64, frames=12)


def _cfg(subject, out, **kw) -> TrainConfig:
    base = dict(subject=subject, output=out, points_per_face=1, encoder_width=0.25, encoder_input_size=32,
                encoder_warmup_steps=3, quiet=True, log_every=1, checkpoint_minutes=60.0)
    base.update(kw)
    return TrainConfig(**base)


def _rows(out):
    with open(out / "curves.csv") as f:
        return list(csv.DictReader(f))


def test_learns(subject, tmp_path):
    out = tmp_path / "av"
    assert train(_cfg(subject, out, iterations=100)) == 0
    rows = _rows(out)
    assert len(rows) == 100
    loss = [float(r["loss"]) for r in rows]
    ps = [float(r["psnr"]) for r in rows]
    first, last = sum(loss[:5]) / 5, sum(loss[-10:]) / 10
    assert last < 0.75 * first, (first, last)
    assert sum(ps[-10:]) / 10 > ps[0] + 2.0, (ps[0], ps[-10:])
    info = json.loads((out / "training.json").read_text())
    assert info["iterations"] == 100 and info["train_frames"] == 10
    assert int(rows[-1]["points"]) > int(rows[0]["points"])  # densification ran (scaled schedule)
    for f in ("avatar.safetensors", "lighting.safetensors", "encoder.safetensors", "curves.png",
              "train_config.yaml", "checkpoint.pt"):
        assert (out / f).is_file(), f
    ta = load_avatar(out, None)
    assert ta.gaussians.num_points == info["points"] and ta.encoder is not None


def test_resume_is_exact(subject, tmp_path):
    kw = dict(iterations=40, reference_iterations=40,
              densify=DensifyConfig(start_iter=10, every=10, stop_before_end=5, reset_every=25, grad_threshold=1e-4))
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(_cfg(subject, a, **kw)) == 0
    assert train(_cfg(subject, b, stop_after=17, **kw)) == 0
    assert not (b / "avatar.safetensors").exists() and len(_rows(b)) == 17
    assert train(_cfg(subject, b, resume=True, **kw)) == 0
    ra, rb = _rows(a), _rows(b)
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]  # every loss, including the next one
    A = load_gaussians(a / "avatar.safetensors")
    B = load_gaussians(b / "avatar.safetensors")
    assert A.num_points == B.num_points and A.num_points > 320
    for k in A.params:
        assert torch.equal(A.params[k], B.params[k]), k


def test_refuses_to_clobber(subject, tmp_path):
    from hravatar.errors import HRAvatarError

    out = tmp_path / "c"
    assert train(_cfg(subject, out, iterations=3, encoder="none")) == 0
    with pytest.raises(HRAvatarError, match="--resume"):
        train(_cfg(subject, out, iterations=3, encoder="none"))
    with pytest.raises(HRAvatarError, match="no checkpoint"):
        train(_cfg(subject, tmp_path / "none", iterations=3, resume=True))


def test_nan_guard(subject, tmp_path, caplog):
    out = tmp_path / "n"
    # one bad step is skipped and training goes on
    assert train(_cfg(subject, out, iterations=8, encoder="none", inject_nan_at=(3,))) == 0
    assert "non-finite" in caplog.text
    rows = _rows(out)
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2, 4, 5, 6, 7]
    assert all(torch.isfinite(p).all() for p in load_gaussians(out / "avatar.safetensors").params.values()
               if p.is_floating_point())
    # repeated bad steps stop cleanly with a checkpoint and status 3
    out2 = tmp_path / "n2"
    st = train(_cfg(subject, out2, iterations=20, encoder="none", inject_nan_at=tuple(range(5, 20)),
                    max_bad_steps=3))
    assert st == 3 and (out2 / "checkpoint.pt").is_file() and not (out2 / "avatar.safetensors").exists()


@pytest.mark.parametrize("flag", ["encoder_none", "no_learnable_deformation", "rig_to_mesh", "no_pbr"])
def test_ablations_train(subject, tmp_path, flag):
    kw = {"encoder": "none"} if flag == "encoder_none" else {flag: True}
    out = tmp_path / flag
    assert train(_cfg(subject, out, iterations=24, **kw)) == 0
    rows = _rows(out)
    loss = [float(r["loss"]) for r in rows]
    assert all(map(lambda x: x == x, loss))
    assert sum(loss[-4:]) / 4 < sum(loss[:4]) / 4
    av = load_gaussians(out / "avatar.safetensors")
    if flag == "rig_to_mesh":
        assert av.rig == "triangle"
    if flag == "no_learnable_deformation":
        assert not av.params["exprdirs"].requires_grad
    if flag == "encoder_none":
        assert not (out / "encoder.safetensors").exists()


def test_scaled_schedule():
    c = TrainConfig(subject=".")
    d, warm = scaled_schedule(c, 30000)
    assert (d.start_iter, d.every, d.stop_before_end, d.reset_every, warm) == (1000, 500, 500, 3000, 1500)
    d, warm = scaled_schedule(c, 3000)
    assert (d.start_iter, d.every, d.stop_before_end, d.reset_every, warm) == (100, 50, 50, 0, 150)
    d, warm = scaled_schedule(c, 60000)
    assert d.every == 500 and warm == 1500
