"""The webcam mode's mapping (web/drive.js, run in Chromium) equals hravatar.avatar.drive's live
mapping (drive_live) frame by frame for the same scores and MediaPipe matrices: one mapping serves
``hravatar reenact`` and the browser viewer."""

from __future__ import annotations

import functools
import http.server
from contextlib import contextmanager

import numpy as np
import pytest

from helpers.web_browser import browser, serving
from hravatar.apps.web_bundle import WEB_APP_DIR
from hravatar.avatar.drive import (
    GL_TO_CV,
    AvatarBase,
    calibrate_neutral,
    drive_live,
    driver_mapping,
    fit_lever,
    live_lever,
    live_mapping,
    live_neutral,
    map_scores,
    nearest_rotation,
    rotvec_to_matrix,
)
from hravatar.head.arkit import ARKIT_NAMES

COL = {n: i for i, n in enumerate(ARKIT_NAMES)}
T, CALIB = 24, 8

JS = """async ([table, scores, mats, reset]) => {
  const { LiveDriver } = await import('./drive.js');
  const d = new LiveDriver(table);
  const out = [];
  for (let t = 0; t < scores.length; t++) {
    if (t === reset) { d.resetNeutral(); out.length = 0; }
    const r = d.step(scores[t], mats ? mats[t] : null);
    out.push([r.expression, r.pose, r.translation]);
  }
  return out;
}"""


@contextmanager
def _serve_web_dir():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(WEB_APP_DIR))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url


def _inputs(seed: int = 0):
    """A synthetic avatar base, driver scores [T,52] and MediaPipe matrices [T,4,4] (scaled rotations)."""
    rng = np.random.default_rng(seed)
    names = ["eyeBlinkLeft", "jawOpen", "mouthSmileLeft", "browInnerUp", "eyeLookOutLeft", "not_arkit"]
    pose = rng.normal(0, 0.1, (5, 3))
    view = np.eye(4)
    view[:3, :3] = rotvec_to_matrix(np.array([np.pi, 0.05, 0.02]))  # a camera looking back at the head
    view[:3, 3] = [0.01, 0.02, 0.6]
    base = AvatarBase(names, pose, rng.normal(0, 0.01, 3), view, rng.uniform(0, 0.3, len(names)), 0.03, 0.35)
    scores = rng.uniform(0, 0.6, (T, len(ARKIT_NAMES)))
    scores[:, COL["tongueOut"]] = 0
    rots = rotvec_to_matrix(rng.normal(0, 0.2, (T, 3)))
    M = np.zeros((T, 4, 4))
    M[:, :3, :3] = rots * rng.uniform(0.9, 1.1, (T, 1, 1))  # MediaPipe's transform carries a scale
    M[:, :3, 3] = rng.normal(0, 3, (T, 3)) + [0, 0, -50]
    M[:, 3, 3] = 1
    return base, scores, M


def test_live_neutral_uses_calibration_frames_only():
    m = driver_mapping(calibration_frames=CALIB, correspondence="names")
    _, s, _ = _inputs()
    # during calibration: the frames so far; afterwards: fixed at the calibration frames'
    np.testing.assert_allclose(live_neutral(s, m, 3).scores, np.percentile(s[:4], 10, axis=0))
    later = live_neutral(s, m, T - 1, start=5)
    np.testing.assert_allclose(later.scores, calibrate_neutral(s, m, slice(5, 5 + CALIB)).scores)
    assert not np.allclose(later.scores, calibrate_neutral(s, m).scores)
    # with every frame in the calibration, the last live frame is the offline (whole clip) mapping
    base, _, _ = _inputs()
    m_all = driver_mapping(base.jaw_rad_per_unit, calibration_frames=T, correspondence="names")
    e, p, _ = drive_live(base, s, None, m_all)
    e2, j2, eyes2 = map_scores(s[-1:], calibrate_neutral(s, m_all), base.expr_names, m_all, base.neutral,
                               base.neutral_jaw)
    np.testing.assert_allclose(e[-1], e2[0], atol=1e-6)
    np.testing.assert_allclose(p[-1, 2], j2[0], atol=1e-6)
    np.testing.assert_allclose(p[-1, 3:], eyes2[0], atol=1e-6)


def test_nearest_rotation_is_the_svd_polar_factor():
    _, _, M = _inputs(1)
    U, _, Vt = np.linalg.svd(M[:, :3, :3])
    np.testing.assert_allclose(nearest_rotation(M[:, :3, :3]), U @ Vt, atol=1e-12)


def _calibrated_like(m: dict, seed: int = 0) -> dict:
    """``m`` with multi-term rows (as the calibrated correspondence has): each expression from its own
    score and two random others, random non-negative gains."""
    rng = np.random.default_rng(seed)
    src = [n for n in ARKIT_NAMES if n not in m["zeroed"]]
    m = dict(m, correspondence="calibrated")
    m["expressions"] = {n: {"terms": [[n, float(rng.uniform(0.5, 2))]]
                            + [[str(o), float(rng.uniform(0, 1))] for o in rng.choice(src, 2, replace=False)]}
                        for n in m["expressions"]}
    return m


@pytest.mark.parametrize("reset,rows", [(-1, "names"), (11, "names"), (11, "multi"), (-1, "gains")])
def test_js_mapping_equals_python(reset, rows):
    """drive.js (the page's mapping) vs drive_live within 1e-5, with and without a "set neutral", for
    name-to-name rows, multi-term rows (the calibrated correspondence's form) and the calibrated
    expression gain (folded into the table: drive.js has no rule of its own for it)."""
    base, s, M = _inputs()
    m = driver_mapping(base.jaw_rad_per_unit, calibration_frames=CALIB, correspondence="names",
                       expression_gain="calibrated" if rows == "gains" else "none")
    table = live_mapping(base, m if rows == "names" else _calibrated_like(m))
    start = max(reset, 0)
    e, p, t = drive_live(base, s, M, table, start=start)
    assert np.ptp(p[:, 0], axis=0).max() > 0.1 and np.ptp(p[:, 3], axis=0).max() > 0.05  # head and eyes move
    assert (e[:, 0] > 0).any() and (p[:, 2, 0] > 0).any()
    assert np.ptp(t, axis=0).max() > 0.01  # the head translation is followed
    with _serve_web_dir() as url, browser() as br:
        page = br.new_page()
        page.goto(url + "drive.js")
        out = page.evaluate(JS, [table, s.tolist(), [m.flatten().tolist() for m in M], reset])
    assert len(out) == len(e)
    got_e = np.array([o[0] for o in out])
    got_p = np.array([o[1] for o in out])
    got_t = np.array([o[2] for o in out])
    np.testing.assert_allclose(got_e, e, atol=1e-5)
    np.testing.assert_allclose(got_p, p, atol=1e-5)
    np.testing.assert_allclose(got_t, t, atol=1e-5)


def test_live_translation_follows_the_turning_point():
    """A driver head that turns about a pivot 9 cm behind its face point while it sways sideways by
    +-3 cm: the live translation (causal lever, drive_live) follows the sway (within 1 cm on average,
    along the right axis of the avatar's camera) where the raw face point (no lever) is off by 2 cm."""
    rng = np.random.default_rng(3)
    n = 40
    view = np.eye(4)
    view[:3, :3] = rotvec_to_matrix(np.array([np.pi, 0.05, 0.02]))
    base = AvatarBase(["jawOpen"], np.zeros((5, 3)), np.array([0.01, -0.02, 0.03]), view, np.zeros(1))
    rr = rotvec_to_matrix(np.cumsum(rng.normal(0, 0.05, (n, 3)), 0) * [1, 1, 0.3])
    sway = np.zeros((n, 3))
    sway[:, 0] = 0.03 * np.sin(2 * np.pi * np.arange(n) / 20)
    face = np.array([0.0, 0.0, 0.5]) + sway + rr @ np.array([0.0, 0.04, -0.09])
    M = np.zeros((n, 4, 4))
    M[:, :3, :3] = GL_TO_CV @ rr @ GL_TO_CV
    M[:, :3, 3] = face @ GL_TO_CV.T / 0.01  # MediaPipe: centimetres, OpenGL camera axes
    M[:, 3, 3] = 1
    m = driver_mapping(correspondence="names")
    lever = live_lever(rr, face, 0.1)
    np.testing.assert_allclose(lever[-1], fit_lever(rr, face, 0, 0.1), atol=1e-12)
    np.testing.assert_allclose(lever[5], fit_lever(rr[:6], face[:6], 0, 0.1), atol=1e-12)
    _, _, t = drive_live(base, np.zeros((n, 52)), M, m)
    want = base.translation + (sway - sway[0]) @ view[:3, :3]  # V^T (sway change), per frame
    err = np.linalg.norm(t - want, axis=1).mean()
    assert err < 0.01, err
    cam = (t - base.translation) @ view[:3, :3].T  # the avatar's motion in its camera frame
    assert np.corrcoef(cam[:, 0], sway[:, 0])[0, 1] > 0.95
    m["head"]["lever_ridge"] = 1e6  # no lever: the face point's own motion
    _, _, t0 = drive_live(base, np.zeros((n, 52)), M, m)
    assert np.linalg.norm(t0 - want, axis=1).mean() > 2 * err
    _, _, t1 = drive_live(base, np.zeros((n, 52)), M, m, follow_translation=False)
    np.testing.assert_allclose(t1, np.repeat(base.translation[None], n, 0), atol=1e-6)
