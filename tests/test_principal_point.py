"""The principal point stays the source video's centre when the crop window is shifted or clamped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hravatar.preprocess.crop import crop_window
from hravatar.preprocess.tracking import crop_principal_point


def test_crop_principal_point_clamped_window():
    # a face near the top-right corner of a 480x640 frame: the window is clamped at the border
    boxes = np.array([[500.0, 10.0, 600.0, 110.0]] * 5)
    win = crop_window(boxes, (480, 640), 256)
    assert win.x0 + win.side == 640 and win.y0 == 0  # clamped at the right and top borders
    cx, cy = crop_principal_point((480, 640), win.x0, win.y0, win.scale)
    assert cx == pytest.approx((320 - win.x0) * 256 / win.side) and cy == pytest.approx(240 * 256 / win.side)
    assert cx < 128 and cy > 128  # not the crop centre
    assert crop_principal_point((512, 512), 0, 0, 1.0) == (256.0, 256.0)


def test_tracking_keeps_the_true_principal_point():
    pytest.importorskip("mediapipe")
    pytest.importorskip("anny")
    from helpers.synthetic_clip import synthetic_clip
    from hravatar.geometry import axis_angle_to_matrix
    from hravatar.head import load_head_model
    from hravatar.preprocess.embedding import landmark_embedding
    from hravatar.preprocess.mediapipe_models import ARKIT_NAMES, FaceLandmarker
    from hravatar.preprocess.tracking import TrackingConfig, track

    model = load_head_model("open")
    emb = landmark_embedding(model)
    clip = synthetic_clip(model, num_frames=6, size=512, fov_deg=20.0, max_jaw_rad=0.1)
    x0, y0, side = 100, 0, 412  # a window clamped at the top and right borders
    crops = clip.frames[:, y0:y0 + side, x0:x0 + side]
    pp = crop_principal_point((512, 512), x0, y0, 1.0)
    det = FaceLandmarker()
    res = [det.detect(np.ascontiguousarray(f)) for f in crops]
    det.close()
    assert all(r is not None for r in res)
    lm = np.stack([r.points[:, :2] for r in res])
    bs = np.stack([r.blendshapes for r in res])
    Rt = axis_angle_to_matrix(torch.as_tensor(clip.pose[:, 0]))
    errs = {}
    for name, p in (("true", pp), ("centre", None)):
        out = track(model, emb, lm, np.ones(len(lm), bool), side, bs, ARKIT_NAMES, focal_px=float(clip.K[0, 0]),
                    cfg=TrackingConfig(iterations=200, fps=10, optimize_focal=False), show_progress=False,
                    principal_px=p)
        if p is not None:
            assert out.K[0, 2].item() == pytest.approx(pp[0]) and out.K[1, 2].item() == pytest.approx(pp[1])
            assert float(out.landmark_error_px.mean()) <= 2.0
        Re = axis_angle_to_matrix(out.pose[:, 0])
        cos = (((Re.transpose(1, 2) @ Rt).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
        errs[name] = float(np.degrees(torch.acos(cos).numpy()).mean())
    print(f"head rotation error: true principal point {errs['true']:.2f} deg, crop centre {errs['centre']:.2f} deg")
    assert errs["true"] < 2.0 and errs["true"] < errs["centre"]
