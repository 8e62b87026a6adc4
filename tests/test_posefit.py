"""Per-frame global pose: the offset rule, the per-row Adam, the test-time fit, training with offsets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers.synthetic_head import synthetic_head
from helpers.tiny_subject import make_tiny_subject, tiny_camera
from hravatar.avatar import Camera, FrameParams, render
from hravatar.avatar.posefit import (
    POSE_OFFSETS_FILE,
    PoseOffsets,
    apply_pose_offset,
    fit_global_pose,
    load_pose_offsets,
    offset_stats,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_tiny_subject(tmp_path_factory.mktemp("subj") / "tiny", size=64, frames=12)


def _params(head) -> FrameParams:
    return FrameParams(torch.zeros(1, head.num_shape), torch.zeros(1, head.num_expr), torch.zeros(1, 5, 3),
                       torch.zeros(1, 3))


def test_apply_offset_touches_only_global_pose_and_translation():
    p = FrameParams(torch.randn(1, 4), torch.randn(1, 6), torch.randn(1, 5, 3), torch.randn(1, 3))
    q = apply_pose_offset(p, torch.zeros(6))
    assert all(torch.equal(a, b) for a, b in zip((p.pose, p.translation), (q.pose, q.translation), strict=True))
    o = torch.tensor([0.1, -0.2, 0.3, 0.01, 0.02, -0.03])
    q = apply_pose_offset(p, o)
    assert torch.allclose(q.pose[0, 0], p.pose[0, 0] + o[:3]) and torch.equal(q.pose[:, 1:], p.pose[:, 1:])
    assert torch.allclose(q.translation[0], p.translation[0] + o[3:])
    assert q.expression is p.expression and q.shape is p.shape
    st = offset_stats(o[None])
    assert st["rotation_max_deg"] == pytest.approx(float(o[:3].norm()) * 180 / math.pi, rel=1e-3)
    assert st["translation_max_mm"] == pytest.approx(float(o[3:].norm()) * 1000, rel=1e-3)


def test_row_adam_moves_only_the_drawn_row(tmp_path):
    po = PoseOffsets(4, 1e-2, 1e-3, centre=False)
    for _ in range(3):
        po.zero_grad()
        (po.row(2) * torch.tensor([1.0, -1, 1, 1, -1, 1])).sum().backward()
        po.step(2)
    o = po.offsets.detach()
    assert torch.count_nonzero(o[[0, 1, 3]]) == 0
    # consistent gradient: Adam moves lr per step against its sign
    assert torch.allclose(o[2], torch.tensor([-3e-2, 3e-2, -3e-2, -3e-3, 3e-3, -3e-3]), rtol=1e-4)
    assert po.steps.tolist() == [0, 0, 3, 0]
    po2 = PoseOffsets(4, 1e-2, 1e-3, centre=False)
    po2.load_state_dict(po.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(po.state_dict().values(), po2.state_dict().values(), strict=True))
    po.save(tmp_path / POSE_OFFSETS_FILE, [10, 11, 12, 13])
    back = load_pose_offsets(tmp_path / POSE_OFFSETS_FILE)
    assert sorted(back) == [10, 11, 12, 13] and torch.equal(back[12], o[2])
    pc = PoseOffsets(4, 1e-2, 1e-3)  # centred: the same move, minus the mean over the rows
    pc.zero_grad()
    (pc.row(2) * torch.tensor([1.0, -1, 1, 1, -1, 1])).sum().backward()
    pc.step(2)
    assert torch.allclose(pc.offsets.detach().mean(0), torch.zeros(6), atol=1e-9)
    moved = torch.tensor([-1e-2, 1e-2, -1e-2, -1e-3, 1e-3, -1e-3])
    assert torch.allclose(pc.offsets.detach()[2] - pc.offsets.detach()[0], moved)
    with pytest.raises(ValueError):
        PoseOffsets(3, 1e-2, 1e-3).load_state_dict(po.state_dict())


def test_fit_recovers_a_perturbed_pose():
    """Render a head with a known pose, start the fit from a wrong one: the fit closes most of the gap."""
    from hravatar.gaussians import AvatarConfig, GaussianHead
    from hravatar.shading.lighting import LearnableLighting

    head = synthetic_head(subdivisions=2, seed=0)
    torch.manual_seed(0)
    g = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=4, seed=1, init_opacity=0.9))
    with torch.no_grad():
        m = g.params["means"]
        g.params["albedo"].copy_(1.2 * torch.stack([torch.sin(40 * m[:, 1]), torch.cos(35 * m[:, 0]),
                                                    torch.sin(30 * m[:, 2])], -1))
    light = LearnableLighting(convolve=False)
    vm, K = tiny_camera(64)
    cam = Camera(vm, K, 64, 64)
    true = _params(head)
    truth = torch.tensor([0.05, -0.06, 0.03, 0.006, -0.005, 0.0])  # ~4.9 deg, 7.8 mm
    with torch.no_grad():
        tgt = render(g, light, apply_pose_offset(true, truth), cam, "albedo")
    _, off, losses = fit_global_pose(g, light, true, cam, tgt.image[0], tgt.alpha[0], "albedo", steps=60, lr=3e-3)
    err0, err1 = float(truth.norm()), float((off - truth).norm())
    assert losses[-1] < 0.5 * losses[0], losses
    assert err1 < 0.35 * err0, (err0, err1, off)
    assert g.params["means"].grad is None  # the avatar is not trained by the fit


def _train_cfg(subject, out, **kw):
    from hravatar.train import TrainConfig

    base = dict(subject=subject, output=out, points_per_face=1, encoder="none", quiet=True, log_every=1,
                checkpoint_minutes=60.0, hair_init="off", pose_refine=True)
    base.update(kw)
    return TrainConfig(**base)


def test_training_offsets_undo_a_perturbed_tracking(subject, tmp_path):
    """Training frames whose tracked position is deliberately off sideways by 6 mm (alternating, zero
    mean, so the avatar cannot absorb it): the learnt offsets cancel most of it, and are saved."""
    from hravatar.train import Trainer

    t = Trainer.create(_train_cfg(subject, tmp_path / "a", iterations=120, pose_refine_start=30,
                                  pose_refine_lr_translation=1e-3))
    n = len(t.ds)
    pert = 0.006 * torch.tensor([1.0 if i % 2 else -1.0 for i in range(n)])
    pert -= pert.mean()
    tr = t.ds.translation.clone()
    tr[:, 0] += pert
    t.ds.translation = tr
    assert t.run() == 0
    off = t.pose_offsets.offsets.detach()
    err0, err1 = float(pert.abs().mean()), float((off[:, 3] + pert).abs().mean())
    assert err1 < 0.6 * err0, (err0, err1, off[:, 3])
    assert int((torch.sign(off[:, 3]) == -torch.sign(pert)).sum()) >= n - 1
    info = json.loads((tmp_path / "a" / "training.json").read_text())
    assert info["pose_refine"]["frames_updated"] == n and info["pose_refine"]["translation_max_mm"] > 1.0
    saved = load_pose_offsets(tmp_path / "a" / POSE_OFFSETS_FILE)
    assert len(saved) == n and torch.equal(saved[t.ds.frame_indices[0]], off[0])


def test_resume_keeps_the_offsets_exact(subject, tmp_path):
    from hravatar.train import train

    kw = dict(iterations=30, reference_iterations=30, pose_refine_start=0)
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(_train_cfg(subject, a, **kw)) == 0
    assert train(_train_cfg(subject, b, stop_after=13, **kw)) == 0
    assert train(_train_cfg(subject, b, resume=True, **kw)) == 0
    oa, ob = load_pose_offsets(a / POSE_OFFSETS_FILE), load_pose_offsets(b / POSE_OFFSETS_FILE)
    assert any(bool(v.abs().sum() > 0) for v in oa.values())
    assert all(torch.equal(oa[k], ob[k]) for k in oa)
    la = (a / "curves.csv").read_text().splitlines()
    lb = (b / "curves.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in la] == [r.split(",")[1] for r in lb]


def test_no_pose_refine_writes_no_offsets(subject, tmp_path):
    from hravatar.train import train

    assert train(_train_cfg(subject, tmp_path / "c", iterations=4, pose_refine=False)) == 0
    assert not (tmp_path / "c" / POSE_OFFSETS_FILE).exists()
    assert json.loads((tmp_path / "c" / "training.json").read_text())["pose_refine"] is None


def test_evaluate_fit_pose_recovers_a_perturbed_test_pose(subject, tmp_path):
    """``hravatar evaluate --fit-pose``: test frames whose tracked position is 6 mm off render much
    better after the fit, the fit moves them by about that much, and metrics.json says it was used."""
    import shutil

    from hravatar.data import load_subject
    from hravatar.errors import HRAvatarError
    from hravatar.evaluate import EvaluateConfig, evaluate_avatar
    from hravatar.train import train

    out = tmp_path / "av"
    assert train(_train_cfg(subject, out, iterations=60, pose_refine=False)) == 0
    bad = tmp_path / "bad"
    shutil.copytree(subject, bad)
    tp = json.loads((bad / "tracked_params.json").read_text())
    ds = load_subject(subject, "test")
    for name in ("00010", "00011"):
        tp[name]["translation"][0][0] += 0.02  # the file's units (world_mat scale); metres below
    (bad / "tracked_params.json").write_text(json.dumps(tp))
    moved = float((load_subject(bad, "test").translation - ds.translation).norm(dim=1).mean()) * 1000
    assert moved > 2.0
    kw = dict(avatar=out, subject=bad, lpips=False, images=0)
    plain = evaluate_avatar(EvaluateConfig(output=tmp_path / "e0", **kw))
    fit = evaluate_avatar(EvaluateConfig(output=tmp_path / "e1", fit_pose=40, fit_pose_lr=1e-3, **kw))
    assert plain["protocol"]["pose"] == "tracked" and plain["fit_pose"] is None
    assert "--fit-pose 40" in fit["protocol"]["pose"]
    assert fit["psnr"] > plain["psnr"] + 1.0, (plain["psnr"], fit["psnr"])
    assert abs(fit["fit_pose"]["fit_translation_mm"] - moved) < 0.5 * moved, (moved, fit["fit_pose"])
    with pytest.raises(HRAvatarError, match="--fit-pose"):
        evaluate_avatar(EvaluateConfig(output=tmp_path / "e2", fit_pose=-1, **kw))
