"""Subject folder: write/read round trip, HRAvatar layout, splits, crops, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hravatar.data import (
    SubjectParams,
    box_to_affine,
    crop_box_from_points,
    default_test_count,
    load_subject,
    write_subject,
)
from hravatar.data.format import FLIP_YZ, write_png
from hravatar.errors import HRAvatarError


def _params(T: int, H: int = 32, W: int = 40, boxes: bool = True) -> SubjectParams:
    g = np.random.default_rng(0)
    vm = np.eye(4)
    vm[:3, :3] = np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]])  # camera looking at -z from +z
    vm[:3, 3] = [0.01, 0.02, 0.5]
    return SubjectParams(
        shape=g.normal(size=7), expression=g.normal(size=(T, 5)), pose=g.normal(size=(T, 5, 3)) * 0.1,
        translation=g.normal(size=(T, 3)) * 0.01, viewmat=vm,
        K=np.array([[50.0, 0, 21.0], [0, 52.0, 15.0], [0, 0, 1]]), image_size=(H, W), head_model="open",
        crop_boxes=np.tile([20.0, 16.0, 20.0], (T, 1)) if boxes else None,
    )


def _frames(T: int, H: int = 32, W: int = 40) -> list[np.ndarray]:
    g = np.random.default_rng(1)
    out = []
    for _ in range(T):
        f = g.integers(0, 256, size=(H, W, 4), dtype=np.uint8)
        f[:4, :, 3] = 0
        f[4:, :, 3] = 255
        out.append(f)
    return out


def test_round_trip(tmp_path):
    T = 10
    p, frames = _params(T), _frames(T)
    write_subject(tmp_path / "s", iter(frames), p, {"source": "test"})
    ds = load_subject(tmp_path / "s", split="all")
    assert len(ds) == T and ds.head_model == "open" and ds.image_size == (32, 40)
    s = ds[3]
    assert s.image.shape == (32, 40, 3) and s.mask.shape == (32, 40, 1) and s.face_crop.shape == (224, 224, 3)
    a = frames[3][..., 3:].astype(np.float32) / 255
    np.testing.assert_allclose(s.image.numpy(), np.round(frames[3][..., :3] * a) / 255, atol=1 / 255 + 1e-6)
    assert float(s.image[:4].abs().max()) == 0.0  # background black
    np.testing.assert_allclose(s.expression.numpy(), p.expression[3], atol=1e-6)
    np.testing.assert_allclose(s.pose.numpy(), p.pose[3], atol=1e-6)
    np.testing.assert_allclose(s.viewmat.numpy(), p.viewmat, atol=1e-6)
    np.testing.assert_allclose(s.K.numpy(), p.K, atol=1e-6)
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["complete"] and man["source"] == "test" and man["num_frames"] == T
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]  # no temp folders left


def test_split_sizes(tmp_path):
    assert default_test_count(2400) == 350 and default_test_count(3500) == 500
    assert default_test_count(100) == 15
    write_subject(tmp_path / "s", _frames(20), _params(20), {})
    tr, te = load_subject(tmp_path / "s", "train"), load_subject(tmp_path / "s", "test")
    assert len(tr) == 17 and len(te) == 3 and te.frame_indices == [17, 18, 19]
    assert len(load_subject(tmp_path / "s", "test", test_frames=5)) == 5
    with pytest.raises(HRAvatarError):
        load_subject(tmp_path / "s", "test", test_frames=50)


def test_hravatar_camera_matches_projection(tmp_path):
    """HRAvatar's reading of our world_mat (head scaled by 4) projects points to the same pixels."""
    p = _params(2)
    write_subject(tmp_path / "s", _frames(2), p, {})
    tp = json.loads((tmp_path / "s" / "tracked_params.json").read_text())
    X = np.array([0.03, -0.02, 0.05, 1.0])
    cam_ours = p.viewmat @ X
    cam_hr = FLIP_YZ @ np.array(tp["00000"]["world_mat"]) @ np.r_[4 * X[:3], 1]
    np.testing.assert_allclose(cam_ours[:2] / cam_ours[2], cam_hr[:2] / cam_hr[2], atol=1e-12)


def test_reads_hravatar_layout(tmp_path):
    root = tmp_path / "hr"
    (root / "image").mkdir(parents=True)
    (root / "mask").mkdir()
    g = np.random.default_rng(2)
    tp = {"intrinsics": [2.0, 2.0, 0.5, 0.5], "shapecode": [list(range(100))]}
    wm = np.eye(4)
    wm[:3, 3] = [0, 0, -4.0]
    for i in range(1, 8):
        write_png(root / "image" / f"{i}.png", g.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        write_png(root / "mask" / f"{i}.png", np.full((16, 16, 3), 255, np.uint8))
        tp[str(i)] = {"expcode": [[0.1 * i] * 50], "fullposecode": [[0.0] * 15], "world_mat": wm.tolist()}
    (root / "tracked_params.json").write_text(json.dumps(tp))
    ds = load_subject(root, "all")
    assert len(ds) == 7 and ds.num_expr == 50 and ds.num_shape == 100
    np.testing.assert_allclose(ds.K.numpy(), [[32, 0, 8], [0, 32, 8], [0, 0, 1]])
    np.testing.assert_allclose(ds.viewmats[0, :3, 3].numpy(), [0, 0, 1.0])  # 4 / flame_scale, flipped
    assert ds[0].translation.abs().sum() == 0 and float(ds[0].mask.min()) == 1.0
    te = load_subject(root, "test")
    assert te.names == ["7"]  # natural order: 1..7, last 15% = 1 frame


def test_crop_affine_maps_box_to_crop():
    box = crop_box_from_points(np.array([[10.0, 20.0], [30.0, 40.0]]), scale=1.0)
    np.testing.assert_allclose(box, [20, 30, 20])
    A = box_to_affine(box)
    # the box corner (10, 20) in continuous coordinates = pixel index (9.5, 19.5) -> crop index -0.5
    np.testing.assert_allclose(A @ np.array([9.5, 19.5, 1.0]), [-0.5, -0.5], atol=1e-9)
    np.testing.assert_allclose(A @ np.array([29.5, 39.5, 1.0]), [223.5, 223.5], atol=1e-9)


def test_crop_follows_box(tmp_path):
    H = W = 64
    f = np.zeros((H, W, 4), np.uint8)
    f[..., 3] = 255
    f[20:30, 30:40, 0] = 255  # red square
    p = _params(1, H, W)
    p.crop_boxes = np.array([[35.0, 25.0, 10.0]])
    write_subject(tmp_path / "s", [f], p, {})
    crop = load_subject(tmp_path / "s", "all")[0].face_crop
    assert float(crop[..., 0].mean()) > 0.95 and float(crop[..., 1].max()) == 0.0


def test_atomic_failure_leaves_nothing(tmp_path):
    def bad():
        yield _frames(1)[0]
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError):
        write_subject(tmp_path / "s", bad(), _params(3), {})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        write_subject(tmp_path / "s", _frames(2), _params(3), {})
    assert list(tmp_path.iterdir()) == []


def test_gt_and_albedo(tmp_path):
    T, H, W = 2, 8, 8
    n = np.zeros((H, W, 3))
    n[..., 2] = -1.0
    write_subject(tmp_path / "s", _frames(T, H, W), _params(T, H, W), {},
                  albedos=[np.full((H, W, 3), 0.5)] * T,
                  gt={"normal": [n] * T, "albedo": [np.ones((H, W, 3))] * T})
    ds = load_subject(tmp_path / "s", "all")
    assert ds.has_albedo and ds[0].albedo is not None and ds.gt_dir is not None
    np.testing.assert_allclose(ds.gt_map(1, "normal").numpy(), n, atol=1e-4)
    assert ds.gt_map(0, "mask") is None and torch.all(ds.gt_map(0, "albedo") == 1)


def test_mask_fallback_crop(tmp_path):
    write_subject(tmp_path / "s", _frames(2), _params(2, boxes=False), {})
    s = load_subject(tmp_path / "s", "all")[1]
    assert s.face_crop.shape == (224, 224, 3) and torch.isfinite(s.crop_affine).all()
