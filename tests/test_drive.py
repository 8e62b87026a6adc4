"""Driver -> avatar mapping (hravatar.avatar.drive): units, and a synthetic avatar A driven by identity B."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.tiny_subject import train_tiny_avatar
from hravatar.avatar.drive import (
    DEFAULT_EXPRESSION_GAIN,
    EXPRESSION_GAINS,
    AvatarBase,
    calibrate_neutral,
    drive_mediapipe,
    drive_tracked,
    driver_mapping,
    driver_mapping_json,
    fit_lever,
    frontal_frame,
    head_motion,
    map_scores,
    matrix_to_rotvec,
    mediapipe_head,
    pivot_translation,
    rotvec_to_matrix,
    scale_rotation,
)
from hravatar.head.arkit import ARKIT_NAMES

COL = {n: i for i, n in enumerate(ARKIT_NAMES)}
NAMES = list(ARKIT_NAMES)


def _scores(T: int, **tracks: np.ndarray) -> np.ndarray:
    s = np.zeros((T, len(ARKIT_NAMES)))
    for n, v in tracks.items():
        s[:, COL[n]] = v
    return s


def _rot(axis: int, a: float) -> np.ndarray:
    r = np.zeros(3)
    r[axis] = a
    return rotvec_to_matrix(r)


def test_mapping_is_json_and_routes_jaw_and_gaze_to_joints():
    m = json.loads(driver_mapping_json(jaw_rad_per_unit=0.4, correspondence="names", expression_gain="none"))
    assert m == driver_mapping(jaw_rad_per_unit=0.4, correspondence="names", expression_gain="none")
    assert m["jaw"] == {"source": "jawOpen", "rad_per_unit": 0.4, "axis": [1.0, 0.0, 0.0]}
    for n in ("jawOpen", "jawLeft", "eyeLookOutLeft", "eyeLookUpRight"):
        assert n in m["zeroed"] and n not in m["expressions"]
    for n in ("eyeBlinkLeft", "mouthSmileRight", "browInnerUp"):
        assert m["expressions"][n] == {"terms": [[n, 1.0]]}


def test_expression_gains_scale_the_jaw_and_can_be_switched_off(monkeypatch):
    """``expression_gain="calibrated"`` multiplies jawOpen's jaw angle (and any calibrated expression) by
    the gains that undo MediaPipe's measured under-reading of the head model (benchmarks/expression_gain.py);
    ``none`` keeps unit gains; the default mapping applies the default's table."""
    g = EXPRESSION_GAINS["calibrated"]
    assert g["jawOpen"] > 1.3  # MediaPipe reads the head model's jaw at about half
    d = driver_mapping(jaw_rad_per_unit=0.33, correspondence="names")
    assert d["expression_gain"] == DEFAULT_EXPRESSION_GAIN
    assert d == driver_mapping(jaw_rad_per_unit=0.33, correspondence="names", expression_gain=DEFAULT_EXPRESSION_GAIN)
    assert d["jaw"]["rad_per_unit"] == pytest.approx(0.33 * EXPRESSION_GAINS[DEFAULT_EXPRESSION_GAIN].get("jawOpen", 1))
    scaled = [n for n in g if n != "jawOpen"]
    T = 4
    tracks = {"jawOpen": np.array([0.1, 0.3, 0.6, 0.1])}
    tracks.update({n: np.array([0.0, 0.1, 0.2, 0.05]) for n in scaled})
    s = _scores(T, **tracks)
    outs = {}
    for name in ("calibrated", "none"):
        m = driver_mapping(jaw_rad_per_unit=0.33, correspondence="names", expression_gain=name)
        assert m["expression_gain"] == name
        outs[name] = map_scores(s, calibrate_neutral(s, m), NAMES, m)
        # the gains are folded into the table the browser reads (web/drive.js needs no rule of its own)
        assert m["jaw"]["rad_per_unit"] == pytest.approx(0.33 * (g["jawOpen"] if name == "calibrated" else 1.0))
    jaw_on, jaw_off = outs["calibrated"][1][:, 0], outs["none"][1][:, 0]
    neutral_jaw = np.percentile(tracks["jawOpen"], 10)
    np.testing.assert_allclose(jaw_off, 0.33 * (tracks["jawOpen"] - neutral_jaw), atol=1e-9)
    np.testing.assert_allclose(jaw_on, 0.33 * g["jawOpen"] * (tracks["jawOpen"] - neutral_jaw), atol=1e-9)
    for n in scaled:
        d = tracks[n] - np.percentile(tracks[n], 10)
        np.testing.assert_allclose(outs["none"][0][:, COL[n]], np.clip(d, 0, 1), atol=1e-9)
        np.testing.assert_allclose(outs["calibrated"][0][:, COL[n]], np.clip(g[n] * d, 0, 1), atol=1e-9)
    # the calibrated correspondence's rows already invert MediaPipe's reading: no gain on top of them;
    # the rows it leaves name to name get the gains (fake rows: the real fit needs MediaPipe, ~1 min)
    import hravatar.assets
    import hravatar.avatar.correspondence as corr

    monkeypatch.setattr(hravatar.assets, "asset_path", lambda *a, **k: "face_landmarker.task")
    monkeypatch.setattr(corr, "calibrated_rows", lambda names: {"rows": {n: [[n, 0.7], ["cheekPuff", 0.1]]
                                                                         for n in names}})
    for name in ("calibrated", "calibrated-all"):
        mc = driver_mapping(correspondence=name, expression_gain="calibrated")
        mn = driver_mapping(correspondence=name, expression_gain="none")
        assert mc["jaw"]["rad_per_unit"] > mn["jaw"]["rad_per_unit"]
        for n in scaled:
            terms = mc["expressions"][n]["terms"]
            if name == "calibrated" and not corr.calibrated_region(n):
                assert len(terms) == 1 and terms[0][0] == n and terms[0][1] == pytest.approx(g[n])
            else:
                assert terms == [[n, 0.7], ["cheekPuff", 0.1]]
    with pytest.raises(ValueError, match="expression gain"):
        driver_mapping(expression_gain="wrong")


def test_bad_expression_gain_is_one_error(tmp_path):
    from hravatar.apps.reenact import ReenactConfig, reenact_cmd
    from hravatar.errors import HRAvatarError

    with pytest.raises(HRAvatarError, match="--expression-gain 'big': use one of default, calibrated, none"):
        reenact_cmd(ReenactConfig(avatar=tmp_path, driver=tmp_path / "x.mp4", expression_gain="big"))


def test_neutral_calibration_relative_transfer():
    m = driver_mapping(jaw_rad_per_unit=0.5, correspondence="names", expression_gain="none")
    T = 50
    blink = np.full(T, 0.2)  # this driver's resting blink score is 0.2
    blink[10:13] = 0.9
    jaw = np.full(T, 0.1)
    jaw[20:30] = 0.6
    s = _scores(T, eyeBlinkLeft=blink, jawOpen=jaw, mouthSmileLeft=np.linspace(0, 0.5, T))
    neutral = calibrate_neutral(s, m)
    assert neutral.scores[COL["eyeBlinkLeft"]] == pytest.approx(0.2)
    base = np.zeros(len(NAMES))
    base[COL["eyeBlinkLeft"]] = 0.05  # the avatar's own neutral
    expr, jaw_aa, eyes = map_scores(s, neutral, NAMES, m, base, avatar_neutral_jaw=0.02)
    assert expr[0, COL["eyeBlinkLeft"]] == pytest.approx(0.05)  # driver neutral -> avatar neutral
    assert expr[11, COL["eyeBlinkLeft"]] == pytest.approx(0.05 + 0.7)  # the change is added
    assert np.all(expr[:, COL["jawOpen"]] == 0)  # the jaw moves through the joint, not the expression
    assert jaw_aa[25, 0] == pytest.approx(0.02 + 0.5 * 0.5, abs=1e-6) and jaw_aa[0, 0] == pytest.approx(0.02)
    assert np.allclose(jaw_aa[:, 1:], 0) and np.allclose(eyes, 0, atol=1e-6)
    # absolute transfer keeps the driver's resting blink
    expr_abs, _, _ = map_scores(s, neutral, NAMES, m, base, relative=False)
    assert expr_abs[0, COL["eyeBlinkLeft"]] == pytest.approx(0.2)


def test_gaze_turns_the_eye_joints():
    m = driver_mapping(correspondence="names")
    T = 20
    out_l = np.zeros(T)
    out_l[10:] = 0.6  # left eye looks out (to the subject's left), right eye looks in: both turn +yaw
    s = _scores(T, eyeLookOutLeft=out_l, eyeLookInRight=out_l)
    _, _, eyes = map_scores(s, calibrate_neutral(s[:10], m), NAMES, m)
    assert np.allclose(eyes[:10], 0, atol=1e-6)
    for e in range(2):
        assert eyes[15, e, 1] == pytest.approx(0.6 * m["eyes"]["left"]["yaw"][0][1], rel=1e-5)


def test_relative_head_motion_in_the_camera_frame():
    V = np.eye(4)
    V[:3, :3] = np.diag([1.0, -1.0, -1.0])  # a camera in front of the face (the synthetic subject's)
    ref = np.array([0.0, 0.2, 0.0])  # the avatar's reference pose: turned 0.2 rad
    T = 3
    rot = np.stack([_rot(0, 0.1), _rot(1, -0.3) @ _rot(0, 0.1), _rot(0, 0.1)])  # driver: a pose, then a turn
    trans = np.zeros((T, 3))
    trans[2] = [0.01, 0.0, 0.0]
    g, t = head_motion(rot, trans, ref, np.zeros(3), V)
    assert np.allclose(g[0], ref, atol=1e-6)  # first frame -> the avatar's reference pose
    # the driver turned -0.3 about the OpenCV camera's y (down) = +0.3 about the world's up axis
    assert np.allclose(rotvec_to_matrix(g[1]), _rot(1, 0.3) @ rotvec_to_matrix(ref), atol=1e-6)
    assert np.allclose(t[2], [0.01, 0.0, 0.0], atol=1e-9)  # camera x = world x here
    # absolute: the avatar's rotation relative to its camera equals the driver's
    g_abs, _ = head_motion(rot, trans, ref, np.zeros(3), V, absolute=True)
    assert np.allclose(V[:3, :3] @ rotvec_to_matrix(g_abs[1]), rot[1], atol=1e-6)
    # a face point in front of the pivot: it, not the pivot, follows the driver's translation
    off = np.array([0.0, 0.0, 0.09])
    g, t = head_motion(rot, trans, np.zeros(3), np.zeros(3), V, pivot_offset=off)
    face = rotvec_to_matrix(g) @ off + t
    assert np.allclose(face - off, trans @ V[:3, :3], atol=1e-6)


def test_lever_fit_removes_the_turn_induced_translation():
    rng = np.random.default_rng(0)
    c = np.array([0.01, 0.03, -0.1])  # the face point turns about a point 10 cm behind it
    R = rotvec_to_matrix(rng.normal(0, 0.3, (40, 3)))
    shift = np.zeros((40, 3))
    shift[20:] = [0.0, 0.0, 0.02]  # and the head also moves 2 cm
    turn = np.array([0.0, 0.0, 0.5]) + (R @ R[0].T - np.eye(3)) @ c
    assert np.allclose(fit_lever(R, turn, ridge=1e-6), c, atol=1e-4)
    assert np.allclose(fit_lever(R, turn + shift, ridge=1e-6), c, atol=0.02)  # a lean barely biases it
    assert np.allclose(pivot_translation(R, turn + shift, c) - turn[0], shift, atol=1e-9)


def test_frontal_frame_picks_the_head_facing_the_camera():
    pose = np.zeros((3, 5, 3))
    pose[:, 0, 1] = [0.5, 0.05, -0.4]
    V = np.repeat(np.eye(4)[None], 3, 0)
    V[:, :3, :3] = np.diag([1.0, -1.0, -1.0])
    assert frontal_frame(pose, V) == 1


def test_mediapipe_matrix_to_opencv_and_drive():
    M = np.repeat(np.eye(4)[None], 2, 0)
    M[1, :3, :3] = _rot(1, 0.25)  # a turn about MediaPipe's (OpenGL) y = up
    M[1, :3, 3] = [0.0, 1.0, -50.0]  # 1 cm up, 50 cm away
    R, t = mediapipe_head(M * np.array([1.3, 1.3, 1.3, 1.0])[None, None])  # a scaled transform: scale dropped
    assert np.allclose(matrix_to_rotvec(R[1]), [0, -0.25, 0], atol=1e-6)  # OpenCV y points down
    assert np.allclose(t[1], [0.0, -0.01, 0.5])
    V = np.eye(4)
    V[:3, :3] = np.diag([1.0, -1.0, -1.0])
    base = AvatarBase(NAMES, np.zeros((5, 3)), np.zeros(3), V, np.zeros(len(NAMES)), 0.0, 0.33)
    s = _scores(2, jawOpen=np.array([0.0, 0.5]))
    e, p, tr = drive_mediapipe(base, s, M, driver_mapping(head_gain="none", expression_gain="none"))
    assert e.shape == (2, len(NAMES)) and p.shape == (2, 5, 3) and tr.shape == (2, 3)
    assert p[1, 2, 0] == pytest.approx(0.33 * (0.5 - 0.05), rel=1e-5)  # neutral: 10th percentile of (0, 0.5)
    assert np.allclose(p[1, 0], [0, 0.25, 0], atol=1e-6)  # the head turns about the world's up axis
    _, p, _ = drive_mediapipe(base, s, M)  # the default undoes MediaPipe's yaw compression (x1.16)
    assert np.allclose(p[1, 0], [0, 0.25 * driver_mapping()["head"]["gain"][1], 0], atol=1e-6)
    assert driver_mapping()["head"]["gain"][1] > 1.05


def test_head_gain_scales_the_rotation_since_the_first_frame():
    R0 = _rot(1, 0.3) @ _rot(0, -0.1)
    R = np.stack([R0, _rot(0, 0.1) @ R0, _rot(1, -0.2) @ R0, _rot(2, 0.05) @ R0])
    g = [1.37, 1.16, 1.04]
    out = scale_rotation(R, g)
    assert np.allclose(out[0], R0)
    for t, axis, a in ((1, 0, 0.1), (2, 1, -0.2), (3, 2, 0.05)):
        want = np.zeros(3)
        want[axis] = a * g[axis]
        assert np.allclose(matrix_to_rotvec(out[t] @ R0.T), want, atol=1e-9)
    assert np.allclose(scale_rotation(R, [1, 1, 1]), R)
    with pytest.raises(ValueError, match="head gain"):
        driver_mapping(head_gain="wrong")


def test_bad_head_gain_is_one_error(tmp_path):
    from hravatar.apps.reenact import ReenactConfig, reenact_cmd
    from hravatar.errors import HRAvatarError

    with pytest.raises(HRAvatarError, match="--head-gain 'big': use one of default, calibrated, none"):
        reenact_cmd(ReenactConfig(avatar=tmp_path, driver=tmp_path / "x.mp4", head_gain="big"))


def test_drive_tracked_relative_expression_and_pose():
    T, E = 30, 4
    names = ["a", "b", "c", "d"]
    e = np.zeros((T, E))
    e[:, 1] = np.linspace(0, 1, T)
    e[:, 2] = 0.3  # a constant offset of this driver: not transferred
    pose = np.zeros((T, 5, 3))
    pose[:, 2, 0] = np.linspace(0.05, 0.35, T)
    pose[:, 3, 1] = 0.1
    V = np.eye(4)
    base = AvatarBase(names, np.zeros((5, 3)), np.zeros(3), V, np.array([0.0, 0.0, 0.1, 0.0]), 0.01)
    ex, p, _ = drive_tracked(base, e, pose, np.zeros((T, 3)), V)
    assert np.allclose(ex[:, 2], 0.1)
    assert np.corrcoef(ex[:, 1], e[:, 1])[0, 1] > 0.99
    assert np.corrcoef(p[:, 2, 0], pose[:, 2, 0])[0, 1] > 0.99 and p[:, 2, 0].min() == pytest.approx(0.01, abs=0.02)
    assert np.allclose(p[:, 3, 1], 0.1)  # eyes pass through



def test_drive_tracked_head_gain_scales_the_turn():
    V = np.eye(4)
    V[:3, :3] = np.diag([1.0, -1.0, -1.0])
    base = AvatarBase(["a"], np.zeros((5, 3)), np.zeros(3), V, np.zeros(1), 0.0)
    pose = np.zeros((2, 5, 3))
    pose[1, 0] = [0.1, 0.2, 0.0]  # the tracked driver nods and turns (world axes)
    e, t = np.zeros((2, 1)), np.zeros((2, 3))
    _, p, _ = drive_tracked(base, e, pose, t, V)  # unit gains: the driver's turn as it is
    assert np.allclose(rotvec_to_matrix(p[1, 0]), rotvec_to_matrix(pose[1, 0]), atol=1e-6)
    g = driver_mapping()["head"]["gain"]
    _, p, _ = drive_tracked(base, e, pose, t, V, head_gain=g)
    C = V[:3, :3]  # camera-frame change C R C^T, scaled per camera axis, back to the world
    want = matrix_to_rotvec(C.T @ rotvec_to_matrix(matrix_to_rotvec(C @ rotvec_to_matrix(pose[1, 0]) @ C.T)
                                                   * np.asarray(g)) @ C)
    assert np.allclose(p[1, 0], want, atol=1e-5)
    assert abs(p[1, 0, 0]) > 1.2 * 0.1 and abs(p[1, 0, 1]) > 1.1 * 0.2  # pitch x1.37, yaw x1.16
    _, p, _ = drive_tracked(base, e, pose, t, V, head_gain=g, absolute_pose=True)  # absolute: no gain
    assert np.allclose(rotvec_to_matrix(p[1, 0]), rotvec_to_matrix(pose[1, 0]), atol=1e-6)
    # about a face point 8 cm in front of the origin: that point keeps the driver's track
    c = np.array([0.0, 0.04, 0.08])
    _, p0, t0 = drive_tracked(base, e, pose, t, V)
    _, p1, t1 = drive_tracked(base, e, pose, t, V, head_gain=g, face_point=c)
    _, p2, t2 = drive_tracked(base, e, pose, t, V, head_gain=g)
    assert np.allclose(p1[:, 0], p2[:, 0], atol=1e-6)  # the same rotation
    face = [rotvec_to_matrix(pp[1, 0]) @ c + tt[1] for pp, tt in ((p0, t0), (p1, t1), (p2, t2))]
    assert np.allclose(face[1], face[0], atol=1e-6)
    assert np.linalg.norm(face[2] - face[0]) > 2e-3  # turning more about the origin moves the face

# ---- the synthetic case: avatar A (open head model) driven by identity B ---------------------------
@pytest.fixture(scope="module")
def a_and_b(tmp_path_factory):
    from hravatar.synth.subject import SynthConfig, synthesize

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("drive")
    a = synthesize(SynthConfig(out=root / "A", size=48, frames=8, points_per_face=2, env_height=16, seed=0))
    b = synthesize(SynthConfig(out=root / "B", size=48, frames=24, points_per_face=2, env_height=16, seed=1))
    av = root / "avA"
    train_tiny_avatar(a, av, 15, warmup_steps=2)
    return a, b, av, root


@pytest.mark.usefixtures("one_thread")
def test_a_driven_by_b_transfers_jaw_and_expressions(a_and_b):
    from hravatar.apps.reenact import ReenactConfig, load_driver
    from hravatar.avatar import FrameParams, load_avatar
    from hravatar.data import load_subject

    _, b, av, root = a_and_b
    la = load_avatar(av, "cpu")
    d = load_driver(ReenactConfig(avatar=av, driver=b, expressions="tracked"), la, root / "out.mp4")
    gt = load_subject(b, "all")
    jaw_gt = gt.pose[:, 2, 0].numpy()
    assert jaw_gt.std() > 0.02  # B talks
    assert np.corrcoef(d.pose[:, 2, 0], jaw_gt)[0, 1] > 0.95  # the jaw applied to A follows B's
    names = la.expr_names
    moving = [j for j in range(len(names)) if gt.expression[:, j].std() > 0.02]
    assert moving  # B's animation moves some expressions
    for j in moving:
        assert np.corrcoef(d.expression[:, j], gt.expression[:, j].numpy())[0, 1] > 0.95, names[j]
    # the rendered lower face opens with B's jaw; the upper face barely changes
    lo, hi = int(jaw_gt.argmin()), int(jaw_gt.argmax())
    cam, ref = la.camera(), la.reference

    def img(t: int) -> np.ndarray:
        p = torch.as_tensor(d.pose[lo][None]).clone()
        p[0, 2] = torch.as_tensor(d.pose[t, 2])  # the same head pose, only the jaw of frame t
        e, tr = torch.as_tensor(d.expression[lo][None]), torch.as_tensor(d.translation[lo][None])
        fp = FrameParams(ref.shape, e, p, tr)
        with torch.no_grad():
            return la.render(fp, cam).alpha[0, ..., 0].numpy()

    diff = np.abs(img(hi) - img(lo))
    H = diff.shape[0]
    assert diff[H // 2:].sum() > 3 * diff[: H // 3].sum() and diff[H // 2:].sum() > 2.0
    # and through the command: the video decodes with one frame per driver frame
    out = root / "reenact.mp4"
    from hravatar.cli import run

    assert run(["reenact", str(av), "--driver", str(b), "--expressions", "tracked", "--max-frames", "4",
                "--output", str(out)]) == 0
    assert out.is_file()
