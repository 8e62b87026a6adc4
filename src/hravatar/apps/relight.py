"""``hravatar relight`` (new HDR environment, optionally rotating) and ``hravatar edit`` (materials)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro

from hravatar.apps.common import (
    check_output,
    env_background,
    frame_indices,
    load_environment,
    to_uint8,
    write_frames,
)
from hravatar.avatar import Avatar, load_avatar
from hravatar.errors import HRAvatarError
from hravatar.gaussians import save_gaussians
from hravatar.progress import log, progress


def _require_pbr(la: Avatar, what: str) -> None:
    if la.mode != "pbr":
        raise HRAvatarError(f"{la.path}: trained without physically based shading (--no-pbr ablation); "
                            f"{what} needs a shaded avatar")


@dataclass
class RelightConfig:
    """Render the avatar under an HDR environment map (.hdr/.exr, or a prefiltered .safetensors)."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    envmap: Path
    """equirectangular .hdr/.exr (float), or the output of `hravatar envmap prefilter`"""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """output .mp4 (or .png); default AVATAR/relight_<map>.mp4"""
    rotate: bool = False
    """rotate the light one full turn about the vertical axis (on the reference frame)"""
    rotation: float = 0.0
    """fixed rotation of the map about the vertical axis, degrees"""
    exposure: float = 0.0
    """exposure change in stops, after the automatic match to the avatar's learned light level"""
    auto_exposure: bool = True
    """scale the map to the mean brightness of the light the avatar was trained under"""
    background: str = "map"
    """map (what the camera sees of the environment) or black"""
    frames: int = 60
    """frames of the rotating-light video; without --rotate, at most this many subject frames (0 = all)"""
    subject: Path | None = None
    """the subject folder, if it moved since training"""
    size: int = 0
    """output size (longer side, pixels); 0 = the trained resolution"""
    fps: float = 25.0
    """frames per second"""
    device: str = "auto"
    """auto, cpu or cuda"""


def relight_cmd(cfg: RelightConfig) -> int:
    """Relight the avatar with a new environment map."""
    out = check_output(cfg.output or Path(cfg.avatar) / f"relight_{Path(cfg.envmap).stem}.mp4")
    if cfg.background not in ("map", "black"):
        raise HRAvatarError(f"--background {cfg.background!r}: use map or black")
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    _require_pbr(la, "relighting")
    env = load_environment(cfg.envmap, la, rotation=cfg.rotation, exposure=cfg.exposure,
                           auto_exposure=cfg.auto_exposure)
    cam = la.camera(cfg.size)
    if cfg.rotate or not la.has_subject():
        p = la.reference.params
        angles = np.linspace(0.0, 360.0, max(cfg.frames, 1), endpoint=False) if cfg.rotate else [0.0]
        jobs = [(p, cam, cfg.rotation + a) for a in angles]
    else:
        ds = la.subject("test")
        jobs = []
        for i in frame_indices(len(ds), cfg.frames):
            fr = la.frame(ds, i)
            jobs.append((la.frame_params(fr), cam.with_viewmat(fr.viewmat), cfg.rotation))

    def frames():
        for p, c, rot in progress(jobs, desc="relight"):
            env.rotation = float(rot)
            bg = env_background(env, c) if cfg.background == "map" else None
            yield to_uint8(la.render(p, c, lighting=env, background=bg).image[0])

    write_frames(out, frames(), fps=cfg.fps, total=len(jobs))
    log.info("relit with %s (auto exposure %+.2f stops, extra %+.2f)", cfg.envmap,
             getattr(env, "auto_exposure", 0.0), cfg.exposure)
    print(out)
    return 0


def region_mask(la: Avatar, regions: list[str]) -> torch.Tensor | None:
    """``[N,1]`` bool: points whose nearest canonical head-model vertex lies in one of ``regions``."""
    if not regions:
        return None
    from scipy.spatial import cKDTree

    head = la.head_model()
    unknown = [r for r in regions if r not in head.regions]
    if unknown:
        raise HRAvatarError(f"--region {unknown[0]!r}: unknown; this head model has {', '.join(sorted(head.regions))}")
    vmask = torch.zeros(head.num_vertices, dtype=torch.bool)
    for r in regions:
        vmask |= head.regions[r].cpu()
    tree = cKDTree(head.v_template.detach().cpu().numpy())
    _, nn = tree.query(la.gaussians.params["means"].detach().cpu().numpy())
    if la.gaussians.rig == "triangle":  # canonical positions are triangle-local: use the binding
        nn = head.faces[la.gaussians.params["binding"].cpu(), 0].numpy()
    return vmask[torch.as_tensor(nn)][:, None].to(la.device)


@dataclass
class EditConfig:
    """Edit the avatar's materials (Fresnel F0, roughness), render the result and/or save an edited avatar."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    f0: float | None = None
    """set F0 to this value (0.04 is skin-like, higher is shinier)"""
    f0_scale: float | None = None
    """multiply F0 by this factor"""
    roughness: float | None = None
    """set roughness to this value (0 mirror-like .. 1 matte)"""
    roughness_scale: float | None = None
    """multiply roughness by this factor"""
    region: list[str] = field(default_factory=list)
    """restrict the edit to head-model regions (face, scalp, neck, eyes, lips, teeth, mouth_interior)"""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """image/video of the edit (.png or .mp4: original | edited side by side); default AVATAR/edit.png"""
    save: Path | None = None
    """also write an edited copy of the avatar folder here"""
    envmap: Path | None = None
    """render under this environment instead of the learned light"""
    subject: Path | None = None
    """the subject folder, if it moved since training"""
    size: int = 0
    """output size (longer side, pixels); 0 = the trained resolution"""
    fps: float = 25.0
    """frames per second (video output)"""
    device: str = "auto"
    """auto, cpu or cuda"""


def edited_materials(la: Avatar, cfg: EditConfig) -> dict[str, torch.Tensor]:
    """The avatar's ``roughness``/``f0`` ``[N,1]`` after the edit in ``cfg``."""
    from hravatar.shading.materials import edit_materials

    if all(v is None for v in (cfg.f0, cfg.f0_scale, cfg.roughness, cfg.roughness_scale)):
        raise HRAvatarError("nothing to edit: give --f0, --f0-scale, --roughness or --roughness-scale")
    mask = region_mask(la, cfg.region)
    r, f = edit_materials(la.gaussians.roughness, la.gaussians.f0, mask, roughness_scale=cfg.roughness_scale,
                          roughness_set=cfg.roughness, f0_scale=cfg.f0_scale, f0_set=cfg.f0)
    return {"roughness": r, "f0": f}


def _save_edited(la: Avatar, mats: dict[str, torch.Tensor], dest: Path) -> None:
    """Copy the avatar folder to ``dest`` with the edited materials written into its parameters.

    The material ranges of the saved avatar are widened when an edit leaves them (e.g. F0 0.5 on an
    avatar trained with F0 in [0.04, 0.15]), so the saved avatar renders exactly like the preview.
    """
    import copy
    import shutil
    import tempfile

    dest = Path(dest)
    if dest.exists():
        raise HRAvatarError(f"{dest}: already exists; choose a new folder for the edited avatar")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    av = la.gaussians
    saved_params = {k: av.params[k].data.clone() for k in mats}
    saved_cfg = copy.deepcopy(av.config)
    try:
        for f in la.path.iterdir():
            if f.is_file() and f.name not in ("checkpoint.pt", "avatar.safetensors"):
                shutil.copy2(f, tmp / f.name)
        for k, v in mats.items():
            lo_name, hi_name = f"{k}_min", f"{k}_max"
            lo = min(getattr(av.config, lo_name), float(v.min()) - 1e-3)
            hi = max(getattr(av.config, hi_name), float(v.max()) + 1e-3)
            setattr(av.config, lo_name, lo)
            setattr(av.config, hi_name, hi)
            t = ((v - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)
            av.params[k].data.copy_(torch.log(t / (1 - t)))
        save_gaussians(av, tmp / "avatar.safetensors")
        la.save_reference(tmp)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        av.config = saved_cfg
        for k, v in saved_params.items():
            av.params[k].data.copy_(v)


def edit_cmd(cfg: EditConfig) -> int:
    """Render (and optionally save) a material edit."""
    from hravatar.apps.common import hstack

    out = check_output(cfg.output or Path(cfg.avatar) / "edit.png")
    la = load_avatar(cfg.avatar, cfg.device, cfg.subject)
    _require_pbr(la, "material editing")
    mats = edited_materials(la, cfg)
    light = load_environment(cfg.envmap, la) if cfg.envmap else None
    p, cam = la.reference.params, la.camera(cfg.size)
    before = to_uint8(la.render(p, cam, lighting=light).image[0])
    after = to_uint8(la.render(p, cam, lighting=light, materials=mats).image[0])
    write_frames(out, [hstack([before, after])], fps=cfg.fps)
    if cfg.save:
        _save_edited(la, mats, cfg.save)
        print(cfg.save)
    print(out)
    return 0
