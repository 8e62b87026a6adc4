"""``hravatar preprocess``: a synthetic clip end to end, resuming, every bad-input case, the real clip."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe")
pytest.importorskip("anny")

from hravatar.cli import run  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_CLIP = SHARED / "data" / "videos" / "talking_man_d18.mp4"


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def clip():
    from helpers.synthetic_clip import synthetic_clip
    from hravatar.head import load_head_model

    model = load_head_model("open")
    return synthetic_clip(model, num_frames=8, size=256, fov_deg=30.0, head_fraction=0.35)


@pytest.fixture(scope="module")
def clip_video(clip, tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", clip.frames)


@pytest.fixture(autouse=True)
def _fresh_log_handler():
    """The CLI binds its log handler to the sys.stderr of the first call; pytest swaps that per test."""
    from hravatar.progress import log

    for h in list(log.handlers):
        log.removeHandler(h)
    yield


FAST = ["--size", "128", "--min-frames", "4", "--iterations", "60", "--photometric-resolution", "48"]


def _err(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_end_to_end_and_rerun_skips(clip_video, tmp_path, capsys):
    out = tmp_path / "subj"
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["num_frames"] == 8
    # the photometric refinement runs by default, its automatic step count (8 frames: the minimum, 80)
    assert man["settings"]["photometric"] and man["tracking"]["photometric"]["steps"] == 80
    assert len(list((out / "image").glob("*.png"))) == 8
    assert (out / "overlay.mp4").stat().st_size > 0
    assert not (out / ".work").exists()
    q = man["quality"]
    assert all(f["landmarks"] for f in q) and all(f["landmark_error_px"] is not None for f in q)
    from hravatar.data import load_subject

    ds = load_subject(out, split="all")
    assert len(ds) == 8 and ds.image_size == (128, 128)
    img = ds[0].image
    assert img.shape[-1] == 3
    # the subject is complete: a re-run does nothing and succeeds
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST]) == 0
    # --overwrite redoes it and removes only what preprocessing wrote
    (out / "notes.txt").write_text("mine")
    (out / "image" / "99999.png").write_bytes(b"stale")
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and not (out / "image" / "99999.png").exists()
    assert len(list((out / "image").glob("*.png"))) == 8 and json.loads((out / "manifest.json").read_text())["complete"]


def test_resume_after_interruption(clip_video, tmp_path, monkeypatch):
    from hravatar.preprocess import pipeline

    out = tmp_path / "subj"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_stage_track", boom)
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST, "--no-overlay"]) == 130
    assert (out / ".work" / "frames.done").is_file() and not (out / "manifest.json").exists()
    monkeypatch.undo()

    def no_redo(*a, **k):
        raise AssertionError("finished stage re-run")

    monkeypatch.setattr(pipeline, "_stage_detect", no_redo)
    monkeypatch.setattr(pipeline, "_stage_frames", no_redo)
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST, "--no-overlay"]) == 0
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_missing_and_empty_and_garbage_files(tmp_path, capsys):
    out = tmp_path / "subj"
    assert run(["preprocess", str(tmp_path / "nope.mp4"), "-o", str(out)]) == 2
    assert "no such file" in _err(capsys)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert run(["preprocess", str(empty), "-o", str(out)]) == 2
    assert "empty" in _err(capsys)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    assert run(["preprocess", str(junk), "-o", str(out)]) == 2
    assert "cannot read it as a video" in _err(capsys)
    assert not out.exists()


def test_no_face(tmp_path, capsys):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (6, 128, 128, 3), dtype=np.uint8)
    v = write_video(tmp_path / "noise.mp4", frames)
    out = tmp_path / "subj"
    assert run(["preprocess", str(v), "-o", str(out), *FAST]) == 2
    msg = _err(capsys)
    assert "face was found in only 0 of 6 frames" in msg
    assert not out.exists()


def test_too_few_frames(clip, tmp_path, capsys):
    v = write_video(tmp_path / "short.mp4", clip.frames[:3])
    out = tmp_path / "subj"
    assert run(["preprocess", str(v), "-o", str(out), "--size", "128"]) == 2
    assert "only 3 frames, training needs at least 30" in _err(capsys)
    assert not out.exists()


def test_tiny_face(clip, tmp_path, capsys):
    import cv2

    # the 256 px render shrunk into the corner of a 640x480 frame: BlazeFace still finds the ~32 px face
    small = [cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA) for f in clip.frames]
    frames = np.full((len(small), 480, 640, 3), 110, np.uint8)
    frames[:, 40:136, 60:156] = np.stack(small)
    v = write_video(tmp_path / "tiny.mp4", frames)
    out = tmp_path / "subj"
    assert run(["preprocess", str(v), "-o", str(out), *FAST]) == 2
    msg = _err(capsys)
    assert "the face is too small" in msg, msg
    assert not out.exists()


def test_several_faces_uses_largest(clip, tmp_path, caplog):
    import cv2

    big = clip.frames
    small = np.stack([cv2.resize(f, (160, 160), interpolation=cv2.INTER_AREA) for f in big])
    frames = np.full((len(big), 256, 448, 3), 115, np.uint8)
    frames[:, :, :256] = big
    frames[:, 48:208, 276:436] = small
    v = write_video(tmp_path / "two.mp4", frames)
    out = tmp_path / "subj"
    from hravatar.progress import log

    log.propagate = True
    try:
        with caplog.at_level("WARNING", logger="hravatar"):
            assert run(["preprocess", str(v), "-o", str(out), *FAST, "--no-overlay"]) == 0
    finally:
        log.propagate = False
    assert "several faces" in caplog.text
    crop = json.loads((out / "manifest.json").read_text())["crop"]
    assert crop["x0"] + crop["side"] / 2 < 256  # the crop is on the larger (left) face


def test_output_folder_not_ours(clip_video, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(["preprocess", str(clip_video), "-o", str(out), *FAST]) == 2
    assert "not an unfinished subject" in _err(capsys)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(not REAL_CLIP.is_file(), reason="shared real clip not present")
def test_real_clip_every_frame_tracked(tmp_path):
    out = tmp_path / "real"
    assert run(["preprocess", str(REAL_CLIP), "-o", str(out), "--size", "256", "--max-frames", "60",
                "--iterations", "200", "--no-overlay", "--no-photometric"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    q = man["quality"]
    assert len(q) == 60 and all(f["landmarks"] for f in q)
    errs = np.array([f["landmark_error_px"] for f in q], float)
    assert np.isfinite(errs).all()
    print(f"real clip (60 frames at 256 px): mean landmark error {errs.mean():.2f} px "
          f"= {errs.mean() * 2:.2f} px at 512")
    assert errs.mean() < 3.0
