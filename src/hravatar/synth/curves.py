"""Animation curves of the synthetic subject: ARKit-style expression tracks and head motion.

A clip is a sequence of speech segments (syllables at about 4 Hz: ``jawOpen`` bumps with
visemes: funnel / pucker for rounded vowels, stretch for spread vowels, lip closure for
bilabials), blinks every 2-5 s, smile episodes, brow raises on emphasis, eyes that keep looking
at the camera while the head turns, and smooth random head motion that spans the requested
yaw / pitch ranges (by default +-30 and +-15 degrees). Everything is a deterministic function
of ``(num_frames, fps, seed)``.

Angles: the global rotation is ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` in the head-model frame
(+x subject's left, +y up, +z out of the face), stored as axis-angle ``pose[:, 0]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from hravatar.head.arkit import ARKIT_NAMES  # noqa: E402  (re-exported)


@dataclass
class Animation:
    """A synthetic performance of ``T`` frames.

    Attributes:
        arkit: ARKit name -> ``[T]`` float32 coefficient in [0, 1] (names not listed are 0).
        pose: ``[T,5,3]`` axis-angle (radians) for global, neck, jaw, eye_l, eye_r.
        translation: ``[T,3]`` metres (head-model frame), small drift.
        fps: frames per second.
        yaw_pitch_roll: ``[T,3]`` the global rotation's Euler angles in degrees (for plots / checks).
    """

    arkit: dict[str, Tensor]
    pose: Tensor
    translation: Tensor
    fps: float
    yaw_pitch_roll: Tensor = field(default_factory=lambda: torch.zeros(0, 3))

    @property
    def num_frames(self) -> int:
        return int(self.pose.shape[0])

    def expression_vector(self, expr_names: list[str] | tuple[str, ...]) -> Tensor:
        """``[T,E]`` coefficients in the order of ``expr_names`` (a head model's expression names).

        Names the animation does not drive are 0; ARKit names the model lacks are dropped.
        """
        out = torch.zeros(self.num_frames, len(expr_names))
        for i, n in enumerate(expr_names):
            if n in self.arkit:
                out[:, i] = self.arkit[n]
        return out


#: Jaw rotation (radians, about +x: the chin moves down) equivalent to ``jawOpen = 1`` (the open
#: model's jawOpen moves the chin about 39 mm, about 0.12 m from the jaw hinge).
JAW_RAD_PER_JAWOPEN = 0.33


def model_parameters(
    anim: Animation, expr_names: list[str] | tuple[str, ...], jaw_expressions: tuple[str, ...] = ()
) -> tuple[Tensor, Tensor]:
    """Expression and pose of a head model for an animation.

    Args:
        anim: the :class:`Animation`.
        expr_names: the head model's expression names (ARKit names for the open model).
        jaw_expressions: expression names that the model drives through the jaw joint instead
            (the open model's ``meta["jaw_expressions"]``): ``jawOpen`` becomes a jaw rotation of
            :data:`JAW_RAD_PER_JAWOPEN` per unit and those coefficients stay zero.
    Returns:
        ``(expression [T,E], pose [T,5,3])``.
    """
    expr = anim.expression_vector(expr_names)
    pose = anim.pose.clone()
    if "jawOpen" in jaw_expressions and "jawOpen" in anim.arkit:
        pose[:, 2, 0] = pose[:, 2, 0] + JAW_RAD_PER_JAWOPEN * anim.arkit["jawOpen"]
        for i, n in enumerate(expr_names):
            if n in jaw_expressions:
                expr[:, i] = 0
    return expr, pose


def _smooth_noise(t: np.ndarray, rng: np.random.Generator, freqs: tuple[float, ...]) -> np.ndarray:
    """Sum of sinusoids with random phases / amplitudes, mapped affinely onto [-1, 1]."""
    s = np.zeros_like(t)
    for f in freqs:
        s += rng.uniform(0.5, 1.0) * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    lo, hi = s.min(), s.max()
    if hi - lo < 1e-9:
        return np.zeros_like(t)
    return 2.0 * (s - lo) / (hi - lo) - 1.0


def _bump(t: np.ndarray, center: float, width: float) -> np.ndarray:
    """Raised-cosine bump of full width ``width`` seconds, peak 1 at ``center``."""
    x = (t - center) / (width / 2)
    return np.where(np.abs(x) < 1, 0.5 * (1 + np.cos(math.pi * np.clip(x, -1, 1))), 0.0)


def _envelope(t: np.ndarray, start: float, end: float, ramp: float) -> np.ndarray:
    """1 between ``start`` and ``end`` with smooth (cosine) ramps of ``ramp`` seconds."""
    up = np.clip((t - start) / ramp, 0, 1)
    down = np.clip((end - t) / ramp, 0, 1)
    e = np.minimum(up, down)
    return 0.5 - 0.5 * np.cos(math.pi * e)


def _euler_to_axis_angle(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Radians ``[T]`` each -> axis-angle ``[T,3]`` of ``Ry(yaw) @ Rx(pitch) @ Rz(roll)``."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("YXZ", np.stack([yaw, pitch, roll], -1)).as_rotvec()


def make_animation(
    num_frames: int,
    fps: float = 25.0,
    seed: int = 0,
    max_yaw_deg: float = 30.0,
    max_pitch_deg: float = 15.0,
    max_roll_deg: float = 6.0,
    max_shift_m: float = 0.008,
    talk_fraction: float = 0.75,
) -> Animation:
    """Build a deterministic talking-head performance.

    Args:
        num_frames: T >= 1.
        fps: frame rate (curves are defined in seconds, so ``fps`` sets their speed per frame).
        seed: random seed of every choice (syllables, blinks, smiles, motion).
        max_yaw_deg, max_pitch_deg, max_roll_deg: head rotation ranges; yaw and pitch reach
            exactly +-max over the clip (affine normalisation of a smooth random signal).
        max_shift_m: range of the head's translation drift (metres).
        talk_fraction: fraction of the time spent speaking.
    Returns:
        :class:`Animation` with float32 tensors.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    rng = np.random.default_rng(seed)
    T = num_frames
    t = np.arange(T) / fps
    dur = max(T / fps, 1e-3)
    tracks = {n: np.zeros(T) for n in ARKIT_NAMES}

    # ---- speech: segments of syllables ---------------------------------------------------------
    time_ = rng.uniform(0.0, 0.4)
    while time_ < dur:
        seg = rng.uniform(1.5, 4.0)
        if rng.uniform() < talk_fraction or time_ == 0.0:
            s = time_
            while s < min(time_ + seg, dur + 0.3):
                width = rng.uniform(0.18, 0.32)
                amp = rng.uniform(0.15, 0.65)
                b = _bump(t, s + width / 2, width)
                kind = rng.choice(["open", "round", "spread", "closed"], p=[0.45, 0.2, 0.2, 0.15])
                if kind == "closed":  # m / b / p: lips pressed, jaw slightly open
                    tracks["jawOpen"] += 0.1 * b
                    tracks["mouthClose"] += 0.12 * b
                    tracks["mouthPressLeft"] += 0.4 * b
                    tracks["mouthPressRight"] += 0.4 * b
                    tracks["mouthRollLower"] += 0.3 * b
                else:
                    tracks["jawOpen"] += amp * b
                    tracks["mouthLowerDownLeft"] += 0.4 * amp * b
                    tracks["mouthLowerDownRight"] += 0.4 * amp * b
                    tracks["mouthUpperUpLeft"] += 0.2 * amp * b
                    tracks["mouthUpperUpRight"] += 0.2 * amp * b
                if kind == "round":  # o / u
                    tracks["mouthFunnel"] += rng.uniform(0.3, 0.7) * b
                    tracks["mouthPucker"] += rng.uniform(0.2, 0.6) * b
                elif kind == "spread":  # e / i
                    tracks["mouthStretchLeft"] += rng.uniform(0.2, 0.5) * b
                    tracks["mouthStretchRight"] += rng.uniform(0.2, 0.5) * b
                s += width * rng.uniform(0.8, 1.1)
            # an emphasis: brows up somewhere in the segment
            if rng.uniform() < 0.6:
                c = time_ + rng.uniform(0.2, 0.8) * seg
                b = _bump(t, c, rng.uniform(0.6, 1.2))
                tracks["browInnerUp"] += rng.uniform(0.3, 0.7) * b
                tracks["browOuterUpLeft"] += rng.uniform(0.2, 0.5) * b
                tracks["browOuterUpRight"] += rng.uniform(0.2, 0.5) * b
        time_ += seg + rng.uniform(0.3, 1.2)

    # ---- blinks ---------------------------------------------------------------------------------
    time_ = rng.uniform(0.3, 2.0)
    while time_ < dur:
        close, opening = rng.uniform(0.06, 0.1), rng.uniform(0.12, 0.2)
        x = t - time_
        b = np.where((x >= -close) & (x <= 0), 1 + x / close, 0.0) + np.where(
            (x > 0) & (x <= opening), 1 - x / opening, 0.0
        )
        b = np.sin(0.5 * math.pi * np.clip(b, 0, 1))
        tracks["eyeBlinkLeft"] += b
        tracks["eyeBlinkRight"] += b
        time_ += rng.uniform(2.0, 5.0)

    # ---- smiles ---------------------------------------------------------------------------------
    time_ = rng.uniform(0.0, 3.0)
    while time_ < dur:
        length = rng.uniform(1.5, 3.5)
        amp = rng.uniform(0.45, 0.9)
        e = _envelope(t, time_, time_ + length, 0.4) * amp
        asym = rng.uniform(-0.1, 0.1)
        tracks["mouthSmileLeft"] += e * (1 + asym)
        tracks["mouthSmileRight"] += e * (1 - asym)
        tracks["cheekSquintLeft"] += 0.4 * e
        tracks["cheekSquintRight"] += 0.4 * e
        tracks["eyeSquintLeft"] += 0.25 * e
        tracks["eyeSquintRight"] += 0.25 * e
        tracks["mouthDimpleLeft"] += 0.2 * e
        tracks["mouthDimpleRight"] += 0.2 * e
        time_ += length + rng.uniform(2.0, 5.0)
    if T >= 3 and tracks["mouthSmileLeft"].max() < 0.2:  # short clips still show one smile
        c = rng.uniform(0.3, 0.7) * dur
        e = _bump(t, c, max(dur * 0.5, 0.4)) * 0.7
        for n, k in (
            ("mouthSmileLeft", 1.0),
            ("mouthSmileRight", 1.0),
            ("cheekSquintLeft", 0.4),
            ("cheekSquintRight", 0.4),
        ):
            tracks[n] += k * e

    # ---- head motion ----------------------------------------------------------------------------
    f0 = 1.0 / dur  # one slow cycle over the clip guarantees the range is swept
    yaw = _smooth_noise(t, rng, (f0, 0.13, 0.31)) * math.radians(max_yaw_deg)
    pitch = _smooth_noise(t, rng, (0.7 * f0 + 0.05, 0.21, 0.43)) * math.radians(max_pitch_deg)
    roll = _smooth_noise(t, rng, (0.09, 0.27)) * math.radians(max_roll_deg)
    if T == 1:
        yaw = pitch = roll = np.zeros(1)
    shift = np.stack([_smooth_noise(t, rng, (0.11, 0.23)) for _ in range(3)], -1) * (max_shift_m / 2)
    shift[:, 2] *= 0.5
    pose = np.zeros((T, 5, 3))
    pose[:, 0] = _euler_to_axis_angle(yaw, pitch, roll)
    # eyes keep (mostly) looking at the camera: counter-rotate part of the head rotation
    eye_yaw = np.clip(-0.6 * yaw, -math.radians(20), math.radians(20)) + 0.05 * _smooth_noise(t, rng, (0.5,))
    eye_pitch = np.clip(-0.5 * pitch, -math.radians(12), math.radians(12))
    eye = _euler_to_axis_angle(eye_yaw, eye_pitch, np.zeros(T))
    pose[:, 3] = eye
    pose[:, 4] = eye

    arkit = {n: torch.tensor(np.clip(v, 0.0, 1.0), dtype=torch.float32) for n, v in tracks.items() if v.any()}
    ypr = np.degrees(np.stack([yaw, pitch, roll], -1))
    return Animation(
        arkit=arkit,
        pose=torch.tensor(pose, dtype=torch.float32),
        translation=torch.tensor(shift, dtype=torch.float32),
        fps=float(fps),
        yaw_pitch_roll=torch.tensor(ypr, dtype=torch.float32),
    )
