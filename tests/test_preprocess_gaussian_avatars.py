"""The GaussianAvatars / VHAP reader on a tiny folder made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hravatar.data.gaussian_avatars import is_gaussian_avatars, load_gaussian_avatars
from hravatar.errors import HRAvatarError


def _make(root, cams=2, steps=3, size=32):
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "fg_masks").mkdir()
    (root / "flame_param").mkdir()
    frames = []
    for t in range(steps):
        np.savez(root / "flame_param" / f"{t:05d}.npz", rotation=np.full((1, 3), 0.1 * t),
                 translation=np.array([[0.0, 0.01 * t, 0.0]]), neck_pose=np.zeros((1, 3)),
                 jaw_pose=np.array([[0.2 * t, 0, 0]]), eyes_pose=np.arange(6.0)[None] * 0.01,
                 shape=np.arange(300.0) * 1e-3, expr=np.full((1, 100), float(t)),
                 static_offset=np.zeros((1, 10, 3)))
        for c in range(cams):
            name = f"{t:05d}_{c:02d}.png"
            img = np.full((size, size, 3), 40 * c + 10 * t, np.uint8)
            cv2.imwrite(str(root / "images" / name), img)
            m = np.zeros((size, size), np.uint8)
            m[8:24, 8:24] = 255
            cv2.imwrite(str(root / "fg_masks" / name), m)
            # camera on +z at 1 m looking at the origin, OpenGL axes (c2w = translation only)
            c2w = np.eye(4)
            c2w[:3, 3] = [0.1 * c, 0, 1.0]
            frames.append({"file_path": f"images/{name}", "fg_mask_path": f"fg_masks/{name}",
                           "transform_matrix": c2w.tolist(), "timestep_index": t, "camera_index": c,
                           "flame_param_path": f"flame_param/{t:05d}.npz",
                           "fl_x": 40.0, "fl_y": 40.0, "cx": 16.0, "cy": 16.0, "w": size, "h": size})
    (root / "transforms_train.json").write_text(json.dumps({"frames": frames[: 2 * cams]}))
    (root / "transforms_test.json").write_text(json.dumps({"frames": frames[2 * cams:]}))


def test_reader_converts_cameras_and_parameters(tmp_path):
    _make(tmp_path)
    assert is_gaussian_avatars(tmp_path)
    ds = load_gaussian_avatars(tmp_path, "train")
    assert len(ds) == 4 and ds.head_model == "flame" and ds.image_size == (32, 32)
    assert ds.shape.shape == (300,) and ds.expression.shape == (4, 100)
    np.testing.assert_allclose(ds.pose[2, 0].numpy(), [0.1] * 3, atol=1e-6)
    np.testing.assert_allclose(ds.pose[2, 2].numpy(), [0.2, 0, 0], atol=1e-6)
    np.testing.assert_allclose(ds.pose[0, 4].numpy(), [0.03, 0.04, 0.05], atol=1e-6)
    # the world origin is 1 m in front of camera 0, on the optical axis (OpenCV: +z forward)
    o = ds.viewmats[0] @ torch.tensor([0.0, 0, 0, 1])
    np.testing.assert_allclose(o[:3].numpy(), [0, 0, 1.0], atol=1e-6)
    # a point above the origin (+y world) appears above the image centre (smaller pixel y)
    p = ds.viewmats[0] @ torch.tensor([0.0, 0.1, 0, 1])
    assert p[1] < 0
    s = ds[1]
    assert s.mask.sum() == 16 * 16 and s.image.shape == (32, 32, 3)
    assert s.image[0, 0].max() == 0  # composited on black outside the matte
    assert len(load_gaussian_avatars(tmp_path, "all")) == 6
    assert len(load_gaussian_avatars(tmp_path, "all", camera=1)) == 3


def test_reader_errors(tmp_path):
    with pytest.raises(HRAvatarError, match="not a GaussianAvatars"):
        load_gaussian_avatars(tmp_path)
    _make(tmp_path)
    (tmp_path / "flame_param" / "00000.npz").unlink()
    with pytest.raises(HRAvatarError, match="cannot read FLAME"):
        load_gaussian_avatars(tmp_path)
