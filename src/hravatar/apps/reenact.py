"""``hravatar reenact``: cross-reenactment, a driver's expressions and head motion on the avatar.

The mapping from the driver's signal to the avatar's parameters lives in :mod:`hravatar.avatar.drive`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import tyro

from hravatar.apps.common import check_output, frame_indices, hstack, to_uint8, write_frames
from hravatar.avatar import Avatar, FrameParams, load_avatar, subject_fps
from hravatar.avatar.drive import CORRESPONDENCES, EXPRESSION_GAINS, HEAD_GAINS
from hravatar.errors import HRAvatarError
from hravatar.progress import log, progress

SIGNALS = ("mediapipe", "tracked", "encoder")


@dataclass
class ReenactConfig:
    """Drive the avatar with another person's (or the same person's other) video or subject folder."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    driver: Path
    """a video or a subject folder (tracked and encoder signals preprocess a video into DRIVER_subject/
    next to the output)"""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """output .mp4 (or .png); default AVATAR/reenact_<driver>.mp4"""
    expressions: str = "mediapipe"
    """driver signal: mediapipe (MediaPipe's ARKit blendshape scores and head transform of the driver,
    any face; best on the synthetic ground truth, see README), tracked (our tracker's parameters of the
    driver; same head model) or encoder (the avatar's own expression encoder on the driver's face crops)"""
    correspondence: str = "default"
    """mediapipe signal: how scores become expressions: names (name to name, unit gains), calibrated-all
    (the inverse of MediaPipe's measured response to the head model's expressions; fitted once, ~1 min,
    then cached), calibrated (that inverse for the mouth, name to name elsewhere) or default
    (names, the one that measured best, see README)"""
    head_gain: str = "default"
    """every signal's head rotation: calibrated (the driver's head rotation since its first frame scaled per
    axis by the inverse of MediaPipe's measured compression, pitch x1.37, yaw x1.16, roll x1.04; see README),
    none (the rotation as measured; our tracker fits MediaPipe's landmarks and shares their compression) or
    default (calibrated)"""
    expression_gain: str = "default"
    """mediapipe signal: calibrated (the driver's jawOpen, and any name-to-name expression whose reading is
    well determined, scaled by the inverse of MediaPipe's measured reading of the head model: jawOpen x1.97,
    a wider jaw; see README), none (unit gains) or default (calibrated, see README)"""
    relative: bool = True
    """relative transfer: the driver's changes from its own neutral (a low percentile of each score over
    the clip) are added to the avatar's neutral; --no-relative uses the driver's values as they are"""
    head_motion: bool = True
    """transfer the driver's head motion (rotation and translation relative to its first frame, applied
    around the avatar's reference pose, so the avatar stays framed by its own camera)"""
    absolute_pose: bool = False
    """use the driver's head rotation relative to its camera as the avatar's (translation stays relative)"""
    side_by_side: bool = False
    """put the driver frame next to each render"""
    max_frames: int = 0
    """drive at most this many frames (videos: the first N; subject folders: evenly spread; 0 = all)"""
    subject: Path | None = None
    """the avatar's subject folder, if it moved since training"""
    size: int = 0
    """output size (longer side, pixels); 0 = the trained resolution"""
    fps: float = 0.0
    """frames per second; 0 = the driver's"""
    device: str = "auto"
    """auto, cpu or cuda"""


def _driver_subject(cfg: ReenactConfig, out: Path) -> Path:
    drv = Path(cfg.driver)
    if drv.is_dir():
        if not (drv / "tracked_params.json").is_file():
            raise HRAvatarError(f"{drv}: not a subject folder (no tracked_params.json); pass a video or a subject")
        return drv
    from hravatar.preprocess.pipeline import PipelineSettings, preprocess_video

    dest = out.parent / f"{drv.stem}_subject"
    log.info("preprocessing the driver video into %s (reused on the next run)", dest)
    return preprocess_video(drv, dest, PipelineSettings(max_frames=cfg.max_frames or None, min_frames=2,
                                                         photometric=False))


@dataclass
class Driver:
    """The driver's frames (uint8 ``[H,W,3]`` each) and its parameters in the avatar's space."""

    frames: list[np.ndarray]
    expression: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    fps: float


def _mediapipe_driver(cfg: ReenactConfig, la: Avatar) -> Driver:
    from hravatar.avatar.drive import (
        DEFAULT_CORRESPONDENCE,
        DEFAULT_EXPRESSION_GAIN,
        DEFAULT_HEAD_GAIN,
        avatar_base,
        drive_mediapipe,
        driver_mapping,
        mediapipe_signal,
    )

    drv = Path(cfg.driver)
    if drv.is_dir():
        from hravatar.data import load_subject

        ds = load_subject(_driver_subject(cfg, drv), "all")
        frames = [to_uint8(ds[i].image) for i in frame_indices(len(ds), cfg.max_frames)]
        fps = subject_fps(ds)
    else:
        from hravatar.io.video import read_video

        try:
            frames, info = read_video(drv, max_frames=cfg.max_frames or None, show_progress=False)
        except HRAvatarError:
            raise
        except Exception as e:  # noqa: BLE001  (any decoder failure is a bad input)
            raise HRAvatarError(f"{drv}: cannot read the driver video ({e}); pass a video or a subject folder") from e
        fps = info.fps
    if not frames:
        raise HRAvatarError(f"{drv}: the driver has no frames; pass a longer video")
    try:
        scores, mats, found = mediapipe_signal(frames, total=len(frames))
    except ValueError as e:
        raise HRAvatarError(f"{drv}: {e}; the driver must show a face") from e
    if not found.all():
        log.warning("%s: no face in %d of %d driver frames (their neighbours' values are used)", drv,
                    int((~found).sum()), len(found))
    base = avatar_base(la)
    corr = DEFAULT_CORRESPONDENCE if cfg.correspondence == "default" else cfg.correspondence
    gain = DEFAULT_HEAD_GAIN if cfg.head_gain == "default" else cfg.head_gain
    egain = DEFAULT_EXPRESSION_GAIN if cfg.expression_gain == "default" else cfg.expression_gain
    mapping = driver_mapping(base.jaw_rad_per_unit, correspondence=corr, head_gain=gain, expression_gain=egain)
    e, p, t = drive_mediapipe(base, scores, mats, mapping, relative=cfg.relative, head=cfg.head_motion,
                              absolute_pose=cfg.absolute_pose)
    return Driver(frames, e, p, t, fps)


def _eye_midpoint(la: Avatar, shape: torch.Tensor) -> np.ndarray | None:
    """``[3]`` the midpoint of the eye joints of the head model with the driver's ``shape [S]`` (the
    avatar's own shape if the sizes differ; model coordinates, metres), or ``None`` without a head model."""
    try:
        head = la.head_model()
    except HRAvatarError:
        return None
    s = shape if shape.shape[-1] == head.num_shape else la.reference.shape[0]
    joints = head.rest_joints(s.reshape(1, -1).to(la.device, torch.float32))[0]
    return joints[3:].mean(0).cpu().numpy().astype(np.float64)


def _tracked_driver(cfg: ReenactConfig, la: Avatar, out: Path) -> Driver:
    from hravatar.avatar.drive import DEFAULT_HEAD_GAIN, HEAD_GAINS, avatar_base, drive_tracked
    from hravatar.data import load_subject

    ds = load_subject(_driver_subject(cfg, out), "all")
    idx = frame_indices(len(ds), cfg.max_frames)
    expr, pose = ds.expression[idx].numpy(), ds.pose[idx].numpy()
    if cfg.expressions == "encoder":
        es, js = [], []
        for i in progress(idx, desc="driver: encoder"):
            e, j = la.encode(ds[i].face_crop[None])
            es.append(e[0].cpu().numpy())
            js.append(j[0].cpu().numpy())
        expr, pose = np.stack(es), pose.copy()
        pose[:, 2] = np.stack(js)
    elif expr.shape[1] != la.num_expr:
        raise HRAvatarError(f"{cfg.driver}: driver has {expr.shape[1]} expression components, the avatar "
                            f"{la.num_expr}; use --expressions mediapipe (or a driver tracked with the "
                            "same head model)")
    e, p, t = drive_tracked(avatar_base(la), expr, pose, ds.translation[idx].numpy(), ds.viewmats[idx].numpy(),
                            relative=cfg.relative, head=cfg.head_motion, absolute_pose=cfg.absolute_pose,
                            head_gain=HEAD_GAINS[DEFAULT_HEAD_GAIN if cfg.head_gain == "default" else cfg.head_gain],
                            face_point=_eye_midpoint(la, ds.shape))
    frames = [to_uint8(ds[i].image) for i in idx]
    return Driver(frames, e, p, t, subject_fps(ds))


def load_driver(cfg: ReenactConfig, la: Avatar, out: Path) -> Driver:
    """The driver's frames and avatar-space parameters for ``cfg.expressions``."""
    drv = Path(cfg.driver)
    if not drv.exists():
        raise HRAvatarError(f"{drv}: driver not found; pass a video file or a subject folder")
    if cfg.expressions == "mediapipe":
        return _mediapipe_driver(cfg, la)
    return _tracked_driver(cfg, la, out)


def reenact_cmd(cfg: ReenactConfig) -> int:
    """Cross-reenactment video."""
    if cfg.expressions not in SIGNALS:
        raise HRAvatarError(f"--expressions {cfg.expressions!r}: use one of {', '.join(SIGNALS)}")
    if cfg.correspondence not in ("default", *CORRESPONDENCES):
        raise HRAvatarError(f"--correspondence {cfg.correspondence!r}: use one of default, "
                            f"{', '.join(CORRESPONDENCES)}")
    if cfg.head_gain not in ("default", *HEAD_GAINS):
        raise HRAvatarError(f"--head-gain {cfg.head_gain!r}: use one of default, {', '.join(HEAD_GAINS)}")
    if cfg.expression_gain not in ("default", *EXPRESSION_GAINS):
        raise HRAvatarError(f"--expression-gain {cfg.expression_gain!r}: use one of default, "
                            f"{', '.join(EXPRESSION_GAINS)}")
    out = check_output(cfg.output or Path(cfg.avatar) / f"reenact_{Path(cfg.driver).stem}.mp4")
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    if cfg.expressions == "encoder" and la.encoder is None:
        raise HRAvatarError(f"{la.path}: this avatar has no expression encoder; use --expressions mediapipe")
    d = load_driver(cfg, la, out)
    ref = la.reference
    cam = la.camera(cfg.size)
    dev = la.device

    def params(t: int) -> FrameParams:
        def f(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x)[None], dtype=torch.float32, device=dev)

        return FrameParams(ref.shape, f(d.expression[t]), f(d.pose[t]), f(d.translation[t]))

    def frames():
        for t in progress(range(len(d.frames)), desc="reenact"):
            img = to_uint8(la.render(params(t), cam).image[0])
            if cfg.side_by_side:
                img = hstack([d.frames[t], img], height=img.shape[0])
            yield img

    write_frames(out, frames(), fps=cfg.fps or d.fps, total=len(d.frames))
    print(out)
    return 0
