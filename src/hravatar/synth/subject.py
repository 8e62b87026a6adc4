"""``hravatar synth``: write the synthetic subject (training layout + ground truth).

Output (the subject folder of :mod:`hravatar.data.format`)::

    OUT/image/00000.png           RGBA frames rendered under the training environment
    OUT/tracked_params.json       the ground-truth parameters as tracking (optionally perturbed)
    OUT/manifest.json             settings, seeds, and "synthetic": {...} (what is ground truth)
    OUT/gt/albedo|normal|mask/    ground-truth maps of every frame (normal: OpenCV camera frame)
    OUT/gt/relit/<env>/           ground-truth renders under each unseen environment
    OUT/gt/envmaps/<env>.hdr      the three procedural environments (float32 Radiance HDR)
    OUT/gt/synth.json             everything needed to rebuild the ground-truth avatar exactly

Everything is a deterministic function of the settings (seeds included).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro
from torch import Tensor

from hravatar.errors import HRAvatarError
from hravatar.progress import log, progress

SYNTH_VERSION = 1
#: with --torso the camera frames head and shoulders, like a talking-head video
TORSO_CAMERA = {"head_height": 0.40, "target": (0.0, -0.03, 0.03)}


@dataclass
class SynthConfig:
    """Settings of the synthetic subject."""

    out: Annotated[Path, tyro.conf.Positional]
    """output subject folder"""
    size: int = 256
    """image width = height (pixels)"""
    frames: int = 300
    """number of video frames"""
    fps: float = 25.0
    """frame rate of the animation curves"""
    seed: int = 0
    """seed of identity, appearance and animation"""
    points_per_face: int = 16
    """ground-truth Gaussians per mesh triangle (training initialises 8)"""
    perturb: float = 0.0
    """tracking noise written to tracked_params.json (1.0 = 0.05 expression units, 1 degree of pose,
    1 mm of translation, standard deviations); 0 = exact ground truth"""
    yaw: float = 30.0
    """head yaw range (+- degrees)"""
    pitch: float = 15.0
    """head pitch range (+- degrees)"""
    env_height: int = 128
    """height of the procedural equirectangular environments (width = 2x)"""
    light: str = "neutral"
    """colour of the training light: neutral, warm (tungsten-like) or cool (daylight-like); the
    unseen relighting environments are the same for all"""
    light_level: float = 1.0
    """brightness of the training light: its mean front irradiance relative to the relighting
    environments' (1 = the same, 0.85 luminance; 0.5 = a video exposed one stop darker)"""
    skin: float = -1.0
    """skin tone in [0, 1], lightest to darkest of the palette; negative: chosen by the seed"""
    readable_face: bool = False
    """paint the eyes (white sclera, dark iris and pupil), a dark lash line on the eyelid margins
    and dark brows, so that face trackers such as MediaPipe read blinks and brow raises"""
    head_model: str = "open"
    """head model ("open"; "flame" needs your FLAME file)"""
    backend: str = "auto"
    """rasterizer backend (auto, cpu, cuda, reference)"""
    overwrite: bool = False
    """replace an existing output folder"""
    torso: bool = False
    """add a clothed torso under the head (frames' alpha = head + torso; gt/mask stays the head,
    gt/clothes holds the visible torso): ground truth for the head-only matte of preprocessing"""
    hair: Literal["none", "long"] = "none"
    """hair beyond the bald head mesh: none, or long (strands to below the frame; synth/hair.py)"""


def load_head(kind: str = "open") -> Any:
    """The head model used for the synthetic subject (with mouth interior when available)."""
    from hravatar.head import load_head_model

    return load_head_model(kind)


def perturb_params(
    expr: Tensor, pose: Tensor, trans: Tensor, amount: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Emulate tracking error: smooth-free i.i.d. Gaussian noise scaled by ``amount``.

    ``expr [T,E]`` + N(0, 0.05 amount) (clamped to [0,1]), ``pose [T,5,3]`` + N(0, 1 deg amount) on
    the global, neck and jaw rotations, ``trans [T,3]`` + N(0, 1 mm amount).
    """
    if amount <= 0:
        return expr, pose, trans
    g = torch.Generator().manual_seed(seed + 104729)
    e = (expr + 0.05 * amount * torch.randn(expr.shape, generator=g)).clamp(0, 1)
    p = pose.clone()
    p[:, :3] += np.radians(1.0) * amount * torch.randn(p[:, :3].shape, generator=g)
    t = trans + 0.001 * amount * torch.randn(trans.shape, generator=g)
    return e, p, t


def _face_crop_boxes(
    head: Any, shape: Tensor, expr: Tensor, pose: Tensor, trans: Tensor, viewmat: Tensor, K: Tensor
) -> np.ndarray:
    """``[T,3]`` square crop boxes around the projected face region."""
    from hravatar.data import crop_box_from_points
    from hravatar.render import project_points

    face = head.regions.get("face")
    boxes = []
    for i in range(0, expr.shape[0], 64):
        sl = slice(i, i + 64)
        B = expr[sl].shape[0]
        out = head(shape=shape[None].expand(B, -1), expression=expr[sl], pose=pose[sl], translation=trans[sl])
        v = out.vertices if face is None or not bool(face.any()) else out.vertices[:, face]
        for b in range(B):
            uv, _ = project_points(v[b], viewmat, K)
            boxes.append(crop_box_from_points(uv.numpy()))
    return np.stack(boxes)


@torch.no_grad()
def synthesize(cfg: SynthConfig) -> Path:
    """Render and write the synthetic subject (see the module docstring). Returns ``cfg.out``."""
    from hravatar.avatar import Camera, FrameParams
    from hravatar.data import SubjectParams, default_test_count, write_subject
    from hravatar.synth.appearance import random_identity
    from hravatar.synth.curves import make_animation, model_parameters
    from hravatar.synth.envmaps import (
        ENVIRONMENTS,
        LIGHT_TINTS,
        TEST_ENVS,
        make_lighting,
        split_level,
        train_env_name,
        write_hdr,
    )
    from hravatar.synth.hair import add_hair
    from hravatar.synth.render import (
        build_gt_avatar,
        default_camera,
        shade_maps,
        surface_maps,
        world_to_camera_normals,
    )

    out = Path(cfg.out)
    cache = out.parent / f".{out.name}.envcache"
    if out.exists() and not cfg.overwrite:
        raise HRAvatarError(f"{out}: already exists; pass --overwrite to replace it")
    if cfg.size < 16 or cfg.frames < 2:
        raise HRAvatarError(f"synth: size must be >= 16 and frames >= 2 (got {cfg.size}, {cfg.frames})")
    if cfg.light not in LIGHT_TINTS:
        raise HRAvatarError(f"--light: unknown training light {cfg.light!r}; choose one of {', '.join(LIGHT_TINTS)}")
    if cfg.skin > 1.0:
        raise HRAvatarError(f"--skin: {cfg.skin} is above 1; give a tone in [0, 1] (negative: the seed's)")
    if not 0.05 <= cfg.light_level <= 20:
        raise HRAvatarError(f"--light-level: {cfg.light_level} is outside [0.05, 20]; "
                            "give a brightness factor such as 0.5 or 2")
    train_env = train_env_name(cfg.light, cfg.light_level)
    skin = cfg.skin if cfg.skin >= 0 else None
    t0 = time.perf_counter()
    head = load_head(cfg.head_model)
    shape = random_identity(head, cfg.seed)
    anim = make_animation(cfg.frames, cfg.fps, cfg.seed, max_yaw_deg=cfg.yaw, max_pitch_deg=cfg.pitch)
    jaw_expr = tuple(head.meta.get("jaw_expressions", ()))
    expr, pose = model_parameters(anim, head.expr_names, jaw_expr)
    trans = anim.translation
    avatar, mats = build_gt_avatar(head, shape, seed=cfg.seed, points_per_face=cfg.points_per_face, skin=skin,
                                   readable=cfg.readable_face)
    avatar = add_hair(avatar, head, shape, cfg.seed, cfg.hair)
    viewmat, K = default_camera(cfg.size, **(TORSO_CAMERA if cfg.torso else {}))
    envs, lights = {}, {}
    for name in progress((train_env, *TEST_ENVS), desc="synth: prefilter environments"):
        envs[name], lights[name] = make_lighting(name, cfg.env_height, cache_dir=str(cache))
    t_setup = time.perf_counter() - t0
    log.info(
        "synth: %d Gaussians, %d frames of %dx%d, environments %s",
        avatar.num_points,
        cfg.frames,
        cfg.size,
        cfg.size,
        ", ".join(envs),
    )

    T, S = cfg.frames, cfg.size
    frames = np.zeros((T, S, S, 4), np.uint8)
    gt_albedo = np.zeros((T, S, S, 3), np.uint8)
    gt_normal = np.zeros((T, S, S, 3), np.float16)
    gt_mask = np.zeros((T, S, S, 1), np.uint8)
    gt_relit = {n: np.zeros((T, S, S, 3), np.uint8) for n in TEST_ENVS}
    torso = _torso_setup(head, shape, cfg) if cfg.torso else None
    gt_clothes = np.zeros((T, S, S, 1), np.uint8) if torso is not None else None
    t1 = time.perf_counter()
    u8 = lambda x: (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()  # noqa: E731
    for i in progress(range(T), desc="synth: render"):
        vm = viewmat[None]
        cam = Camera(viewmat, K, S, S)
        gb = surface_maps(avatar, FrameParams(shape[None], expr[i : i + 1], pose[i : i + 1], trans[i : i + 1]), cam,
                          backend=cfg.backend)
        rgb = shade_maps(gb, cam, lights[train_env])["color"]
        frames[i, ..., :3] = u8(rgb[0])
        frames[i, ..., 3:] = u8(gb.alpha[0])
        gt_albedo[i] = u8(gb.albedo[0] * (gb.alpha[0] > 0))
        gt_normal[i] = (world_to_camera_normals(gb.normal, vm)[0] * (gb.alpha[0] > 1e-3)).numpy()
        gt_mask[i] = u8(gb.alpha[0])
        if torso is not None:
            _composite_torso(frames[i], gt_clothes[i], gb.alpha[0], torso, trans[i], viewmat, K, S)
        for n in TEST_ENVS:
            gt_relit[n][i] = u8(shade_maps(gb, cam, lights[n])["image"][0])
    t_render = time.perf_counter() - t1

    e_t, p_t, t_t = perturb_params(expr, pose, trans, cfg.perturb, cfg.seed)
    boxes = _face_crop_boxes(head, shape, e_t, p_t, t_t, viewmat, K)
    params = SubjectParams(
        shape=shape,
        expression=e_t,
        pose=p_t,
        translation=t_t,
        viewmat=viewmat,
        K=K,
        image_size=(S, S),
        head_model=head.name,
        crop_boxes=boxes,
        expr_names=list(head.expr_names),
    )
    n_test = default_test_count(T)
    synth_info = {
        "version": SYNTH_VERSION,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "num_gaussians": avatar.num_points,
        "train_env": train_env,
        "test_envs": list(TEST_ENVS),
        "environments": {n: {**asdict(ENVIRONMENTS[split_level(n)[0]]), "level": split_level(n)[1]} for n in envs},
        "test_frames": n_test,
        "exact_tracking": cfg.perturb <= 0,
        "gt_params": {
            "shape": shape.tolist(),
            "expression": expr.tolist(),
            "pose": pose.tolist(),
            "translation": trans.tolist(),
        },
        "yaw_pitch_roll_deg": anim.yaw_pitch_roll.tolist(),
        "arkit_curves": {k: v.tolist() for k, v in anim.arkit.items()},
        "material_ranges": {
            "roughness": [float(mats.roughness.min()), float(mats.roughness.max())],
            "f0": [float(mats.f0.min()), float(mats.f0.max())],
        },
        "timings_s": {"setup": t_setup, "render": t_render},
    }
    manifest = {
        "source": "hravatar synth",
        "synthetic": {
            k: synth_info[k]
            for k in (
                "version",
                "settings",
                "train_env",
                "test_envs",
                "test_frames",
                "exact_tracking",
                "num_gaussians",
            )
        },
    }
    gt = {
        "albedo": iter(gt_albedo),
        "normal": (n.astype(np.float32) for n in gt_normal),
        "mask": iter(gt_mask),
    }
    for n in TEST_ENVS:
        gt[f"relit/{n}"] = iter(gt_relit[n])
    if gt_clothes is not None:
        gt["clothes"] = iter(gt_clothes)
    write_subject(out, iter(frames), params, manifest, gt=gt, overwrite=cfg.overwrite)
    # extra ground truth that is not per frame (the folder is complete already: these are re-derivable)
    for n, e in envs.items():
        write_hdr(str(out / "gt" / "envmaps" / f"{n}.hdr"), e)
        src = cache / f"{n}-{cfg.env_height}.safetensors"
        if src.is_file():
            shutil.copyfile(src, out / "gt" / "envmaps" / src.name)
    shutil.rmtree(cache, ignore_errors=True)
    from hravatar.io.atomic import atomic_write_text

    atomic_write_text(out / "gt" / "synth.json", json.dumps(synth_info))
    log.info(
        "synth: wrote %s (%d frames, %d test) in %.1f s (render %.1f s)",
        out,
        T,
        n_test,
        time.perf_counter() - t0,
        t_render,
    )
    return out


def _torso_setup(head: Any, shape: Tensor, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Torso mesh around the shaped head's neck rim and its colour: ``(verts, faces, colour)``."""
    from hravatar.preprocess.headmatte import neck_boundary_vertices
    from hravatar.synth.torso import clothes_colour, torso_mesh

    rest = head(shape=shape[None]).vertices[0].numpy().astype(np.float64)
    verts, faces = torso_mesh(rest[neck_boundary_vertices(head)])
    return verts, faces, clothes_colour(cfg.seed)


def _composite_torso(
    frame: np.ndarray, clothes: np.ndarray, head_alpha: Tensor, torso: tuple, trans: Tensor, viewmat: Tensor,
    K: Tensor, size: int,
) -> None:
    """Draw the torso under the head in ``frame [S,S,4]`` uint8 (in place) and write the visible
    clothes ``[S,S,1]`` uint8 ground truth."""
    from hravatar.synth.torso import render_torso

    verts, faces, colour = torso
    rgb_t, m_t = render_torso(verts + trans.numpy().astype(np.float64), faces, viewmat.numpy(), K.numpy(),
                              size, colour)
    a_h = head_alpha.numpy().astype(np.float32)  # [S,S,1]
    m = m_t[..., None].astype(np.float32)
    rgb_h = frame[..., :3].astype(np.float32) / 255.0  # straight (not premultiplied) colour
    alpha = a_h + (1.0 - a_h) * m
    rgb = (rgb_h * a_h + (1.0 - a_h) * m * rgb_t) / np.maximum(alpha, 1e-6)  # head over torso
    frame[..., :3] = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    frame[..., 3:] = (np.clip(alpha, 0, 1) * 255 + 0.5).astype(np.uint8)
    clothes[...] = (m * (a_h < 0.5) * 255).astype(np.uint8)


def load_synth_info(subject: str | Path) -> dict[str, Any]:
    """The ``gt/synth.json`` of a synthetic subject (raises :class:`HRAvatarError` if absent)."""
    p = Path(subject) / "gt" / "synth.json"
    if not p.is_file():
        raise HRAvatarError(f"{p}: not found; {subject} is not a synthetic subject (run `hravatar synth`)")
    return json.loads(p.read_text())


@torch.no_grad()
def rebuild_gt(subject: str | Path) -> dict[str, Any]:
    """Rebuild the ground truth of a synthetic subject from ``gt/synth.json``.

    Returns a dict with ``avatar`` (the GT :class:`GaussianHead`), ``head``, ``shape [S]``,
    ``expression [T,E]``, ``pose [T,5,3]``, ``translation [T,3]``, ``viewmat [4,4]``, ``K [3,3]``,
    ``size``, ``lights`` (env name -> :class:`EnvironmentLighting`), ``envmaps`` (name -> ``[H,W,3]``)
    and ``info``.
    """
    from hravatar.synth.envmaps import make_lighting
    from hravatar.synth.render import build_gt_avatar, default_camera

    info = load_synth_info(subject)
    st = info["settings"]
    head = load_head(st["head_model"])
    gp = info["gt_params"]
    shape = torch.tensor(gp["shape"], dtype=torch.float32)
    skin = st.get("skin", -1.0)
    avatar, _ = build_gt_avatar(head, shape, seed=st["seed"], points_per_face=st["points_per_face"],
                                skin=skin if skin is not None and skin >= 0 else None,
                                readable=bool(st.get("readable_face", False)))
    from hravatar.synth.hair import add_hair

    avatar = add_hair(avatar, head, shape, st["seed"], st.get("hair", "none"))
    viewmat, K = default_camera(st["size"], **(TORSO_CAMERA if st.get("torso") else {}))
    names = [info["train_env"], *info["test_envs"]]
    envmaps, lights = {}, {}
    for n in names:
        envmaps[n], lights[n] = make_lighting(
            n, st["env_height"], cache_dir=str(Path(subject) / "gt" / "envmaps")
        )
    return {
        "avatar": avatar,
        "head": head,
        "shape": shape,
        "expression": torch.tensor(gp["expression"], dtype=torch.float32),
        "pose": torch.tensor(gp["pose"], dtype=torch.float32),
        "translation": torch.tensor(gp["translation"], dtype=torch.float32),
        "viewmat": viewmat,
        "K": K,
        "size": st["size"],
        "envmaps": envmaps,
        "lights": lights,
        "info": info,
    }
