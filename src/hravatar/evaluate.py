"""Self-reenactment evaluation of a trained avatar on its subject's held-out (last) frames.

``hravatar evaluate AVATAR`` renders every test frame with the tracked camera, shape, head pose
and translation (expression and jaw from the avatar's encoder, as in the paper) and writes to
``AVATAR/eval/`` (or ``--output``).

The protocol, comparable with the paper's tables (:data:`PROTOCOL`):

* **test frames**: the last ``--test-frames N`` frames of the video (a fixed count; the paper uses
  350 on INSTA's clips and 500 on longer ones); by default the split training used, which is the
  last 15 % for clips under 2000 frames (see :func:`hravatar.data.default_test_count`);
* **resolution**: the subject's full image size (``--resolution full``), also when training ran
  with ``--downscale`` (the Gaussians are rendered at full size with the full-size camera and the
  training's pixel footprint, :func:`hravatar.avatar.render.footprint_eps2d`: the screen-space
  low-pass scaled by the squared focal ratio, so Gaussians thinner than a training pixel do not
  break up); ``--resolution train`` measures at the training size instead;
* **background**: the ground truth and the render composited over black (default) or white
  (``--background white``), full images (no crop, no mask);
* **metrics**: PSNR, SSIM (11x11 Gaussian, sigma 1.5), **LPIPS with VGG as the headline** (the
  official evaluation's network) and AlexNet as a second number, MAE x 100, averaged over frames;
  plus albedo LMSE and normal cosine similarity when the subject has synthetic ground truth.
* **pose** (``protocol.pose``): the tracked global head pose; ``--fit-pose STEPS`` refits each
  evaluated frame's global rotation + translation to that frame first, with the avatar frozen
  (:func:`hravatar.avatar.posefit.fit_global_pose`). That looks at the test image (analysis-by-
  synthesis tracking of the test frames), so it is off by default and never the headline.

Outputs:

* ``metrics.json``: the means above and ``protocol`` (what was measured, how);
* ``per_frame.csv``: the same per frame;
* ``images/NNNNN.png``: ground truth | render | error (| albedo | normal for shaded avatars).
* ``report.html``: one self-contained page: the metrics beside the paper's, a few frames' panels,
  the per-frame numbers (:mod:`hravatar.report.eval_report`).

If the LPIPS weights are not installed the LPIPS entries are ``null`` and ``metrics.json`` says
why; everything else is still reported.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_write_text
from hravatar.progress import log, progress


@dataclass
class EvaluateConfig:
    """Evaluate a trained avatar on its subject's test frames."""

    avatar: Annotated[Path, tyro.conf.Positional]
    """avatar folder written by `hravatar train`"""
    subject: Path | None = None
    """subject folder (default: the one the avatar was trained on)"""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """where to write metrics.json, per_frame.csv, images/ and report.html (default: AVATAR/eval)"""
    split: Literal["test", "train", "all"] = "test"
    """frames to evaluate (test = the held-out last frames)"""
    test_frames: int | None = None
    """size of the test split (default: the one used in training)"""
    max_frames: int = 0
    """evaluate at most this many frames, evenly spread (0: all)"""
    images: int = 8
    """side-by-side images to write, evenly spread (-1: every frame, 0: none)"""
    use_encoder: bool = True
    """expression and jaw from the encoder (the paper); False: the tracked ones"""
    lpips: bool = True
    """compute LPIPS (needs the weights from scripts/fetch_assets.py)"""
    resolution: Literal["full", "train"] = "full"
    """full: measure at the subject's image size even if training was downscaled (the paper's
    protocol); train: at the training resolution"""
    background: Literal["black", "white"] = "black"
    """background of ground truth and render"""
    fit_pose: int = 0
    """refit each evaluated frame's global head rotation + translation to that frame with this many
    Adam steps at the training resolution, the avatar frozen (0: off, the tracked pose). This looks at
    the test image: analysis-by-synthesis tracking of the 6 global pose numbers (the expression stays
    the encoder's); recorded in metrics.json protocol"""
    fit_pose_lr: float = 5e-4
    """Adam step of --fit-pose (radians / metres)"""
    device: str = "auto"
    """cpu, cuda, or auto"""
    backend: str = "auto"
    """rasterizer backend"""


def _mean(xs: list[float]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(sum(v) / len(v)) if v else None


#: what every metrics.json states about its measurement (the per-run values are filled in)
PROTOCOL = {
    "test_frames": "the last N frames of the video (a fixed count, --test-frames)",
    "metrics": "PSNR (dB), SSIM (11x11 Gaussian window, sigma 1.5), LPIPS v0.1 (VGG headline, AlexNet "
               "second; inputs scaled to [-1, 1]), MAE x 100, means over frames",
    "images": "full frames, ground truth and render composited over one background colour, no crop or mask",
    "expression": "from the avatar's encoder (as the paper), camera/shape/pose/translation tracked",
}


def eval_downscale(resolution: str, train_downscale: int) -> int:
    """The integer downscale at which to measure: 1 for ``"full"`` (the subject's size), the training
    factor for ``"train"``."""
    if resolution == "full":
        return 1
    if resolution == "train":
        return max(1, int(train_downscale))
    raise HRAvatarError(f"--resolution {resolution!r}: use full or train")


def over_background(image: torch.Tensor, alpha: torch.Tensor, background: str) -> torch.Tensor:
    """An image composited over black ``[H,W,3]`` with its ``alpha [H,W,1]`` -> the same over
    ``background`` (``"black"`` or ``"white"``)."""
    if background == "black":
        return image
    if background == "white":
        return image + (1.0 - alpha)
    raise HRAvatarError(f"--background {background!r}: use black or white")


def _overlaps_training(ds: Any, split: str, train_test_frames: int | None) -> int:
    """How many evaluated frames training saw (a larger ``--test-frames`` than training's, or
    ``--split train/all``)."""
    from hravatar.data import default_test_count

    if not len(ds):
        return 0
    idx = [int(i) for i in ds.frame_indices]
    n_all = idx[-1] + 1 if split == "test" else None
    if n_all is None:
        from hravatar.data import load_subject

        n_all = len(load_subject(ds.root, "all"))
    n_test = default_test_count(n_all) if train_test_frames is None else int(train_test_frames)
    return sum(1 for i in idx if i < n_all - n_test)


def _render_fitted(ta: Any, frame: Any, fr: Any, cfg: EvaluateConfig, dev: Any) -> tuple[Any, dict[str, float]]:
    """Render ``fr`` (the evaluated, device-resident frame) after refitting its global pose to
    ``frame`` (the full-size sample) at the training resolution; returns (render, per-frame fit numbers)."""
    from hravatar.avatar import Camera
    from hravatar.avatar.posefit import fit_global_pose
    from hravatar.avatar.render import footprint_eps2d
    from hravatar.data import downscale_frame

    small = downscale_frame(frame, max(1, ta.settings.downscale)).to(dev)
    with torch.no_grad():
        p = ta.frame_params(fr, cfg.use_encoder)
    cam = Camera.of_frame(small)
    q, off, losses = fit_global_pose(ta.gaussians, ta.lighting, p, cam, small.image, small.mask, ta.mode,
                                     cfg.fit_pose, cfg.fit_pose_lr, footprint_eps2d(float(cam.K[0, 0]), ta.train_focal),
                                     cfg.backend)
    r = ta.render(q, Camera.of_frame(fr), backend=cfg.backend)
    fit = {"fit_rotation_deg": float(off[:3].norm()) * 180.0 / math.pi,
           "fit_translation_mm": float(off[3:].norm()) * 1000.0,
           "fit_loss_first": losses[0] if losses else float("nan"),
           "fit_loss_last": losses[-1] if losses else float("nan")}
    return r, fit


def evaluate_avatar(cfg: EvaluateConfig) -> dict[str, Any]:
    """Run the evaluation of ``cfg``; returns the ``metrics.json`` content (also written to disk)."""
    from hravatar.avatar import load_avatar
    from hravatar.avatar.render import footprint_eps2d
    from hravatar.data import downscale_frame, downscale_image, load_subject
    from hravatar.data.format import write_png
    from hravatar.device import resolve_device
    from hravatar.metrics import lmse, load_lpips, lpips_available, mae100, normal_cosine, psnr, ssim
    from hravatar.report.eval_report import report_frames, shrink_panel, write_eval_report
    from hravatar.report.plots import error_map, hstack, normal_to_rgb

    if cfg.fit_pose < 0:
        raise HRAvatarError(f"--fit-pose: {cfg.fit_pose} is out of range; use 0 (off) or a number of steps")
    if not (math.isfinite(cfg.fit_pose_lr) and cfg.fit_pose_lr > 0):
        raise HRAvatarError(f"--fit-pose-lr: {cfg.fit_pose_lr} is out of range; use a positive number")
    dev = resolve_device(cfg.device)
    ta = load_avatar(cfg.avatar, dev)
    subject = cfg.subject or (Path(ta.info["subject"]) if ta.info.get("subject") else ta.settings.subject)
    test_frames = cfg.test_frames if cfg.test_frames is not None else ta.settings.test_frames
    ds = load_subject(subject, cfg.split, test_frames)
    out = Path(cfg.output) if cfg.output is not None else Path(cfg.avatar) / "eval"
    (out / "images").mkdir(parents=True, exist_ok=True)
    idx = list(range(len(ds)))
    if cfg.max_frames and len(idx) > cfg.max_frames:
        idx = sorted({int(round(x)) for x in np.linspace(0, len(ds) - 1, cfg.max_frames)})
    n_img = len(idx) if cfg.images < 0 else min(cfg.images, len(idx))
    img_set = set(idx[int(round(x))] for x in np.linspace(0, len(idx) - 1, n_img)) if n_img else set()

    lp_nets: dict[str, Any] = {}
    lp_note = None
    if cfg.lpips:
        for net in ("alex", "vgg"):
            if lpips_available(net):
                lp_nets[net] = load_lpips(net, dev)
        missing = [n for n in ("alex", "vgg") if n not in lp_nets]
        if missing:
            lp_note = (f"LPIPS ({', '.join(missing)}) not computed: weights not installed; "
                       "run `python scripts/fetch_assets.py`")
            log.warning(lp_note)
    else:
        lp_note = "LPIPS not computed (--no-lpips)"
    has_gt = ds.gt_dir is not None
    d_eval = eval_downscale(cfg.resolution, ta.settings.downscale)
    overlap = _overlaps_training(ds, cfg.split, ta.settings.test_frames)
    if overlap:
        log.warning("%d of the evaluated frames were training frames (training held out fewer); "
                    "the numbers are not held-out numbers", overlap)
    rows: list[dict[str, Any]] = []
    shown: list[tuple[str, list[tuple[str, Any]]]] = []  # small panels of a few imaged frames, for report.html
    shown_set = report_frames(img_set)
    t0 = time.perf_counter()
    render_s = 0.0
    for i in progress(idx, desc="evaluate"):
        fr = downscale_frame(ds[i], d_eval).to(dev)
        t1 = time.perf_counter()
        fit: dict[str, float] = {}
        if cfg.fit_pose:
            r, fit = _render_fitted(ta, ds[i], fr, cfg, dev)
        else:
            r = ta.render_frame(fr, use_encoder=cfg.use_encoder, backend=cfg.backend)
        render_s += time.perf_counter() - t1
        img = over_background(r.image[0], r.alpha[0], cfg.background).clamp(0, 1)
        gt = over_background(fr.image, fr.mask, cfg.background).clamp(0, 1)
        row: dict[str, Any] = {"frame": ds.frame_indices[i], "name": fr.name,
                               "psnr": float(psnr(img, gt)[0]), "ssim": float(ssim(img, gt)[0]),
                               "mae100": float(mae100(img, gt)[0]), **fit}
        with torch.no_grad():
            for net, m in lp_nets.items():
                row[f"lpips_{net}"] = float(m(img[None], gt[None])[0])
        if has_gt and r.albedo is not None:
            d = d_eval
            gm = ds.gt_map(i, "mask")
            gm = downscale_image(ds[i].mask if gm is None else gm, d).to(dev)
            galb = ds.gt_map(i, "albedo")
            if galb is not None:
                galb = downscale_image(galb, d).to(dev)
                row["albedo_lmse"] = float(lmse(r.albedo[0].clamp(0, 1), galb, gm)[0])
            gn = ds.gt_map(i, "normal")
            if gn is not None:
                gn = downscale_image(gn, d).to(dev)
                n_cam = torch.einsum("ij,hwj->hwi", fr.viewmat[:3, :3], r.normal[0])
                m = gm * (r.alpha[0] > 0.5)
                row["normal_cosine"] = float(normal_cosine(n_cam, gn, m)[0])
        rows.append(row)
        if i in img_set:
            panels = [gt, img, error_map(img, gt)]
            if r.albedo is not None:
                panels += [r.albedo[0].clamp(0, 1), normal_to_rgb(r.normal[0], r.alpha[0])]
            write_png(out / "images" / f"{fr.name}.png",
                      (np.clip(hstack(panels), 0, 1) * 255 + 0.5).astype(np.uint8))
            if i in shown_set:
                caps = ("ground truth", "render", "error", "albedo", "normal")
                shown.append((fr.name, [(c, shrink_panel(x)) for c, x in zip(caps, panels, strict=False)]))
    keys = ["psnr", "ssim", "lpips_vgg", "lpips_alex", "mae100", "albedo_lmse", "normal_cosine"]
    metrics: dict[str, Any] = {k: _mean([r.get(k) for r in rows]) for k in keys}
    metrics.update(
        num_frames=len(rows), split=cfg.split, subject=str(subject), avatar=str(cfg.avatar),
        image_size=list(img.shape[:2]) if rows else None,
        use_encoder=cfg.use_encoder, background=cfg.background,
        protocol=PROTOCOL | {
            "num_test_frames": len(rows) if cfg.split == "test" else None,
            "split": cfg.split,
            "resolution": cfg.resolution,
            "image_size": list(img.shape[:2]) if rows else None,
            "train_downscale": int(ta.settings.downscale),
            "render_eps2d_px2": footprint_eps2d(float(fr.K[0, 0]), ta.train_focal) if rows else None,
            "frames_seen_in_training": overlap,
            "background": cfg.background,
            "lpips_headline": "vgg",
            "pose": ("tracked" if not cfg.fit_pose else
                     f"global rotation + translation refitted to each evaluated frame (--fit-pose {cfg.fit_pose}: "
                     f"Adam, step {cfg.fit_pose_lr:g}, at the training resolution, L1 colour + L1 alpha vs the "
                     "matte, avatar frozen; looks at the test image: analysis-by-synthesis tracking)"),
        },
        fit_pose=None if not cfg.fit_pose else {
            k: _mean([r.get(k) for r in rows]) for k in ("fit_rotation_deg", "fit_translation_mm")},
        render_fps=len(rows) / render_s if render_s > 0 else None, seconds=round(time.perf_counter() - t0, 1),
        lpips_note=lp_note,
        ground_truth="albedo/normal from gt/" if has_gt else None,
    )
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    buf = io.StringIO()
    cols = list(dict.fromkeys(k for r in rows for k in r))
    wr = csv.DictWriter(buf, fieldnames=cols, restval="")
    wr.writeheader()
    wr.writerows(rows)
    atomic_write_text(out / "per_frame.csv", buf.getvalue())
    write_eval_report(out / "report.html", metrics, rows, shown)
    lv, la = metrics["lpips_vgg"], metrics["lpips_alex"]
    log.info("%d %s frames at %s, %s background: PSNR %.2f  SSIM %.4f  LPIPS(VGG) %s  (AlexNet %s)  MAE* %.3f "
             "-> %s", len(rows), cfg.split, "x".join(map(str, metrics["image_size"] or [])), cfg.background,
             metrics["psnr"] or float("nan"), metrics["ssim"] or float("nan"),
             "n/a" if lv is None else f"{lv:.4f}", "n/a" if la is None else f"{la:.4f}",
             metrics["mae100"] or float("nan"), out / "metrics.json")
    return metrics


def evaluate(cfg: EvaluateConfig) -> int:
    """CLI entry: evaluate and write the outputs; returns 0."""
    if not Path(cfg.avatar).is_dir():
        raise HRAvatarError(f"{cfg.avatar}: avatar folder not found; train one with `hravatar train`")
    evaluate_avatar(cfg)
    return 0
