"""``hravatar reenact``: cross-reenactment, a driver's expressions and head motion on the avatar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from hravatar.apps.common import (
    check_output,
    frame_indices,
    hstack,
    to_uint8,
    write_frames,
)
from hravatar.avatar import Avatar, FrameParams, load_avatar, subject_fps, with_encoder_expression
from hravatar.errors import HRAvatarError
from hravatar.geometry import axis_angle_to_matrix, compose_axis_angle, matrix_to_axis_angle
from hravatar.progress import log, progress


@dataclass
class ReenactConfig:
    """Drive the avatar with another person's (or the same person's other) video or subject folder."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    driver: Path
    """a video (preprocessed on the fly into DRIVER_subject/ next to the output) or a subject folder"""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """output .mp4 (or .png); default AVATAR/reenact_<driver>.mp4"""
    expressions: str = "encoder"
    """encoder (the avatar's expression encoder on the driver's face crops) or tracked (driver's tracked
    parameters; needs the same head model)"""
    relative: bool = False
    """relative expression transfer: the driver's first frame is taken as its neutral and only the
    expression and jaw changes from it are added to the avatar's reference frame"""
    head_motion: bool = True
    """transfer the driver's head motion (rotation and translation relative to its first frame, applied
    to the avatar's reference pose, so the avatar stays framed by its own camera)"""
    side_by_side: bool = False
    """put the driver frame next to each render"""
    max_frames: int = 0
    """drive at most this many frames, evenly spread (0 = all)"""
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
    if not drv.is_file():
        raise HRAvatarError(f"{drv}: driver not found; pass a video file or a subject folder")
    from hravatar.preprocess.pipeline import PipelineSettings, preprocess_video

    dest = out.parent / f"{drv.stem}_subject"
    log.info("preprocessing the driver video into %s (reused on the next run)", dest)
    return preprocess_video(drv, dest, PipelineSettings(max_frames=cfg.max_frames or None, min_frames=2))


def driver_params(la: Avatar, fr, mode: str) -> FrameParams:
    """The avatar-space parameters of one driver frame (expression from the encoder or tracking)."""
    E = la.gaussians.num_expr
    expr = fr.expression[None].to(la.device)
    p = FrameParams(la.reference.shape, expr, fr.pose[None].clone().to(la.device),
                    fr.translation[None].clone().to(la.device))
    if mode == "encoder":
        return with_encoder_expression(p, *la.encode(fr.face_crop[None]))
    if expr.shape[-1] != E:
        raise HRAvatarError(f"driver has {expr.shape[-1]} expression components, the avatar {E}: use "
                            "--expressions encoder (or a driver tracked with the same head model)")
    return p


def reenact_cmd(cfg: ReenactConfig) -> int:
    """Cross-reenactment video."""
    if cfg.expressions not in ("encoder", "tracked"):
        raise HRAvatarError(f"--expressions {cfg.expressions!r}: use encoder or tracked")
    out = check_output(cfg.output or Path(cfg.avatar) / f"reenact_{Path(cfg.driver).stem}.mp4")
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    if cfg.expressions == "encoder" and la.encoder is None:
        raise HRAvatarError(f"{la.path}: this avatar has no expression encoder; use --expressions tracked")
    from hravatar.data import load_subject

    ds = load_subject(_driver_subject(cfg, out), "all")
    idx = frame_indices(len(ds), cfg.max_frames)
    ref = la.reference
    cam = la.camera(cfg.size)
    first = driver_params(la, ds[idx[0]].to(la.device), cfg.expressions)
    fps = cfg.fps or subject_fps(ds)

    def frames():
        for i in progress(idx, desc="reenact"):
            fr = ds[i].to(la.device)
            d = driver_params(la, fr, cfg.expressions)
            p = ref.params.clone()
            if cfg.relative:
                p.expression = ref.params.expression + (d.expression - first.expression)
                p.pose[:, 2] = ref.params.pose[:, 2] + (d.pose[:, 2] - first.pose[:, 2])
            else:
                p.expression, p.pose[:, 2] = d.expression, d.pose[:, 2]
            p.pose[:, 3:] = d.pose[:, 3:]  # eyes
            if cfg.head_motion:
                for j in (0, 1):  # global and neck rotation: the change since the driver's first frame
                    rel = axis_angle_to_matrix(d.pose[0, j]) @ axis_angle_to_matrix(first.pose[0, j]).T
                    p.pose[0, j] = compose_axis_angle(matrix_to_axis_angle(rel), ref.params.pose[0, j])
                p.translation = ref.params.translation + (d.translation - first.translation)
            img = to_uint8(la.render(p, cam).image[0])
            if cfg.side_by_side:
                img = hstack([to_uint8(fr.image), img], height=img.shape[0])
            yield img

    write_frames(out, frames(), fps=fps, total=len(idx))
    print(out)
    return 0

