"""Live webcam driving end to end: Chromium's fake camera plays a clip rendered from our synthetic
subject; the page runs MediaPipe's face landmarker (local wasm + model) and drives the avatar. The
jawOpen the page applies must follow the clip's ground truth (correlation >= 0.8).

Each clip frame carries its index as a 7-bit black/white code strip at the bottom, which a probe
injected into the page reads back from the video frame MediaPipe saw, so the page's values can be
paired with the ground truth of that exact frame."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.tiny_subject import make_tiny_subject, train_tiny_avatar
from helpers.web_browser import Page, browser, chromium_path, serve_bundle
from hravatar.apps.view import mediapipe_dir
from hravatar.apps.web_bundle import build_bundle
from hravatar.avatar import load_avatar
from hravatar.avatar.drive import AvatarBase, drive_live, live_neutral

pytestmark = pytest.mark.usefixtures("one_thread")
SIDE = 224  # synthetic frames
FRAME_W, FRAME_H = 320, 320  # the clip: the face in the top middle, the code strip at the bottom
BITS, BLOCK = 7, 32
FRAMES = 48

PROBE = """c => {
  const g = c.getContext('2d', {willReadFrequently: true});
  let code = 0;
  for (let k = 0; k < %(bits)d; k++) {
    const x = Math.round((%(x0)d + k * %(block)d + %(block)d / 2) / %(fw)d * c.width);
    const y = Math.round((%(fh)d - %(block)d / 4) / %(fh)d * c.height);
    if (g.getImageData(x, y, 1, 1).data[0] > 128) code |= 1 << k;
  }
  return code;
}"""


def _write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """uint8 RGB frames -> a YUV 4:2:0 (BT.601 full range, 'C420jpeg') y4m clip."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for fr in frames:
            rgb = fr.astype(np.float32)
            y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            u = -0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2] + 128
            v = 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2] + 128
            sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean((1, 3))  # noqa: E731
            f.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                f.write(np.clip(np.round(plane), 0, 255).astype(np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(y4m path, ground-truth jawOpen, head yaw (radians) and sideways sway (metres, camera x) per
    frame, an avatar bundle, strip x)."""
    chromium_path()
    if not (mediapipe_dir() / "vision_bundle.mjs").is_file():
        pytest.skip(f"MediaPipe web files not installed ({mediapipe_dir()}); run scripts/setup_env.sh")
    from hravatar.assets import asset_path

    if asset_path("face_landmarker.task", required=False) is None:
        pytest.skip("face_landmarker.task not in the asset cache; run scripts/fetch_assets.py")
    from hravatar.avatar import Camera, FrameParams, render
    from hravatar.geometry import compose_axis_angle
    from hravatar.synth.curves import JAW_RAD_PER_JAWOPEN
    from hravatar.synth.subject import SynthConfig, rebuild_gt, synthesize

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("webcam")
    # the synthetic subject (identity, appearance, light, camera), its jaw driven by a known curve:
    # three open-close cycles of different heights (jawOpen in [0, 1]); the head turns +-10 degrees
    # (about +y, before the subject's pose) on a slower cycle, and sways sideways by +-2 cm (along the
    # camera's x axis) on another
    syn = synthesize(SynthConfig(out=root / "syn", size=SIDE, frames=2, points_per_face=4, env_height=32))
    gt = rebuild_gt(syn)
    t = np.arange(FRAMES)
    amp = np.array([1.0, 0.55, 0.8])[np.minimum(t // 16, 2)]
    truth = amp * 0.5 * (1 - np.cos(2 * np.pi * t / 16))
    yaw = np.radians(10.0) * np.sin(2 * np.pi * t / FRAMES)
    sway = 0.02 * np.sin(2 * np.pi * t / 24)
    light = gt["lights"][gt["info"]["train_env"]]
    frames = []
    x0 = (FRAME_W - SIDE) // 2
    with torch.no_grad():
        for i in range(FRAMES):
            pose = gt["pose"][0:1].clone()
            pose[0, 2, 0] = JAW_RAD_PER_JAWOPEN * float(truth[i])
            pose[0, 0] = compose_axis_angle(torch.tensor([0.0, float(yaw[i]), 0.0]), pose[0, 0])
            trans = gt["translation"][0:1] + float(sway[i]) * gt["viewmat"][0, :3]  # V^T [sway, 0, 0]
            p = FrameParams(gt["shape"][None], torch.zeros_like(gt["expression"][0:1]), pose, trans)
            out = render(gt["avatar"], light, p, Camera(gt["viewmat"], gt["K"], SIDE, SIDE), "pbr",
                         background=torch.full((3,), 0.55))
            rgb = out.image[0].clamp(0, 1).numpy()
            canvas = np.full((FRAME_H, FRAME_W, 3), 140, np.uint8)
            canvas[16:16 + SIDE, x0:x0 + SIDE] = (rgb * 255 + 0.5).astype(np.uint8)
            strip = canvas[FRAME_H - BLOCK // 2:]
            strip[:] = 0
            for k in range(BITS):
                if i >> k & 1:
                    strip[:, x0 + k * BLOCK: x0 + (k + 1) * BLOCK] = 255
            frames.append(canvas)
    y4m = _write_y4m(root / "clip.y4m", frames, fps=8)
    # any small avatar: the test checks what the page applies
    subj = make_tiny_subject(root / "subj", size=32, frames=4)
    train_tiny_avatar(subj, root / "av", 2, warmup_steps=1)
    bundle = build_bundle(load_avatar(root / "av", "cpu"))
    torch.set_num_threads(n)
    return y4m, truth, yaw, sway, bundle, x0


def _wait_frames(pg, frames: int, codes: int, n_truth: int, limit_s: float = 60.0) -> None:
    """Wait until the page's webcam log has ``frames`` entries with ``codes`` distinct clip frames."""
    t0 = time.time()
    while time.time() - t0 < limit_s:
        log = pg.evaluate("window.hravatar.webcamLog")
        if len(log) >= frames and len({e["probe"] for e in log if 0 <= e.get("probe", -1) < n_truth}) >= codes:
            return
        time.sleep(1.0)


def test_webcam_jaw_follows_clip(clip):
    y4m, truth, yaw, sway, bundle, x0 = clip
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", "--autoplay-policy=no-user-gesture-required"]
    with serve_bundle(bundle) as url, browser(args) as br:
        page = Page(br, url)
        assert page.ready
        pg = page.page
        pg.evaluate("p => { window.hravatar.webcamProbe = eval(p); }",
                    PROBE % {"bits": BITS, "x0": x0, "block": BLOCK, "fw": FRAME_W, "fh": FRAME_H})
        pg.click("#btn_webcam")
        pg.wait_for_function("(window.hravatar.webcamLog || []).length > 0 || window.hravatar.errors.length > 0",
                             timeout=90000)
        assert pg.evaluate("window.hravatar.errors") == []
        _wait_frames(pg, 60, 30, len(truth))
        # one evaluate (JS runs it atomically): what the page applies now and every frame it mapped
        applied, log, neutral0 = pg.evaluate(
            "[window.hravatar.currentParams(), window.hravatar.webcamLog, window.hravatar.state.webcam.driver.neutral]")
        # "set neutral": the next frames become the neutral and the head's reference
        pg.click("#btn_neutral")
        calib = bundle.header["driver"]["live"]["calibration_frames"]
        _wait_frames(pg, calib + 6, 0, len(truth))
        applied2, log2, neutral2 = pg.evaluate(
            "[window.hravatar.currentParams(), window.hravatar.webcamLog, window.hravatar.state.webcam.driver.neutral]")
        # MediaPipe's wasm prints its TFLite "INFO: ..." lines through console.error
        errors = [e for e in page.console_errors if not e.startswith("INFO:")]
        assert errors == [], errors
    pairs = [(truth[e["probe"]], e["jawOpen"]) for e in log if 0 <= e.get("probe", -1) < len(truth)]
    assert len(pairs) >= 20, f"only {len(pairs)} webcam frames identified ({len(log)} processed)"
    gt, got = np.array(pairs).T
    r = float(np.corrcoef(gt, got)[0, 1])
    print(f"webcam: jawOpen correlation {r:.3f} over {len(pairs)} frames ({len(log)} processed, "
          f"MediaPipe {np.median([e['detectMs'] for e in log]):.0f} ms/frame)")
    assert r >= 0.8, f"jawOpen correlation {r:.2f} over {len(pairs)} frames"
    # head motion: the page's head rotation (relative to its first webcam frame, in the avatar's
    # world) turns the same way as the clip's, by about as much
    ided = [e for e in log if 0 <= e.get("probe", -1) < len(truth) and e.get("rotation")]
    page_yaw = np.array([math.atan2(e["rotation"][2], e["rotation"][8]) for e in ided])
    first = next(e["probe"] for e in log if e.get("rotation"))
    true_yaw = np.array([yaw[e["probe"]] - yaw[first] for e in ided])
    ry = float(np.corrcoef(true_yaw, page_yaw)[0, 1])
    gain = float(np.polyfit(true_yaw, page_yaw, 1)[0])
    print(f"webcam: head yaw correlation {ry:.3f}, gain {gain:.2f}")
    assert ry >= 0.8 and 0.5 < gain < 2.0, f"head yaw correlation {ry:.2f}, gain {gain:.2f}"
    # head translation: the avatar sways the same way as the clip's head, in its own camera frame
    d = bundle.header["driver"]
    a = d["avatar"]
    Va = np.array(a["viewmat"])[:3, :3]
    ided = [e for e in log if 0 <= e.get("probe", -1) < len(truth) and e.get("translation")]
    page_x = np.array([Va[0] @ (np.array(e["translation"]) - a["translation"]) for e in ided])
    true_x = np.array([sway[e["probe"]] - sway[first] for e in ided])
    rx = float(np.corrcoef(true_x, page_x)[0, 1])
    gain_x = float(np.polyfit(true_x, page_x, 1)[0])
    print(f"webcam: head sway correlation {rx:.3f}, gain {gain_x:.2f}")
    assert rx >= 0.8 and 0.3 < gain_x < 3.0, f"head sway correlation {rx:.2f}, gain {gain_x:.2f}"
    # what the page applies is hravatar.avatar.drive's live mapping of the scores and matrices it saw
    # (live neutral from its first frames, jaw via the jaw gain, gaze -> eyes, head relative to frame 0)
    base = AvatarBase(a["expr_names"], np.array(a["pose"]), np.array(a["translation"]), np.array(a["viewmat"]),
                      np.array(a["neutral"]), a["neutral_jaw"], d["jaw"]["rad_per_unit"])

    def check(applied: dict, log: list[dict], neutral: dict) -> None:
        scores = np.array([e["scores"] for e in log])
        mats = np.array([np.reshape(e["matrix"], (4, 4)) for e in log])
        e, p, t = drive_live(base, scores, mats, d)
        np.testing.assert_allclose(applied["expression"], e[-1], atol=1e-5)
        np.testing.assert_allclose(applied["pose"], p[-1], atol=1e-5)
        np.testing.assert_allclose(applied["translation"], t[-1], atol=1e-5)
        np.testing.assert_allclose([x["jaw"] for x in log], p[:, 2, 0], atol=1e-5)
        np.testing.assert_allclose([x["translation"] for x in log], t, atol=1e-5)
        want = live_neutral(scores, d, len(scores) - 1)
        np.testing.assert_allclose(neutral["scores"], want.scores, atol=1e-6)
        np.testing.assert_allclose(neutral["gaze"], want.gaze, atol=1e-6)

    check(applied, log, neutral0)
    # after "set neutral" the log restarts: the page's neutral is that of the frames since the click
    # (not of the first ones), and everything it applies is drive_live from the click on
    assert len(log2) >= calib + 6, f"only {len(log2)} frames after set neutral"
    assert log2[0]["t"] > log[-1]["t"] and [e["calibrated"] for e in log2[:3]] == [1, 2, 3]
    check(applied2, log2, neutral2)
    assert np.abs(np.subtract(neutral2["scores"], neutral0["scores"])).max() > 1e-3
    assert np.allclose(log2[0]["rotation"], np.eye(3).flatten(), atol=1e-6)  # the new head reference
