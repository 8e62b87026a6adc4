"""``hravatar render`` (self-reenactment of the subject's frames) and ``hravatar orbit`` (novel views)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro

from hravatar.apps.common import (
    check_output,
    frame_indices,
    hstack,
    to_uint8,
    write_frames,
)
from hravatar.avatar import load_avatar
from hravatar.geometry import axis_angle_to_matrix
from hravatar.progress import log, progress


@dataclass
class RenderConfig:
    """Render the avatar on its subject's frames (self-reenactment) to an mp4."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """output .mp4 (or .png for the first frame); default AVATAR/render_<split>.mp4"""
    split: str = "test"
    """which subject frames: test (held-out last frames), train or all"""
    side_by_side: bool = False
    """put the ground-truth frame next to each render"""
    subject: Path | None = None
    """the subject folder, if it moved since training"""
    size: int = 0
    """output size (longer side, pixels); 0 = the trained resolution"""
    fps: float = 0.0
    """frames per second; 0 = the subject's"""
    max_frames: int = 0
    """render at most this many frames, evenly spread (0 = all)"""
    use_encoder: bool = True
    """expression and jaw from the avatar's encoder (as in the paper); False = tracked parameters"""
    device: str = "auto"
    """auto, cpu or cuda"""


def render_cmd(cfg: RenderConfig) -> int:
    """Self-reenactment video of the subject's frames."""
    out = check_output(cfg.output or Path(cfg.avatar) / f"render_{cfg.split}.mp4")
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    if cfg.split not in ("test", "train", "all"):
        from hravatar.errors import HRAvatarError

        raise HRAvatarError(f"--split {cfg.split!r}: use test, train or all")
    ds = la.subject(cfg.split)
    idx = frame_indices(len(ds), cfg.max_frames)
    fps = cfg.fps or la.reference.fps

    def frames():
        for i in progress(idx, desc="render"):
            fr = la.frame(ds, i)
            cam = la.camera(cfg.size)
            cam = type(cam)(fr.viewmat, cam.K, cam.width, cam.height)
            img = to_uint8(la.render(la.frame_params(fr, cfg.use_encoder), cam).image[0])
            if cfg.side_by_side:
                img = hstack([to_uint8(fr.image), img])
            yield img

    write_frames(out, frames(), fps=fps, total=len(idx))
    log.info("wrote %s (%d frames)", out, len(idx))
    print(out)
    return 0


@dataclass
class OrbitConfig:
    """Novel views: the camera circles the head (at the reference frame's expression and pose)."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """output .mp4 (or .png); default AVATAR/orbit.mp4"""
    frames: int = 60
    """number of views"""
    sweep: float = 360.0
    """total azimuth swept, degrees (e.g. 60 for +-30 degrees around the front)"""
    elevation: float = 0.0
    """camera elevation above the reference camera, degrees"""
    subject: Path | None = None
    """the subject folder, if it moved since training"""
    size: int = 0
    """output size (longer side, pixels); 0 = the trained resolution"""
    fps: float = 25.0
    """frames per second"""
    device: str = "auto"
    """auto, cpu or cuda"""


def orbit_viewmats(viewmat: torch.Tensor, center: torch.Tensor, azimuths_deg: np.ndarray,
                   elevation_deg: float = 0.0) -> torch.Tensor:
    """Cameras orbiting ``center`` [3]: the reference ``viewmat`` [4,4] composed with a rotation of
    the world about the vertical (+y) axis through ``center`` (and about +x for the elevation).
    Returns ``[n,4,4]``."""
    out = []
    for az in azimuths_deg:
        aa = torch.tensor([math.radians(elevation_deg), 0.0, 0.0], device=viewmat.device)
        ay = torch.tensor([0.0, math.radians(float(az)), 0.0], device=viewmat.device)
        R = axis_angle_to_matrix(aa) @ axis_angle_to_matrix(ay)
        M = torch.eye(4, device=viewmat.device)
        M[:3, :3] = R
        M[:3, 3] = center - R @ center
        out.append(viewmat @ M)
    return torch.stack(out)


def orbit_cmd(cfg: OrbitConfig) -> int:
    """Render views around the head."""
    out = check_output(cfg.output or Path(cfg.avatar) / "orbit.mp4")
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    p = la.reference.params
    cam = la.camera(cfg.size)
    center = la.head_center(p)
    half = cfg.sweep / 2 if cfg.sweep < 360 else 0.0
    az = np.linspace(-half, cfg.sweep - half, cfg.frames, endpoint=cfg.sweep < 360)
    vms = orbit_viewmats(cam.viewmat, center, az, cfg.elevation)

    def frames():
        for vm in progress(vms, desc="orbit"):
            yield to_uint8(la.render(p, cam.with_viewmat(vm)).image[0])

    write_frames(out, frames(), fps=cfg.fps, total=len(vms))
    print(out)
    return 0
