"""Accuracy of head tracking on a synthetic clip rendered from known open-head-model parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mediapipe")
pytest.importorskip("anny")


@pytest.fixture(scope="module")
def setup():
    from helpers.synthetic_clip import synthetic_clip
    from hravatar.head import load_head_model
    from hravatar.preprocess.embedding import landmark_embedding

    model = load_head_model("open")
    emb = landmark_embedding(model)
    clip = synthetic_clip(model, num_frames=10, size=512, fov_deg=20.0,
                          expressions={"mouthSmileLeft": 0.6, "mouthSmileRight": 0.6})
    return model, emb, clip


def test_embedding_covers_landmarks(setup):
    model, emb, _ = setup
    assert emb.faces.shape == (478,) and emb.bary.shape == (478, 3)
    assert (emb.faces >= 0).all() and (emb.faces < model.faces.shape[0]).all()
    np.testing.assert_allclose(emb.bary.sum(1), 1.0, atol=1e-5)
    assert (emb.weights > 0.5).sum() > 300  # most landmarks are well defined on the mesh
    assert emb.num_views >= 10


def test_tracking_recovers_known_parameters(setup):
    from hravatar.geometry import axis_angle_to_matrix
    from hravatar.preprocess.mediapipe_models import ARKIT_NAMES, FaceLandmarker
    from hravatar.preprocess.tracking import TrackingConfig, track

    model, emb, clip = setup
    det = FaceLandmarker()
    res = [det.detect(f) for f in clip.frames]
    assert all(r is not None for r in res), "MediaPipe must find the face on every synthetic render"
    lm = np.stack([r.points[:, :2] for r in res])
    bs = np.stack([r.blendshapes for r in res])
    # unknown focal: start 20% off the truth
    out = track(model, emb, lm, np.ones(len(lm), bool), 512, bs, ARKIT_NAMES,
                focal_px=float(clip.K[0, 0]) * 1.2, cfg=TrackingConfig(iterations=300, fps=10),
                show_progress=False)
    err = out.landmark_error_px.numpy()
    print(f"synthetic: landmark error {err.mean():.2f} px, focal {out.K[0, 0]:.0f} (true {clip.K[0, 0]:.0f})")
    assert err.mean() <= 2.0
    Re = axis_angle_to_matrix(out.pose[:, 0])
    Rt = axis_angle_to_matrix(torch.as_tensor(clip.pose[:, 0]))
    cos = (((Re.transpose(1, 2) @ Rt).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    rot_err = np.degrees(torch.acos(cos).numpy())
    jaw_err = np.degrees(np.abs(out.pose[:, 2, 0].numpy() - clip.pose[:, 2, 0]))
    print(f"rotation error mean {rot_err.mean():.2f} max {rot_err.max():.2f} deg; "
          f"jaw error mean {jaw_err.mean():.2f} max {jaw_err.max():.2f} deg")
    assert rot_err.mean() < 3.0 and rot_err.max() < 5.0
    assert jaw_err.mean() < 3.0 and jaw_err.max() < 6.0
    # the jaw opens when the truth does
    assert out.pose[:, 2, 0].numpy().argmax() in range(3, 8)
    # ARKit jaw expressions stay frozen: the jaw joint carries the opening
    for n in model.meta.get("jaw_expressions", []):
        assert float(out.expression[:, model.expr_names.index(n)].abs().max()) == 0.0
