"""Driving an avatar with another person: a driver's per-frame signal -> the avatar's expression and pose.

One mapping serves the command line (``hravatar reenact``) and the browser viewer's webcam mode: it is
a plain table (:func:`driver_mapping`, serialised by :func:`driver_mapping_json`) plus the few lines
of arithmetic in :func:`map_scores` and :func:`head_motion`, which the JavaScript side re-implements.

Driver signals
--------------
* ``mediapipe``: MediaPipe face landmarker's 51 ARKit blendshape scores (``[T,52]`` in
  :data:`~hravatar.head.arkit.ARKIT_NAMES` order; ``tongueOut`` is 0) and its facial transformation
  matrix (``[T,4,4]``, canonical face -> OpenGL camera, centimetres). Works for any face.
* ``tracked``: our tracker's parameters of the driver (same ARKit-named head model): expression
  ``[T,E]``, pose ``[T,5,3]`` (global, neck, jaw, eye_l, eye_r), translation ``[T,3]``, viewmat.

Relative transfer (the default)
-------------------------------
Every channel is transferred as the driver's change from its own neutral, added to the avatar's
neutral::

    expression[k] = clamp(avatar_neutral[k] + sum_j M[k,j] * (score[j] - driver_neutral[j]), 0, 1)
    jaw angle     = avatar_neutral_jaw + rad_per_unit * (jawOpen - driver_neutral_jawOpen)
    eye yaw/pitch = rad_per_unit * ((out - in) - neutral, (down - up) - neutral)   (per eye)

``M`` is the correspondence, a sparse matrix stored as rows of ``[score name, gain]`` terms:
``names`` is name to name with unit gains (the tracker's correspondence), ``calibrated-all`` the
inverse of MediaPipe's measured response to the open head model's expressions
(:mod:`hravatar.avatar.correspondence`, fitted once and cached), ``calibrated`` that inverse for
the mouth and name to name elsewhere (:func:`~hravatar.avatar.correspondence.calibrated_region`).
The default, ``names``, measured best once the synthetic avatar's eyes and brows were readable
(README, "Cross-reenactment").

The driver's neutral is the ``q``-th percentile of each score over the calibration frames; gaze uses
the median. Offline (``hravatar reenact``) the calibration frames are the whole clip. Live (the
browser's webcam, :func:`live_neutral` / :func:`drive_live`, mirrored by ``web/drive.js``) they are
the first ``live.calibration_frames`` frames since the start (or since "set neutral"): at frame ``t``
the neutral is the percentile over the calibration frames seen so far, then it stays fixed. The
avatar's neutral is the same percentile of its training subject's tracked expression (zero if unknown).

The jaw ambiguity: the open head model's ``jawOpen``/``jawLeft``/``jawRight``/``jawForward``
displace the jaw like the jaw joint does; tracking freezes them at zero and opens the jaw with the
joint (``jaw_gain_rad`` per unit ``jawOpen``). The mapping does the same: those expressions stay at
the avatar's neutral and ``jawOpen`` drives the joint, so the avatar sees what it was trained on.

Expression gain (:data:`EXPRESSION_GAINS`, ``--expression-gain``): MediaPipe reads the head model's
jaw at about half of the ``jawOpen`` the mapping applies; ``calibrated`` multiplies the jaw's
``rad_per_unit`` (and any name-to-name row with a well-determined reading) by the inverse, in the
table itself, so ``web/drive.js`` applies it unchanged. The default is ``calibrated`` (README).

Head motion: the driver's rotation and translation relative to its first frame, expressed in the
driver's camera frame, are applied around the avatar's reference pose in the avatar's camera frame
(the avatar stays framed by its own camera). The rotation's change is first scaled per axis by the
head gain (:data:`HEAD_GAINS`, :func:`scale_rotation`), which undoes MediaPipe's measured compression
of head turns. Live, the rotation is relative to the calibration's
first frame and the translation is that of the turning point fitted on the frames seen so far
(:func:`live_lever`).
``absolute`` uses the driver's rotation relative to its camera as the avatar's rotation relative to
its camera (translation stays relative).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from hravatar.head.arkit import ARKIT_NAMES

#: MediaPipe / OpenGL camera axes (x right, y up, z backwards) -> OpenCV (x right, y down, z forwards).
GL_TO_CV = np.diag([1.0, -1.0, -1.0])

#: Expressions the open head model drives through the jaw joint (see module docstring).
JAW_EXPRESSIONS = ("jawForward", "jawLeft", "jawOpen", "jawRight")

#: Gaze scores, per eye: driven through the eye joints, not as expressions.
GAZE = {
    "left": {"out": "eyeLookOutLeft", "in": "eyeLookInLeft", "up": "eyeLookUpLeft", "down": "eyeLookDownLeft"},
    "right": {"out": "eyeLookOutRight", "in": "eyeLookInRight", "up": "eyeLookUpRight", "down": "eyeLookDownRight"},
}

#: Default jaw angle (radians about +x, the chin moves down) per unit ``jawOpen`` when the avatar's
#: tracking did not record one (the open model's calibration is about 0.33).
DEFAULT_JAW_RAD = 0.33

#: Eye rotation (radians) per unit gaze score difference (ARKit's full look is roughly 30 degrees).
DEFAULT_GAZE_RAD = 0.5

#: Live neutral: frames from the start (or "set neutral") over which the webcam calibrates (~1 s).
LIVE_CALIBRATION_FRAMES = 30

MAPPING_VERSION = 4

#: MediaPipe's head rotation is compressed: rendering the open head model (readable face, identities
#: seeds 2-4, 453 renders, random expressions and jaw) at known head rotations up to 25 / 35 / 10
#: degrees, MediaPipe's rotation change (OpenCV camera frame) is 0.73 x the true pitch, 0.87 x the yaw
#: and 0.96 x the roll (slopes, ``benchmarks/head_gain.py``). The default head transfer divides by it:
#: the driver's rotation since its first frame, as an axis-angle in its camera frame, is scaled per
#: axis (x pitch, y yaw, z roll) by these gains (:func:`scale_rotation`).
HEAD_GAINS = {"calibrated": (1.37, 1.16, 1.04), "none": (1.0, 1.0, 1.0)}
DEFAULT_HEAD_GAIN = "calibrated"

#: MediaPipe reads the open head model's expressions compressed. Rendering it (readable face, identities
#: seeds 2-4, 1803 renders, one expression at a time, jaw up to 0.6 rad, random head rotations;
#: ``benchmarks/expression_gain.py``), MediaPipe's ``jawOpen`` rises 0.51 per unit ``jawOpen`` applied as the
#: mapping applies it (jaw angle / :data:`DEFAULT_JAW_RAD`; slope through the origin over the renders it
#: reads, up to 1.1 units; per identity 0.43-0.57): the jaw's ``rad_per_unit`` is multiplied by the inverse.
#: No other expression's slope is well determined at a gain of at most 2.5 (most are read at 0-0.3 of
#: their coefficient, largely as other scores: the calibrated correspondence's business), so they keep 1.
#: ``none``: unit gains. Keys: ARKit names (``jawOpen`` scales the jaw joint; others their name-to-name row).
#: The default is ``calibrated``: on the reenactment benchmark it cut the synthetic driver's jaw error
#: (1.95 -> 1.51 degrees, PSNR unchanged) and raised the real clip's jawOpen and head-pitch correlations
#: (avatar A, 1600 iterations: pitch 0.86 -> 0.92; 800 iterations: 0.90 -> 0.88; README, "Expression gain").
EXPRESSION_GAINS: dict[str, dict[str, float]] = {"calibrated": {"jawOpen": 1.97}, "none": {}}
DEFAULT_EXPRESSION_GAIN = "calibrated"

#: Score -> expression correspondences (see the module docstring); the default is what measured best.
CORRESPONDENCES = ("names", "calibrated", "calibrated-all")
DEFAULT_CORRESPONDENCE = "names"


def mapped_expressions() -> list[str]:
    """ARKit names transferred as expressions (not the jaw expressions or gaze)."""
    gaze_names = {n for eye in GAZE.values() for n in eye.values()}
    return [n for n in ARKIT_NAMES if n not in JAW_EXPRESSIONS and n not in gaze_names]


def driver_mapping(
    jaw_rad_per_unit: float = DEFAULT_JAW_RAD,
    gaze_rad_per_unit: float = DEFAULT_GAZE_RAD,
    neutral_percentile: float = 10.0,
    gains: dict[str, float] | None = None,
    calibration_frames: int = LIVE_CALIBRATION_FRAMES,
    correspondence: str = DEFAULT_CORRESPONDENCE,
    head_gain: str = DEFAULT_HEAD_GAIN,
    expression_gain: str = DEFAULT_EXPRESSION_GAIN,
) -> dict:
    """The driver -> avatar mapping as a JSON-serialisable table.

    ``expression_gain`` (a key of :data:`EXPRESSION_GAINS`) multiplies the name-to-name rows (every
    row of ``names``; the rows ``calibrated`` leaves name to name) and the jaw's ``rad_per_unit``
    (``jawOpen``'s gain): the gains are folded into the table, so ``web/drive.js`` applies them too.

    Keys: ``version``; ``names`` (the 52 ARKit names, the order of score vectors); ``correspondence``
    (``names``, ``calibrated`` or ``calibrated-all``); ``expressions`` (ARKit name -> ``{"terms": [[score name, gain],
    ...]}``, the rows of the sparse matrix ``M``: name to name with unit gains (times ``gains``), or
    the calibrated rows of :func:`hravatar.avatar.correspondence.calibrated_rows`, for the mouth only
    or for every expression); ``zeroed`` (names
    held at the avatar's neutral: jaw expressions and gaze); ``jaw``
    (``{"source": "jawOpen", "rad_per_unit", "axis": [1,0,0]}``, the jaw joint's rotation);
    ``eyes`` (per eye, yaw = ``rad_per_unit * (out - in)`` about +y, pitch = ``rad_per_unit *
    (down - up)`` about +x, both minus their neutral); ``neutral`` (``{"percentile", "gaze": "median"}``);
    ``head`` (``gl_to_cv``: the axis flip from MediaPipe's camera to OpenCV's; ``translation_scale_m``:
    its translation's unit, 0.01 m; ``lever``: the turning point is fitted per driver by
    :func:`fit_lever` with ``lever_ridge``, and the translation applied is that point's; ``gain``
    ``[3]``: the per-axis scale of the driver's rotation since its first frame, :data:`HEAD_GAINS`
    [``head_gain``], see :func:`scale_rotation`; ``gain_name``);
    ``live`` (``{"calibration_frames"}``, see :func:`live_neutral`).
    """
    gains = gains or {}
    if head_gain not in HEAD_GAINS:
        raise ValueError(f"unknown head gain {head_gain!r}; choose one of {', '.join(HEAD_GAINS)}")
    if expression_gain not in EXPRESSION_GAINS:
        raise ValueError(f"unknown expression gain {expression_gain!r}; choose one of {', '.join(EXPRESSION_GAINS)}")
    eg = EXPRESSION_GAINS[expression_gain]
    mapped = mapped_expressions()
    zeroed = [n for n in ARKIT_NAMES if n not in mapped]
    if correspondence == "names":
        expressions = {n: {"terms": [[n, float(gains.get(n, 1.0)) * eg.get(n, 1.0)]]} for n in mapped}
    elif correspondence in ("calibrated", "calibrated-all"):
        from hravatar.assets import asset_path
        from hravatar.avatar.correspondence import calibrated_region, calibrated_rows

        if asset_path("face_landmarker.task", required=False) is None:  # the fit needs MediaPipe's model
            from hravatar.progress import log

            log.warning("the calibrated correspondence needs face_landmarker.task (scripts/fetch_assets.py); "
                        "using name to name")
            return driver_mapping(jaw_rad_per_unit, gaze_rad_per_unit, neutral_percentile, gains,
                                  calibration_frames, "names", head_gain, expression_gain)
        rows = calibrated_rows(mapped)["rows"]
        use = {n: correspondence == "calibrated-all" or calibrated_region(n) for n in mapped}
        expressions = {n: {"terms": [[src, float(g) * float(gains.get(n, 1.0))]
                                     for src, g in (rows[n] if use[n] else [[n, eg.get(n, 1.0)]])]} for n in mapped}
    else:
        raise ValueError(f"unknown correspondence {correspondence!r}; choose one of {', '.join(CORRESPONDENCES)}")
    eyes = {
        side: {
            "yaw": [[g["out"] if side == "left" else g["in"], gaze_rad_per_unit],
                    [g["in"] if side == "left" else g["out"], -gaze_rad_per_unit]],
            "pitch": [[g["down"], gaze_rad_per_unit], [g["up"], -gaze_rad_per_unit]],
        }
        for side, g in GAZE.items()
    }
    return {
        "version": MAPPING_VERSION,
        "names": list(ARKIT_NAMES),
        "correspondence": correspondence,
        "expressions": expressions,
        "zeroed": zeroed,
        "jaw": {"source": "jawOpen", "rad_per_unit": float(jaw_rad_per_unit) * eg.get("jawOpen", 1.0),
                "axis": [1.0, 0.0, 0.0]},
        "expression_gain": expression_gain,
        "eyes": eyes,
        "neutral": {"percentile": float(neutral_percentile), "gaze": "median"},
        "head": {"gl_to_cv": GL_TO_CV.tolist(), "translation_scale_m": 0.01, "lever": "fit_lever",
                 "lever_ridge": 0.1, "gain": [float(g) for g in HEAD_GAINS[head_gain]], "gain_name": head_gain},
        "live": {"calibration_frames": int(calibration_frames)},
    }


def driver_mapping_json(**kw: object) -> str:
    """:func:`driver_mapping` as a JSON string (what the browser viewer loads)."""
    return json.dumps(driver_mapping(**kw), indent=1)  # type: ignore[arg-type]


# ---- neutral calibration and expressions ---------------------------------------------------------
def _col(names: list[str] | tuple[str, ...]) -> dict[str, int]:
    return {n: i for i, n in enumerate(names)}


def gaze_angles(scores: np.ndarray, mapping: dict) -> np.ndarray:
    """``[T,2,2]`` raw eye (yaw, pitch) in radians for the left and right eye from ``scores [T,52]``."""
    c = _col(mapping["names"])
    out = np.zeros((scores.shape[0], 2, 2))
    for e, side in enumerate(("left", "right")):
        for a, axis in enumerate(("yaw", "pitch")):
            for name, k in mapping["eyes"][side][axis]:
                out[:, e, a] += k * scores[:, c[name]]
    return out


@dataclass
class Neutral:
    """A driver's neutral: ``scores [52]`` (percentile per score) and ``gaze [2,2]`` (median, radians)."""

    scores: np.ndarray
    gaze: np.ndarray


def calibrate_neutral(scores: np.ndarray, mapping: dict, frames: slice | None = None) -> Neutral:
    """Neutral of a driver from its scores ``[T,52]`` over ``frames`` (default: all)."""
    s = np.asarray(scores, np.float64)[frames or slice(None)]
    return Neutral(np.percentile(s, mapping["neutral"]["percentile"], axis=0), np.median(gaze_angles(s, mapping), 0))


def live_neutral(scores: np.ndarray, mapping: dict, t: int, start: int = 0) -> Neutral:
    """The live (webcam) neutral at frame ``t`` of ``scores [T,52]``: :func:`calibrate_neutral` over the
    calibration frames seen so far, ``start .. min(t, start + calibration_frames - 1)``, where ``start``
    is the first frame (or the last "set neutral"). ``web/drive.js`` computes the same per frame."""
    n = int(mapping["live"]["calibration_frames"])
    return calibrate_neutral(scores, mapping, slice(start, min(t, start + n - 1) + 1))


def map_scores(
    scores: np.ndarray,
    neutral: Neutral,
    expr_names: list[str] | tuple[str, ...],
    mapping: dict,
    avatar_neutral: np.ndarray | None = None,
    avatar_neutral_jaw: float = 0.0,
    relative: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ARKit scores -> the avatar's expression, jaw and eye rotations.

    Args:
        scores: ``[T,52]`` driver scores in ``mapping["names"]`` order.
        neutral: the driver's :class:`Neutral` (ignored with ``relative=False``).
        expr_names: the avatar's expression names ``[E]`` (ARKit names; others stay at neutral).
        avatar_neutral: ``[E]`` the avatar's neutral expression (default zeros).
        avatar_neutral_jaw: the avatar's neutral jaw angle (radians).
        relative: transfer changes from the neutrals (else the scores themselves).
    Returns:
        ``(expression [T,E], jaw [T,3] axis-angle, eyes [T,2,3] axis-angle (left, right))``.
    """
    s = np.asarray(scores, np.float64)
    T, E = s.shape[0], len(expr_names)
    c = _col(mapping["names"])
    base = np.zeros(E) if avatar_neutral is None else np.asarray(avatar_neutral, np.float64)
    expr = np.repeat(base[None], T, 0)
    for j, n in enumerate(expr_names):
        m = mapping["expressions"].get(n)
        if m is None:
            continue
        v = np.zeros(T)
        for src, g in m["terms"]:
            v += g * (s[:, c[src]] - (neutral.scores[c[src]] if relative else 0.0))
        expr[:, j] = (base[j] if relative else 0.0) + v
    expr = np.clip(expr, 0.0, 1.0)
    jm = mapping["jaw"]
    jo = s[:, c[jm["source"]]] - (neutral.scores[c[jm["source"]]] if relative else 0.0)
    angle = (avatar_neutral_jaw if relative else 0.0) + jm["rad_per_unit"] * jo
    jaw = np.asarray(jm["axis"])[None] * np.clip(angle, 0.0, None)[:, None]
    g = gaze_angles(s, mapping) - (neutral.gaze[None] if relative else 0.0)
    eyes = np.stack([euler_yx(g[:, e, 0], g[:, e, 1]) for e in range(2)], 1)
    return expr.astype(np.float32), jaw.astype(np.float32), eyes.astype(np.float32)


def map_tracked(
    expression: np.ndarray,
    jaw: np.ndarray,
    expr_names: list[str] | tuple[str, ...],
    avatar_neutral: np.ndarray | None = None,
    avatar_neutral_jaw: float = 0.0,
    percentile: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Relative transfer of a tracked driver (same head model): ``expression [T,E]``, ``jaw [T,3]``.

    Each expression and the jaw angle about +x move by the driver's change from its ``percentile``
    neutral, added to the avatar's neutral; the jaw's other axes are passed through. Returns
    ``(expression [T,E] in [0,1], jaw [T,3])``.
    """
    e = np.asarray(expression, np.float64)
    base = np.zeros(len(expr_names)) if avatar_neutral is None else np.asarray(avatar_neutral, np.float64)
    out = np.clip(base[None] + e - np.percentile(e, percentile, axis=0)[None], 0.0, 1.0)
    j = np.array(jaw, np.float64)
    j[:, 0] = np.clip(avatar_neutral_jaw + j[:, 0] - np.percentile(j[:, 0], percentile), 0.0, None)
    return out.astype(np.float32), j.astype(np.float32)


# ---- rotations and head motion ---------------------------------------------------------------------
def rotvec_to_matrix(r: np.ndarray) -> np.ndarray:
    """Axis-angle ``[...,3]`` -> rotation matrices ``[...,3,3]`` (Rodrigues)."""
    r = np.asarray(r, np.float64)
    th = np.linalg.norm(r, axis=-1, keepdims=True)
    k = r / np.maximum(th, 1e-12)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    z = np.zeros_like(kx)
    Kx = np.stack([np.stack([z, -kz, ky], -1), np.stack([kz, z, -kx], -1), np.stack([-ky, kx, z], -1)], -2)
    s, c = np.sin(th)[..., None], np.cos(th)[..., None]
    return np.eye(3) + s * Kx + (1 - c) * (Kx @ Kx)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[...,3,3]`` -> axis-angle ``[...,3]``."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, np.float64)
    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec().reshape(R.shape[:-2] + (3,))


def euler_yx(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Axis-angle ``[T,3]`` of ``Ry(yaw) @ Rx(pitch)`` (radians; the synthetic subject's eye convention)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    z, o = np.zeros_like(yaw), np.ones_like(yaw)
    Ry = np.stack([np.stack([cy, z, sy], -1), np.stack([z, o, z], -1), np.stack([-sy, z, cy], -1)], -2)
    Rx = np.stack([np.stack([o, z, z], -1), np.stack([z, cp, -sp], -1), np.stack([z, sp, cp], -1)], -2)
    return matrix_to_rotvec(Ry @ Rx)


def nearest_rotation(M: np.ndarray, iterations: int = 30) -> np.ndarray:
    """The orthogonal polar factor of ``M [...,3,3]`` (the nearest rotation: ``U V^T`` of its SVD, any
    scale dropped) by Newton's iteration ``X <- (X + X^-T) / 2``, which ``web/drive.js`` repeats."""
    X = np.array(M, np.float64)
    for _ in range(iterations):
        Y = 0.5 * (X + np.swapaxes(np.linalg.inv(X), -1, -2))
        done = np.abs(Y - X).max() < 1e-15
        X = Y
        if done:
            break
    return X


def mediapipe_head(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe facial transformation matrices ``[T,4,4]`` (cm, OpenGL camera) -> head rotation
    ``[T,3,3]`` and translation ``[T,3]`` (metres) in the OpenCV camera frame."""
    M = np.asarray(matrices, np.float64)
    R = nearest_rotation(M[:, :3, :3])  # drops any scale of the transform
    return GL_TO_CV @ R @ GL_TO_CV, (M[:, :3, 3] @ GL_TO_CV.T) * 0.01


def fit_lever(rot_cam: np.ndarray, trans_cam: np.ndarray, first: int = 0, ridge: float = 0.1) -> np.ndarray:
    """The point ``c [3]`` (camera frame, metres, relative to the tracked face point at frame
    ``first``) about which the driver's head turns: least squares of ``t_i - t_first ~ (R_i R_first^T -
    I) c`` over the frames, with a small ridge. MediaPipe's face origin sits in front of the neck, so
    a turn of the head also moves it; ``t_i - t_first - (R_i R_first^T - I) c`` is the translation
    left once the turn is accounted for."""
    Rr = np.asarray(rot_cam, np.float64) @ np.asarray(rot_cam, np.float64)[first].T
    dt = np.asarray(trans_cam, np.float64) - np.asarray(trans_cam, np.float64)[first]
    A = np.concatenate([(Rr - np.eye(3)).reshape(-1, 3), ridge * np.eye(3)])
    b = np.concatenate([dt.reshape(-1), np.zeros(3)])
    return np.linalg.lstsq(A, b, rcond=None)[0]


def scale_rotation(rot_cam: np.ndarray, gain: np.ndarray | list[float], first: int = 0) -> np.ndarray:
    """``[T,3,3]`` the driver's rotations with their change since frame ``first`` scaled per axis:
    ``R'_t = exp(gain * log(R_t R_first^T)) R_first`` (axis-angle components x, y, z of the camera
    frame times ``gain [3]``). Unit gains return ``rot_cam`` unchanged. ``web/drive.js`` does the same
    to ``Rc Rc0^T``."""
    R = np.asarray(rot_cam, np.float64)
    g = np.asarray(gain, np.float64)
    if np.all(g == 1.0):
        return R
    rel = matrix_to_rotvec(R @ R[first].T) * g
    return rotvec_to_matrix(rel) @ R[first]


def pivot_translation(rot_cam: np.ndarray, trans_cam: np.ndarray, lever: np.ndarray, first: int = 0) -> np.ndarray:
    """``[T,3]`` the turning point's track in the camera frame: ``t_i - (R_i R_first^T - I) lever``
    (see :func:`fit_lever`)."""
    Rr = np.asarray(rot_cam, np.float64) @ np.asarray(rot_cam, np.float64)[first].T
    return np.asarray(trans_cam, np.float64) - (Rr - np.eye(3)) @ np.asarray(lever, np.float64)


def live_lever(rot_cam: np.ndarray, trans_cam: np.ndarray, ridge: float = 0.1) -> np.ndarray:
    """``[T,3]`` the live (causal) turning point: at frame ``t``, :func:`fit_lever` over frames ``0 .. t``
    (relative to frame 0), so no later frame is used. ``web/drive.js`` solves the same least squares
    from running sums (``sum (Rr-I)^T (Rr-I) + ridge^2 I``, ``sum (Rr-I)^T dt``)."""
    return np.stack([fit_lever(rot_cam[: t + 1], trans_cam[: t + 1], 0, ridge) for t in range(len(rot_cam))])


def head_motion(
    rot_cam: np.ndarray,
    trans_cam: np.ndarray,
    ref_global: np.ndarray,
    ref_translation: np.ndarray,
    viewmat: np.ndarray,
    pivot_offset: np.ndarray | None = None,
    absolute: bool = False,
    first: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The avatar's global rotation and translation that follow a driver's head.

    Args:
        rot_cam: ``[T,3,3]`` the driver head's rotation in its (OpenCV) camera frame; only changes
            matter (any fixed head-frame offset cancels in ``R_t R_first^T``).
        trans_cam: ``[T,3]`` a point of the driver's face in its camera frame (metres).
        ref_global: ``[3]`` the avatar's reference global rotation (axis-angle, world).
        ref_translation: ``[3]`` the avatar's reference translation (metres, world).
        viewmat: ``[4,4]`` the avatar's world-to-camera matrix.
        pivot_offset: ``[3]`` the avatar's face point minus its global pivot at the reference pose
            (world metres): the face point, not the pivot, follows ``trans_cam`` (default: zero).
        absolute: use ``V^T rot_cam`` as the avatar's rotation (its rotation relative to the camera),
            instead of the change since frame ``first`` applied to the reference.
        first: the driver's neutral frame for relative motion.
    Returns:
        ``(global [T,3] axis-angle, translation [T,3])``.
    """
    V = np.asarray(viewmat, np.float64)[:3, :3]
    Rc = np.asarray(rot_cam, np.float64)
    R_ref = rotvec_to_matrix(np.asarray(ref_global, np.float64))
    if absolute:
        R = V.T @ Rc
    else:
        R = V.T @ (Rc @ Rc[first].T) @ V @ R_ref
    off = np.zeros(3) if pivot_offset is None else np.asarray(pivot_offset, np.float64)
    o = R_ref.T @ off  # the face point in the avatar's unrotated frame, relative to the pivot
    dt = (np.asarray(trans_cam, np.float64) - np.asarray(trans_cam, np.float64)[first]) @ V  # V^T d, per row
    t = np.asarray(ref_translation, np.float64)[None] + dt - (R @ o - R_ref @ o)
    return matrix_to_rotvec(R).astype(np.float32), t.astype(np.float32)


def tracked_head(pose: np.ndarray, translation: np.ndarray, viewmat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tracked driver's global rotation ``[T,3,3]`` and translation ``[T,3]`` in its camera frame
    (``pose [T,5,3]``, ``translation [T,3]``, ``viewmat [4,4]`` or ``[T,4,4]``)."""
    V = np.asarray(viewmat, np.float64)
    V = np.broadcast_to(V, (len(pose), 4, 4)) if V.ndim == 2 else V
    R = V[:, :3, :3] @ rotvec_to_matrix(np.asarray(pose, np.float64)[:, 0])
    t = np.einsum("tij,tj->ti", V[:, :3, :3], np.asarray(translation, np.float64)) + V[:, :3, 3]
    return R, t


# ---- the avatar side -------------------------------------------------------------------------------
@dataclass
class AvatarBase:
    """What driving needs to know about an avatar.

    Attributes:
        expr_names: ``[E]`` its expression names.
        pose: ``[5,3]`` reference pose (global, neck, jaw, eye_l, eye_r; axis-angle, radians).
        translation: ``[3]`` reference translation (metres).
        viewmat: ``[4,4]`` its reference camera (OpenCV world-to-camera).
        neutral: ``[E]`` its neutral expression (percentile of its subject's tracked expression).
        neutral_jaw: its neutral jaw angle (radians about +x).
        jaw_rad_per_unit: jaw angle per unit ``jawOpen`` used when its subject was tracked.
    """

    expr_names: list[str]
    pose: np.ndarray
    translation: np.ndarray
    viewmat: np.ndarray
    neutral: np.ndarray
    neutral_jaw: float = 0.0
    jaw_rad_per_unit: float = DEFAULT_JAW_RAD


def frontal_frame(pose: np.ndarray, viewmats: np.ndarray) -> int:
    """Index of the frame whose head faces its camera most directly (``pose [N,5,3]``, ``viewmats
    [N,4,4]``): the head's forward axis (+z of the head model, after global and neck) closest to the
    camera's -z."""
    p = np.asarray(pose, np.float64)
    R = np.asarray(viewmats, np.float64)[:, :3, :3] @ rotvec_to_matrix(p[:, 0]) @ rotvec_to_matrix(p[:, 1])
    return int(np.argmin(R[:, 2, 2]))


def avatar_base(la: object, percentile: float = 10.0, frontal: bool = True) -> AvatarBase:
    """:class:`AvatarBase` of a loaded avatar (:class:`hravatar.apps.common.LoadedAvatar`).

    Camera: the avatar's reference camera. Head pose: with ``frontal`` (and the training subject at
    hand), the global and neck rotation and translation of its most frontal training frame
    (:func:`frontal_frame`; the subject's camera is assumed fixed, as tracking and ``hravatar synth``
    write it), else the reference frame's. Neutral: the ``percentile`` of its subject's tracked
    expression and jaw (zeros when the subject folder is gone). Jaw gain: what its tracking recorded
    (manifest ``tracking.jaw_gain_rad``), else :data:`DEFAULT_JAW_RAD`.
    """
    ref = la.reference  # type: ignore[attr-defined]
    names = list(la.expr_names)  # type: ignore[attr-defined]
    E = len(names)
    p = ref.params
    pose = p.pose[0].detach().cpu().numpy().astype(np.float64)
    trans = p.translation[0].detach().cpu().numpy().astype(np.float64)
    neutral, njaw, gain = np.zeros(E), 0.0, DEFAULT_JAW_RAD
    if la.has_subject():  # type: ignore[attr-defined]
        ds = la.subject("all")  # type: ignore[attr-defined]
        e = ds.expression.numpy()
        neutral[: min(E, e.shape[1])] = np.percentile(e, percentile, axis=0)[:E]
        njaw = float(np.percentile(ds.pose[:, 2, 0].numpy(), percentile))
        man = ds.meta.get("manifest", {}) if isinstance(ds.meta, dict) else {}
        gain = float((man.get("tracking") or {}).get("jaw_gain_rad") or DEFAULT_JAW_RAD)
        if frontal:
            i = frontal_frame(ds.pose.numpy(), ds.viewmats.numpy())
            pose[:2] = ds.pose[i, :2].numpy()
            trans = ds.translation[i].numpy().astype(np.float64)
    return AvatarBase(names, pose, trans, ref.camera.viewmat.detach().cpu().numpy().astype(np.float64),
                      neutral, njaw, gain)


def drive_mediapipe(
    base: AvatarBase,
    scores: np.ndarray,
    matrices: np.ndarray,
    mapping: dict | None = None,
    relative: bool = True,
    head: bool = True,
    absolute_pose: bool = False,
    neutral: Neutral | None = None,
    lever: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Avatar parameters from MediaPipe scores ``[T,52]`` and matrices ``[T,4,4]``.

    ``neutral`` defaults to :func:`calibrate_neutral` over all frames, ``lever`` (the driver's
    turning point, see :func:`fit_lever`) to the fit over all frames: the translation applied is
    that of the turning point, so the avatar turns about its own pivot. With ``head=False`` the
    avatar keeps its reference head pose. Returns ``(expression [T,E], pose [T,5,3], translation [T,3])``.
    """
    mapping = mapping or driver_mapping(base.jaw_rad_per_unit)
    neutral = neutral or calibrate_neutral(scores, mapping)
    expr, jaw, eyes = map_scores(scores, neutral, base.expr_names, mapping, base.neutral, base.neutral_jaw, relative)
    T = len(scores)
    pose = np.repeat(base.pose[None], T, 0)
    pose[:, 2], pose[:, 3:] = jaw, eyes
    trans = np.repeat(base.translation[None], T, 0)
    if head:
        R, t = mediapipe_head(matrices)
        t = pivot_translation(R, t, fit_lever(R, t) if lever is None else lever)
        if not absolute_pose:
            R = scale_rotation(R, mapping["head"].get("gain", (1.0, 1.0, 1.0)))
        pose[:, 0], trans = head_motion(R, t, base.pose[0], base.translation, base.viewmat, None, absolute_pose)
    return expr, pose.astype(np.float32), trans.astype(np.float32)


def live_mapping(base: AvatarBase, mapping: dict | None = None) -> dict:
    """The browser viewer's driver table: :func:`driver_mapping` (with the avatar's jaw gain) plus
    ``avatar``, the :class:`AvatarBase` values the page needs (``expr_names``, ``neutral``,
    ``neutral_jaw``, ``pose [5,3]``, ``translation [3]``, ``viewmat [4,4]``). ``web/drive.js`` applies
    it frame by frame exactly as :func:`drive_live` does."""
    m = dict(mapping or driver_mapping(base.jaw_rad_per_unit))
    m["avatar"] = {"expr_names": list(base.expr_names), "neutral": np.asarray(base.neutral, np.float64).tolist(),
                   "neutral_jaw": float(base.neutral_jaw), "pose": np.asarray(base.pose, np.float64).tolist(),
                   "translation": np.asarray(base.translation, np.float64).tolist(),
                   "viewmat": np.asarray(base.viewmat, np.float64).tolist()}
    return m


def drive_live(
    base: AvatarBase,
    scores: np.ndarray,
    matrices: np.ndarray | None,
    mapping: dict | None = None,
    start: int = 0,
    follow_translation: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the webcam mode applies at each frame ``t >= start`` of a stream (``web/drive.js``).

    Expressions, jaw and eyes: :func:`map_scores` with the live neutral (:func:`live_neutral`, which
    uses no later frame); head (``matrices`` ``[T,4,4]`` or ``None``: the reference head): the rotation
    and the translation relative to frame ``start`` (:func:`head_motion`); the translation is that of
    the driver's turning point (:func:`pivot_translation`) with the causal lever of :func:`live_lever`
    (fitted on frames ``start .. t``; ``follow_translation=False`` holds it at the avatar's).
    Returns ``(expression [T',E], pose [T',5,3], translation [T',3])`` for frames ``start ..``.
    """
    mapping = mapping or driver_mapping(base.jaw_rad_per_unit)
    s = np.asarray(scores, np.float64)
    rows = [map_scores(s[t:t + 1], live_neutral(s, mapping, t, start), base.expr_names, mapping, base.neutral,
                       base.neutral_jaw) for t in range(start, len(s))]
    expr = np.concatenate([r[0] for r in rows])
    T = len(expr)
    pose = np.repeat(base.pose[None], T, 0)
    pose[:, 2] = np.concatenate([r[1] for r in rows])
    pose[:, 3:] = np.concatenate([r[2] for r in rows])
    trans = np.repeat(base.translation[None], T, 0)
    if matrices is not None:
        R, t = mediapipe_head(np.asarray(matrices, np.float64)[start:])
        if follow_translation:
            lever = live_lever(R, t, float(mapping["head"].get("lever_ridge", 0.1)))
            t = t - np.einsum("tij,tj->ti", R @ R[0].T - np.eye(3), lever)  # pivot_translation, per-frame lever
        else:
            t = np.zeros((T, 3))
        R = scale_rotation(R, mapping["head"].get("gain", (1.0, 1.0, 1.0)))
        pose[:, 0], trans = head_motion(R, t, base.pose[0], base.translation, base.viewmat)
    return expr, pose.astype(np.float32), trans.astype(np.float32)


def drive_tracked(
    base: AvatarBase,
    expression: np.ndarray,
    pose: np.ndarray,
    translation: np.ndarray,
    viewmat: np.ndarray,
    relative: bool = True,
    head: bool = True,
    absolute_pose: bool = False,
    percentile: float = 10.0,
    head_gain: tuple[float, float, float] | list[float] = (1.0, 1.0, 1.0),
    face_point: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Avatar parameters from a tracked driver (same ARKit head model): ``expression [T,E]``,
    ``pose [T,5,3]``, ``translation [T,3]``, its ``viewmat [4,4]`` (or ``[T,4,4]``).

    Expression and jaw: relative transfer (:func:`map_tracked`) or the driver's own values; eyes:
    the driver's; head: global rotation and translation by :func:`head_motion` (pivot = the model
    origin, which tracking translates), neck as its change since the first frame. ``head_gain``
    ``[3]`` scales the global rotation's change since the first frame per camera axis (x pitch, y
    yaw, z roll; :func:`scale_rotation`, relative transfer only): our tracker fits MediaPipe's
    landmarks and shares their compression (``hravatar reenact`` passes :data:`HEAD_GAINS`). The
    scaled turn is about ``face_point [3]`` (the driver's head-model coordinates, metres; default the
    model origin): that point keeps the track the tracker fitted (the tracker's translation makes up
    for the compressed turn, so turning more about the neck would move the face off it).
    Returns ``(expression [T,E], pose [T,5,3], translation [T,3])``.
    """
    e = np.asarray(expression, np.float64)
    p = np.asarray(pose, np.float64)
    if e.shape[1] != len(base.expr_names):
        raise ValueError(f"driver has {e.shape[1]} expression components, the avatar {len(base.expr_names)}")
    T = len(e)
    if relative:
        expr, jaw = map_tracked(e, p[:, 2], base.expr_names, base.neutral, base.neutral_jaw, percentile)
    else:
        expr, jaw = e.astype(np.float32), p[:, 2]
    out = np.repeat(base.pose[None], T, 0)
    out[:, 2], out[:, 3:] = jaw, p[:, 3:]
    trans = np.repeat(base.translation[None], T, 0)
    if head:
        R, t = tracked_head(p, translation, viewmat)
        if not absolute_pose:
            c = np.zeros(3) if face_point is None else np.asarray(face_point, np.float64)
            face = t + R @ c  # the face point's track in the camera frame
            R = scale_rotation(R, head_gain)
            t = face - R @ c
        out[:, 0], trans = head_motion(R, t, base.pose[0], base.translation, base.viewmat, None, absolute_pose)
        if absolute_pose:
            out[:, 1] = p[:, 1]
        else:
            Rn = rotvec_to_matrix(p[:, 1])
            out[:, 1] = matrix_to_rotvec(Rn @ Rn[0].T @ rotvec_to_matrix(base.pose[1]))
    return expr, out.astype(np.float32), trans.astype(np.float32)


# ---- the driver side -------------------------------------------------------------------------------
def mediapipe_signal(frames: object, total: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run MediaPipe's face landmarker (Tasks model, with blendshapes) on RGB uint8 frames ``[H,W,3]``.

    Returns ``(scores [T,52] in ARKIT_NAMES order, matrices [T,4,4], found [T] bool)``; frames without
    a face take their neighbours' values (raises ``ValueError`` when no frame has one).
    """
    from hravatar.preprocess.mediapipe_models import FaceLandmarker
    from hravatar.progress import progress

    lmk = FaceLandmarker(require_task=True)
    scores, mats, found = [], [], []
    try:
        for img in progress(frames, total=total, desc="driver: face landmarks"):
            r = lmk.detect(np.ascontiguousarray(img[..., :3]))
            ok = r is not None and r.blendshapes is not None and r.matrix is not None
            s = np.zeros(len(ARKIT_NAMES), np.float32)
            if ok:
                s[: len(r.blendshapes)] = r.blendshapes  # type: ignore[union-attr]
            scores.append(s)
            mats.append(r.matrix if ok else np.eye(4, dtype=np.float32))  # type: ignore[union-attr]
            found.append(ok)
    finally:
        lmk.close()
    S, M, F = np.stack(scores), np.stack(mats).astype(np.float64), np.array(found)
    if not F.any():
        raise ValueError("no face found in any driver frame")
    if not F.all():
        idx = np.arange(len(F))
        near = np.array([idx[F][np.abs(idx[F] - i).argmin()] for i in idx])
        S, M = S[near], M[near]
    return S, M, F
