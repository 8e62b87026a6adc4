"""``hravatar preprocess --photometric``: the refinement stage runs, is resumable, keeps landmarks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe")
pytest.importorskip("anny")

from hravatar.cli import run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_preprocess_cli import write_video  # noqa: E402

FAST = ["--size", "128", "--min-frames", "4", "--iterations", "60", "--no-overlay"]
PHOTO = ["--photometric", "--photometric-steps", "12", "--photometric-resolution", "64"]


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory):
    from helpers.synthetic_clip import synthetic_clip
    from hravatar.head import load_head_model

    clip = synthetic_clip(load_head_model("open"), num_frames=6, size=256, fov_deg=30.0, head_fraction=0.35)
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", clip.frames)


@pytest.fixture(autouse=True)
def _fresh_log_handler():
    from hravatar.progress import log

    for h in list(log.handlers):
        log.removeHandler(h)
    yield


def test_photometric_stage_runs_resumes_and_keeps_landmarks(clip_video, tmp_path, monkeypatch):
    from hravatar.preprocess import pipeline

    out = tmp_path / "subj"

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    # first run: stopped right after the photometric stage (before the subject is written)
    monkeypatch.setattr(pipeline, "_write", interrupt)
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST, *PHOTO]) == 130
    work = out / ".work"
    assert (work / "photometric.done").is_file() and (work / "photometric.npz").is_file()
    info = json.loads((work / "photometric.done").read_text())
    monkeypatch.undo()

    # the re-run resumes: no finished stage runs again
    def no_redo(*a, **k):
        raise AssertionError("finished stage re-run")

    for stage in ("_stage_detect", "_stage_frames", "_stage_track", "_stage_photometric"):
        monkeypatch.setattr(pipeline, stage, no_redo)
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST, *PHOTO]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["settings"]["photometric"]
    ph = man["tracking"]["photometric"]
    assert ph == info
    # it ran: appearance fitted, the colour error did not grow, the landmark error stays put
    assert np.isfinite(ph["photo_error_before"]) and 0 < ph["photo_error_after"] <= ph["photo_error_before"] * 1.05
    before, after = ph["mean_landmark_error_before_px"], ph["mean_landmark_error_after_px"]
    print(f"photometric stage: landmark error {before:.3f} -> {after:.3f} px at 128 px; colour error "
          f"{ph['photo_error_before']:.4f} -> {ph['photo_error_after']:.4f}")
    assert after <= before + 0.25
    errs = [q["landmark_error_px"] for q in man["quality"]]
    assert np.isclose(np.mean(errs), after, atol=1e-3)  # the manifest reports the refined track
    # a complete subject: nothing runs again
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST, *PHOTO]) == 0


def test_automatic_step_count_scales_with_the_clip():
    from hravatar.preprocess.photometric import PhotometricConfig, auto_steps

    cfg = PhotometricConfig()
    assert cfg.steps == 0  # automatic by default
    assert auto_steps(cfg, 216) == 810  # 15 draws of each of 216 frames, 4 per step
    assert auto_steps(cfg, 8) == cfg.min_steps == 80
    assert auto_steps(cfg, 5000) == cfg.max_steps == 1500
    assert auto_steps(PhotometricConfig(steps=12), 216) == 12  # an explicit count wins
    assert auto_steps(PhotometricConfig(updates_per_frame=30), 100) == 750 > auto_steps(cfg, 100) == 375
