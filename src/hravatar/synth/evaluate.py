"""Evaluation of a trained avatar against the synthetic subject's ground truth, and the figures of
the demo report (relighting, rotating light, material edits, novel views).

Metrics on the test frames (the last frames of the video), full images over black:

* self-reenactment (the paper's): PSNR, SSIM (11x11 Gaussian), LPIPS (alex, when its weights are
  present), MAE* (= MAE x 100);
* beyond the paper, possible only with ground truth: relighting PSNR / SSIM under each unseen
  environment (the avatar's G-buffer shaded with the ground-truth lighting, compared with the
  ground-truth avatar under the same lighting), raw and after one global per-channel scale per
  environment (albedo and lighting are only determined up to such a scale: the aligned numbers are
  a diagnostic, the raw ones the headline, ``metrics["headline"]``), and as ``hravatar relight``
  renders it by default (the environment's exposure matched to the avatar's learned light: one
  scalar from the avatar, nothing from the ground truth); albedo PSNR raw, the albedo
  chromaticity error (angle in degrees between the mean predicted and ground-truth albedo colours
  over the pixels both cover), albedo LMSE (scale-invariant) and PSNR after a global per-channel
  scale; normal cosine similarity (camera
  frame, on pixels that both cover); roughness and F0 mean absolute error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hravatar.progress import log, progress


def _render_pred(av: Any, fr: Any, lighting: Any, viewmat: Tensor | None = None, backend: str = "auto") -> Any:
    """The avatar's :class:`~hravatar.avatar.RenderOutput` of a test frame (its tracked camera, or
    ``viewmat``), expression and jaw from the encoder when it has one."""
    from hravatar.avatar import Camera

    cam = Camera.of_frame(fr)
    return av.render(av.frame_params(fr), cam if viewmat is None else cam.with_viewmat(viewmat), lighting=lighting,
                     backend=backend)


def _gt_maps(gt: dict[str, Any], k: int, vm: Tensor, K: Tensor, size: tuple[int, int], backend: str) -> Any:
    """Ground-truth :class:`~hravatar.synth.render.SurfaceMaps` of video frame ``k`` from ``vm [4,4]``."""
    from hravatar.avatar import Camera, FrameParams
    from hravatar.synth.render import surface_maps

    p = FrameParams(gt["shape"][None], gt["expression"][k][None], gt["pose"][k][None], gt["translation"][k][None])
    return surface_maps(gt["avatar"], p, Camera(vm, K, size[1], size[0]), backend=backend)


def _to_camera(normal_world: Tensor, viewmat: Tensor) -> Tensor:
    return torch.einsum("ij,...j->...i", viewmat[:3, :3], normal_world)


def _scale_fit(pred: list[Tensor], gt: list[Tensor], masks: list[Tensor]) -> Tensor:
    """Per-channel least-squares scale ``[3]`` with ``s * pred ~ gt`` over masked pixels."""
    num = sum(((p * g) * m).flatten(0, -2).sum(0) for p, g, m in zip(pred, gt, masks, strict=True))
    den = sum(((p * p) * m).flatten(0, -2).sum(0) for p, m in zip(pred, masks, strict=True))
    return num / den.clamp_min(1e-12)


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(sum(xs) / len(xs)) if xs else float("nan")


@torch.no_grad()
def evaluate_synthetic(
    avatar_dir: str | Path,
    subject_dir: str | Path,
    fig_dir: str | Path | None = None,
    num_figure_frames: int = 4,
    max_frames: int | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """Metrics of a trained avatar on a synthetic subject's test frames (see the module docstring).

    Args:
        avatar_dir: folder written by ``hravatar train``.
        subject_dir: the synthetic subject (``hravatar synth``).
        fig_dir: when given, PNG figures of a few test frames are written there (``frame_*.png``
            rows used by the report) and their paths listed under ``"figures"``.
        num_figure_frames: test frames shown in figures (evenly spaced).
        max_frames: evaluate at most this many test frames (evenly spaced; None = all).
        backend: rasterizer backend.
    Returns:
        JSON-safe dict of metrics (see the module docstring) and ``figures``.
    """
    from hravatar.avatar import load_avatar
    from hravatar.data import load_subject
    from hravatar.metrics import lmse, lpips, lpips_available, mae100, normal_cosine, psnr, ssim
    from hravatar.synth.render import world_to_camera_normals
    from hravatar.synth.subject import rebuild_gt

    trained = load_avatar(avatar_dir, None)
    gt = rebuild_gt(subject_dir)
    info = gt["info"]
    test_envs = list(info["test_envs"])
    n_test = int(info["test_frames"])
    ds = load_subject(subject_dir, "test", test_frames=n_test)
    idx = list(range(len(ds)))
    if max_frames is not None and len(idx) > max_frames:
        idx = sorted({int(round(x)) for x in np.linspace(0, len(ds) - 1, max_frames)})
    fig_idx = sorted({idx[int(round(x))] for x in np.linspace(0, len(idx) - 1, min(num_figure_frames, len(idx)))})
    use_lpips = lpips_available("alex")
    if not use_lpips:
        log.warning("LPIPS weights not found: LPIPS is left out (run scripts/fetch_assets.py to add it)")

    rec: dict[str, list[float]] = {
        k: [] for k in ("psnr", "ssim", "lpips", "mae100", "albedo_lmse", "normal_cos", "rough_mae", "f0_mae")
    }
    relit: dict[str, dict[str, list]] = {
        e: {"psnr": [], "ssim": [], "pred": [], "gt": [], "mask": [], "psnr_auto": []} for e in test_envs
    }
    auto_lights = {e: _auto_exposed(gt["lights"][e], trained.lighting) for e in test_envs}
    alb_pred, alb_gt, alb_mask = [], [], []
    figs: dict[int, dict[str, Any]] = {}
    for i in progress(idx, desc="evaluate"):
        fr = ds[i]
        out = _render_pred(trained, fr, trained.lighting, backend=backend)
        pred = out.image[0].clamp(0, 1)
        target = fr.image
        rec["psnr"].append(float(psnr(pred, target)[0]))
        rec["ssim"].append(float(ssim(pred, target)[0]))
        rec["mae100"].append(float(mae100(pred, target)[0]))
        if use_lpips:
            rec["lpips"].append(float(lpips(pred[None], target[None])[0]))
        # ground-truth G-buffer of this frame (the stored maps + roughness / F0 from the GT avatar)
        vm = fr.viewmat[None]
        ggb = _gt_maps(gt, ds.frame_indices[i], fr.viewmat, fr.K, tuple(target.shape[:2]), backend)
        gmask = (ggb.alpha[0] > 0.5).float()
        pa = out.alpha[0]
        both = gmask * (pa > 0.5).float()
        a_pred = out.albedo[0] / pa.clamp_min(1e-6)
        a_gt = ggb.albedo[0]
        rec["albedo_lmse"].append(float(lmse(a_pred[None], a_gt[None], both[None])[0]))
        alb_pred.append(a_pred)
        alb_gt.append(a_gt)
        alb_mask.append(both)
        n_pred = _to_camera(out.normal[0], fr.viewmat)
        n_gt = world_to_camera_normals(ggb.normal, vm)[0]
        if float(both.sum()) > 0:
            rec["normal_cos"].append(float(normal_cosine(n_pred[None], n_gt[None], both[None])[0]))
            rec["rough_mae"].append(float(((out.roughness[0] - ggb.roughness[0]).abs() * both).sum() / both.sum()))
            rec["f0_mae"].append(float(((out.f0[0] - ggb.f0[0]).abs() * both).sum() / both.sum()))
        row: dict[str, Any] = {}
        for e in test_envs:
            o = _render_pred(trained, fr, gt["lights"][e], backend=backend)
            p = o.image[0].clamp(0, 1)
            g = ds.gt_map(i, f"relit/{e}")
            relit[e]["psnr"].append(float(psnr(p, g)[0]))
            relit[e]["ssim"].append(float(ssim(p, g)[0]))
            relit[e]["pred"].append(o.image[0])
            relit[e]["gt"].append(g)
            relit[e]["mask"].append((o.alpha[0] > 0.01).float())
            oa = _render_pred(trained, fr, auto_lights[e], backend=backend)
            relit[e]["psnr_auto"].append(float(psnr(oa.image[0].clamp(0, 1), g)[0]))
            row[e] = (o.image[0], g)
        if i in fig_idx:
            figs[i] = {
                "gt": target,
                "pred": pred,
                "albedo": (a_pred * both, a_gt * gmask),
                "roughness": (out.roughness[0] * both, ggb.roughness[0] * gmask),
                "f0": (out.f0[0] * both, ggb.f0[0] * gmask),
                "normal": (n_pred, n_gt, both, gmask),
                "relit": row,
            }

    # raw albedo (no fitting): PSNR on the pixels both cover, and the angle between mean colours
    from hravatar.light_priors import chromaticity_angle_deg

    alb_psnr_raw = _mean(
        [float(psnr((p * m).clamp(0, 1), g * m)[0]) for p, g, m in zip(alb_pred, alb_gt, alb_mask, strict=True)]
    )
    m_pred = sum((p * m).flatten(0, -2).sum(0) for p, m in zip(alb_pred, alb_mask, strict=True))
    m_gt = sum((g * m).flatten(0, -2).sum(0) for g, m in zip(alb_gt, alb_mask, strict=True))
    n_px = max(float(sum(m.sum() for m in alb_mask)), 1.0)
    alb_chroma = chromaticity_angle_deg(m_pred, m_gt)
    # secondary diagnostic: global per-channel scale alignment (albedo x lighting ambiguity)
    s_alb = _scale_fit(alb_pred, alb_gt, alb_mask)
    alb_psnr = _mean(
        [float(psnr((s_alb * p * m).clamp(0, 1), g * m)[0]) for p, g, m in zip(alb_pred, alb_gt, alb_mask, strict=True)]
    )
    relit_out: dict[str, Any] = {}
    for e in test_envs:
        r = relit[e]
        s = _scale_fit(r["pred"], r["gt"], r["mask"])
        al_psnr = [float(psnr((s * p).clamp(0, 1), g)[0]) for p, g in zip(r["pred"], r["gt"], strict=True)]
        al_ssim = [float(ssim((s * p).clamp(0, 1), g)[0]) for p, g in zip(r["pred"], r["gt"], strict=True)]
        relit_out[e] = {
            "psnr": _mean(r["psnr"]),
            "ssim": _mean(r["ssim"]),
            "psnr_aligned": _mean(al_psnr),
            "ssim_aligned": _mean(al_ssim),
            "scale": s.tolist(),
            "psnr_auto_exposure": _mean(r["psnr_auto"]),
            "auto_exposure_stops": auto_lights[e].exposure,
        }
    relit_out["mean"] = {
        k: _mean([relit_out[e][k] for e in test_envs])
        for k in ("psnr", "ssim", "psnr_aligned", "ssim_aligned", "psnr_auto_exposure")
    }
    metrics: dict[str, Any] = {
        "test_frames": len(idx),
        # the headline: raw numbers, no fitting against the ground truth (issue 18)
        "headline": {
            "relit_psnr_raw": relit_out["mean"]["psnr"],
            "relit_psnr_auto_exposure": relit_out["mean"]["psnr_auto_exposure"],
            "albedo_psnr_raw": alb_psnr_raw,
            "albedo_chroma_error_deg": alb_chroma,
            "self_reenactment_psnr": _mean(rec["psnr"]),
        },
        "self_reenactment": {
            "psnr": _mean(rec["psnr"]),
            "ssim": _mean(rec["ssim"]),
            "lpips": _mean(rec["lpips"]) if use_lpips else None,
            "mae100": _mean(rec["mae100"]),
        },
        "relighting": relit_out,
        "albedo": {"psnr": alb_psnr_raw, "chroma_error_deg": alb_chroma, "mean": (m_pred / n_px).tolist(),
                   "mean_gt": (m_gt / n_px).tolist(), "lmse": _mean(rec["albedo_lmse"]),
                   "psnr_aligned": alb_psnr, "scale": s_alb.tolist()},
        "normal": {"cosine": _mean(rec["normal_cos"])},
        "roughness": {"mae": _mean(rec["rough_mae"])},
        "f0": {"mae": _mean(rec["f0_mae"])},
        "per_frame": {"frame_index": [ds.frame_indices[i] for i in idx], "psnr": rec["psnr"], "ssim": rec["ssim"]},
    }
    if fig_dir is not None:
        scales = {e: torch.tensor(relit_out[e]["scale"]) for e in test_envs}
        metrics["figures"] = _write_eval_figures(Path(fig_dir), figs, ds, test_envs, s_alb, scales)
    return metrics


def _auto_exposed(light: Any, learned: Any) -> Any:
    """``light`` with the exposure ``hravatar relight`` gives it by default (auto exposure: its mean
    front irradiance made equal to the avatar's learned light's; one scalar from the avatar, not
    from the ground truth)."""
    from hravatar.light_priors import matched_exposure
    from hravatar.shading.lighting import EnvironmentLighting

    env = EnvironmentLighting(_prefiltered_of(light))
    env.exposure = matched_exposure(env, learned)
    return env


def _write_eval_figures(fig_dir: Path, figs: dict[int, dict[str, Any]], ds: Any, envs: list[str],
                        s_alb: Tensor, relit_scales: dict[str, Tensor]) -> dict[str, Any]:
    """PNG files of the evaluation figures; returns ``{"frames": [{"index":..., "<key>": path}]}``."""
    from hravatar.report.html import encode_image
    from hravatar.report.plots import error_map, normal_to_rgb, scalar_to_rgb

    fig_dir.mkdir(parents=True, exist_ok=True)
    rows = []

    def save(name: str, img: Any) -> str:
        p = fig_dir / name
        p.write_bytes(encode_image(img))
        return p.name

    for i, f in figs.items():
        k = ds.frame_indices[i]
        r: dict[str, Any] = {"index": k}
        r["gt"] = save(f"f{k:05d}_gt.png", f["gt"])
        r["pred"] = save(f"f{k:05d}_pred.png", f["pred"])
        r["error"] = save(f"f{k:05d}_err.png", error_map(f["pred"], f["gt"]))
        ap, ag = f["albedo"]
        r["albedo_pred"] = save(f"f{k:05d}_albedo_pred.png", ap.clamp(0, 1))
        r["albedo_pred_aligned"] = save(f"f{k:05d}_albedo_pred_aligned.png", (ap * s_alb).clamp(0, 1))
        r["albedo_gt"] = save(f"f{k:05d}_albedo_gt.png", ag)
        for m, lo, hi in (("roughness", 0.5, 1.0), ("f0", 0.04, 0.15)):
            p_, g_ = f[m]
            r[f"{m}_pred"] = save(f"f{k:05d}_{m}_pred.png", scalar_to_rgb(p_, lo, hi, mask=(p_ > 0).float()))
            r[f"{m}_gt"] = save(f"f{k:05d}_{m}_gt.png", scalar_to_rgb(g_, lo, hi, mask=(g_ > 0).float()))
        n_p, n_g, both, gm = f["normal"]
        # OpenCV camera frame -> the usual normal-map colours (x right, y up, z toward the viewer)
        flip = torch.tensor([1.0, -1.0, -1.0])
        r["normal_pred"] = save(f"f{k:05d}_normal_pred.png", normal_to_rgb(n_p * flip, both))
        r["normal_gt"] = save(f"f{k:05d}_normal_gt.png", normal_to_rgb(n_g * flip, gm))
        for e in envs:
            p_, g_ = f["relit"][e]
            r[f"relit_{e}_pred"] = save(f"f{k:05d}_relit_{e}_pred.png", p_.clamp(0, 1))
            r[f"relit_{e}_aligned"] = save(f"f{k:05d}_relit_{e}_aligned.png", (p_ * relit_scales[e]).clamp(0, 1))
            r[f"relit_{e}_gt"] = save(f"f{k:05d}_relit_{e}_gt.png", g_)
        rows.append(r)
    return {"frames": rows}


@torch.no_grad()
def relight_figures(
    avatar_dir: str | Path,
    subject_dir: str | Path,
    fig_dir: str | Path,
    steps: int = 8,
    f0_values: tuple[float, ...] = (0.04, 0.1, 0.2, 0.4, 0.8),
    views: tuple[float, ...] = (-60.0, -30.0, 0.0, 30.0, 60.0),
    backend: str = "auto",
    albedo_scale: list[float] | None = None,
) -> dict[str, Any]:
    """Figures of the relighting stage (avatar vs ground truth), written as PNGs to ``fig_dir``.

    * ``rotate``: the training environment rotated about +y in ``steps`` steps (one test frame);
    * ``f0``: rising Fresnel F0 (the avatar's G-buffer with F0 replaced, training lighting);
    * ``views``: novel views (camera orbiting the head at these yaw angles, training lighting).

    ``albedo_scale`` (``[3]``, e.g. :func:`evaluate_synthetic`'s ``albedo.scale``) multiplies the
    avatar's albedo first, removing the albedo / lighting scale ambiguity so that the avatar and the
    ground truth can be compared under the same environment.

    Returns ``{"rotate": [{"angle", "pred", "gt"}], "f0": [{"f0", "pred", "gt"}], "views": [...]}``
    (file names in ``fig_dir``).
    """
    from hravatar.avatar import Camera, load_avatar
    from hravatar.data import load_subject
    from hravatar.geometry import camera_centers, look_at
    from hravatar.report.html import encode_image
    from hravatar.shading.lighting import EnvironmentLighting
    from hravatar.shading.shade import shade
    from hravatar.synth.envmaps import make_lighting
    from hravatar.synth.render import SurfaceMaps, shade_maps
    from hravatar.synth.subject import rebuild_gt

    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    trained = load_avatar(avatar_dir, None)
    if albedo_scale is not None:
        a = (trained.gaussians.albedo * torch.tensor(albedo_scale, dtype=torch.float32)).clamp(1e-4, 1 - 1e-4)
        trained.gaussians.params["albedo"].data.copy_(torch.log(a / (1 - a)))
    gt = rebuild_gt(subject_dir)
    info = gt["info"]
    train_env = info["train_env"]
    ds = load_subject(subject_dir, "test", test_frames=int(info["test_frames"]))
    i = len(ds) // 2
    fr = ds[i]
    k = ds.frame_indices[i]
    H, W = fr.image.shape[:2]
    vm, K = fr.viewmat[None], fr.K[None]
    cam = Camera.of_frame(fr)

    def save(name: str, img: Tensor) -> str:
        (fig_dir / name).write_bytes(encode_image(img.clamp(0, 1)))
        return name

    _, base_light = make_lighting(
        train_env, int(info["settings"]["env_height"]), cache_dir=str(Path(subject_dir) / "gt" / "envmaps")
    )
    pre = _prefiltered_of(base_light)
    ggb = _gt_maps(gt, k, fr.viewmat, fr.K, (H, W), backend)
    pout = _render_pred(trained, fr, trained.lighting, backend=backend)
    res: dict[str, Any] = {"frame_index": k, "albedo_scale": albedo_scale, "rotate": [], "f0": [], "views": []}
    for s in progress(range(steps), desc="relight: rotating light"):
        ang = 360.0 * s / steps
        light = EnvironmentLighting(pre, rotation=ang)
        p = _render_pred(trained, fr, light, backend=backend).image[0]
        g = shade_maps(ggb, cam, light)["image"][0]
        res["rotate"].append(
            {"angle": ang, "pred": save(f"rot_{s:02d}_pred.png", p), "gt": save(f"rot_{s:02d}_gt.png", g)}
        )
    light = EnvironmentLighting(pre)
    if trained.mode == "pbr":
        for j, f0 in enumerate(f0_values):
            pgb = {
                "albedo": pout.albedo,
                "roughness": pout.roughness * pout.alpha,
                "f0": torch.full_like(pout.f0, f0) * pout.alpha,
                "normal": pout.normal,
                "alpha": pout.alpha,
            }
            p = shade(pgb, (vm, K), light, premultiplied=True)["image"][0]
            g = shade_maps(
                SurfaceMaps(ggb.albedo, ggb.roughness, torch.full_like(ggb.f0, f0), ggb.normal, ggb.depth, ggb.alpha),
                cam,
                light,
            )["image"][0]
            res["f0"].append({"f0": f0, "pred": save(f"f0_{j:02d}_pred.png", p), "gt": save(f"f0_{j:02d}_gt.png", g)})
    # novel views: orbit about the head's centre at the camera's distance
    c_world = camera_centers(fr.viewmat)
    target = torch.tensor([0.0, 0.03, 0.03]) + fr.translation
    rel = c_world - target
    dist = float(rel.norm())
    for j, yaw in enumerate(views):
        a = math.radians(yaw)
        eye = target + dist * torch.tensor([math.sin(a), rel[1].item() / dist, math.cos(a)])
        v = look_at(eye, target)
        p = _render_pred(trained, fr, light, viewmat=v, backend=backend).image[0]
        g = shade_maps(_gt_maps(gt, k, v, fr.K, (H, W), backend), cam.with_viewmat(v), light)["image"][0]
        res["views"].append(
            {"yaw": yaw, "pred": save(f"view_{j:02d}_pred.png", p), "gt": save(f"view_{j:02d}_gt.png", g)}
        )
    return res


def _prefiltered_of(light: Any) -> Any:
    """The :class:`PrefilteredEnvmap` behind an :class:`EnvironmentLighting` (to rotate it)."""
    from hravatar.shading.envmap_tools import PrefilteredEnvmap

    return PrefilteredEnvmap(
        light.irradiance_map, light.specular_levels(), light.level_roughness, light.equirect, dict(light.meta)
    )


def write_json(path: str | Path, data: Any) -> None:
    """JSON (NaN -> null) written atomically."""
    from hravatar.io.atomic import atomic_write_text
    from hravatar.report.html import jsonable

    atomic_write_text(Path(path), json.dumps(jsonable(data), indent=1) + "\n")
