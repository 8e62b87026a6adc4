"""``hravatar export``: a standard 3DGS PLY of the posed avatar, and the canonical avatar for reuse."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import tyro

from hravatar.apps.common import (
    apply_assignments,
    load_environment,
    parse_assignments,
)
from hravatar.avatar import Avatar, FrameParams, load_avatar
from hravatar.errors import HRAvatarError
from hravatar.gaussians import export_ply
from hravatar.render import camera_centers


@dataclass
class ExportConfig:
    """Export the avatar: a 3DGS PLY that common splat viewers open, and/or the canonical avatar."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    ply: Path | None = None
    """write the posed avatar as a standard 3DGS PLY here"""
    expression: list[str] = field(default_factory=list)
    """expression/pose edits NAME=VALUE (ARKit names for the open model, jaw/yaw/pitch/roll in radians)"""
    neutral: bool = False
    """start from the neutral expression and rest pose instead of the reference frame's"""
    shaded: Path | None = None
    """bake colours shaded under this environment map (.hdr/.exr/.safetensors) from the reference camera"""
    albedo: bool = False
    """colours = albedo (default for PBR avatars is the learned light, shaded from the reference camera)"""
    canonical: Path | None = None
    """also copy the canonical avatar (points + blendshape bases + skinning weights, safetensors) here"""
    web: Path | None = None
    """write a web bundle (avatar + lights + the WebGL viewer) into this folder; serve it with any static server"""
    envmap: list[Path] = field(default_factory=list)
    """--web: environment maps (.hdr/.exr/.safetensors) offered besides the learned light, prefiltered here"""
    max_frames: int = 0
    """--web: frames of the tracked sequence included for playback (0: all)"""
    subject: Path | None = None
    """the subject folder, if it moved since training"""
    device: str = "auto"
    """auto, cpu or cuda"""


@torch.no_grad()
def point_colors(la: Avatar, p: FrameParams, lighting=None) -> torch.Tensor:
    """``[N,3]`` per-point colours shaded by ``lighting`` (default: learned) seen from the reference camera."""
    from hravatar.shading import shade

    av = la.gaussians
    if la.mode != "pbr":
        return av.colors.clamp(0, 1)
    g = av.deform(p.shape, p.expression, p.pose, p.translation)
    cam_c = camera_centers(la.camera().viewmat[None])  # [1,3]
    n = g.normals(cam_c)[0]
    v = torch.nn.functional.normalize(cam_c - g.means[0], dim=-1)
    gb = {"albedo": av.albedo, "roughness": av.roughness, "f0": av.f0, "normal": n,
          "alpha": torch.ones_like(av.f0)}
    gb = {k: t[None, None] for k, t in gb.items()}  # [1,1,N,*]: a one-row G-buffer
    out = shade(gb, v[None, None], lighting if lighting is not None else la.lighting)
    return out["image"][0, 0].clamp(0, 1)


def export_cmd(cfg: ExportConfig) -> int:
    """Write the PLY and/or the canonical avatar."""
    if cfg.ply is None and cfg.canonical is None and cfg.web is None:
        raise HRAvatarError("nothing to export: give --ply OUT.ply, --canonical OUT.safetensors and/or --web DIR")
    if cfg.web is not None:
        from hravatar.apps.web_bundle import check_web_dest

        check_web_dest(cfg.web)
    for p in cfg.envmap:
        if not Path(p).is_file():
            raise HRAvatarError(f"--envmap {p}: file not found")
    if cfg.ply is not None and Path(cfg.ply).suffix.lower() != ".ply":
        raise HRAvatarError(f"{cfg.ply}: the PLY output must end in .ply")
    from hravatar.io.atomic import check_writable

    for out in (cfg.ply, cfg.canonical):
        if out is not None:
            check_writable(out)
    if cfg.canonical is not None and Path(cfg.canonical).suffix != ".safetensors":
        raise HRAvatarError(f"{cfg.canonical}: the canonical avatar is written as .safetensors")
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    if cfg.ply is not None:
        ref = la.reference.params
        if cfg.neutral:
            ref = FrameParams(ref.shape, torch.zeros_like(ref.expression), torch.zeros_like(ref.pose),
                              torch.zeros_like(ref.translation))
        p = apply_assignments(la, ref, parse_assignments(cfg.expression, la.expr_names))
        if cfg.albedo:
            colors = la.gaussians.albedo if la.mode == "pbr" else la.gaussians.colors
        else:
            light = load_environment(cfg.shaded, la) if cfg.shaded else None
            colors = point_colors(la, p, light)
        export_ply(la.gaussians, cfg.ply, expression=p.expression[0], pose=p.pose[0], colors=colors,
                             shape=p.shape[0], translation=p.translation[0])
        print(cfg.ply)
    if cfg.canonical is not None:
        dest = Path(cfg.canonical)
        if dest.suffix != ".safetensors":
            raise HRAvatarError(f"{dest}: the canonical avatar is written as .safetensors")
        from hravatar.io.atomic import atomic_path

        with atomic_path(dest) as tmp:
            shutil.copyfile(la.path / "avatar.safetensors", tmp)
        print(dest)
    if cfg.web is not None:
        from hravatar.apps.web_bundle import build_bundle, write_bundle

        envs = [(Path(p).name, load_environment(p, la)) for p in cfg.envmap]
        bundle = build_bundle(la, envs, max_frames=cfg.max_frames)
        write_bundle(bundle, cfg.web)
        print(f"{cfg.web} ({bundle.size_bytes / 1e6:.1f} MB; view it with `python -m http.server -d {cfg.web}`)")
    return 0
