"""Where does a trained avatar lose quality on its subject? Resolution, held-out frames or expressions.

    python benchmarks/real_clip_diagnose.py AVATAR [--frames 6] [--tag NAME]

For a few evenly spread frames of the held-out split and of the training split, measures PSNR,
SSIM and LPIPS (VGG) at the subject's full resolution against the full-resolution ground truth, for:

* ``render full``: the avatar rendered at full size with the training's pixel footprint (what
  ``hravatar evaluate`` does, :func:`hravatar.avatar.render.footprint_eps2d`);
* ``render full, plain eps2d``: the same with gsplat's fixed 0.3 px^2 low-pass (the previous
  behaviour: Gaussians thinner than a training pixel break up when rendered larger);
* ``render train-res, upsampled``: rendered at the training size, bicubically upsampled;
* ``render full, tracked expression``: the tracked expression and jaw instead of the encoder's;
* ``ground truth at train-res, upsampled``: the ceiling of a perfect avatar at the training
  resolution (what the training images can still say about the full-size ones).

Writes ``benchmarks/results/real_clip_diagnose[-TAG].json`` (numbers, machine, load average, the
1-thread calibration of ``benchmarks/machine.py`` before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``[H,W,C]`` to ``size`` (clamped to [0, 1])."""
    y = F.interpolate(x.permute(2, 0, 1)[None], size=size, mode="bicubic", align_corners=False)
    return y[0].permute(1, 2, 0).clamp(0, 1)


def diagnose(avatar: Path, frames: int) -> dict:
    from hravatar.avatar import load_avatar
    from hravatar.avatar.render import EPS2D
    from hravatar.data import downscale_frame
    from hravatar.evaluate import over_background
    from hravatar.metrics import load_lpips, lpips_available, psnr, ssim

    ta = load_avatar(avatar, "cpu")
    d = max(1, ta.settings.downscale)
    lp = load_lpips("vgg", torch.device("cpu")) if lpips_available("vgg") else None
    out: dict = {}
    for split in ("test", "train"):
        ds = ta.subject(split)
        idx = sorted({int(round(x)) for x in np.linspace(0, len(ds) - 1, frames)})
        acc: dict[str, list[tuple[float, float, float]]] = {}

        def add(key: str, img: torch.Tensor, gt: torch.Tensor, acc=acc) -> None:
            with torch.no_grad():
                v = float(lp(img[None], gt[None])[0]) if lp is not None else float("nan")
            acc.setdefault(key, []).append((float(psnr(img, gt)[0]), float(ssim(img, gt)[0]), v))

        for i in idx:
            fr = ds[i]
            size = tuple(fr.image.shape[:2])
            gt = over_background(fr.image, fr.mask, "black").clamp(0, 1)

            def shot(r) -> torch.Tensor:
                return over_background(r.image[0], r.alpha[0], "black").clamp(0, 1)

            add("render full", shot(ta.render_frame(fr)), gt)
            add("render full, plain eps2d", shot(ta.render_frame(fr, eps2d=EPS2D)), gt)
            if ta.encoder is not None:
                add("render full, tracked expression", shot(ta.render_frame(fr, use_encoder=False)), gt)
            if d > 1:
                small = downscale_frame(fr, d)
                add("render train-res, upsampled", _up(shot(ta.render_frame(small)), size), gt)
                add("ground truth at train-res, upsampled",
                    _up(over_background(small.image, small.mask, "black").clamp(0, 1), size), gt)
        out[split] = {k: dict(zip(("psnr", "ssim", "lpips_vgg"), np.mean(v, 0).round(4).tolist(), strict=True))
                      | {"frames": len(v)} for k, v in acc.items()}
    return {"avatar": str(avatar), "train_downscale": d, "train_iterations": ta.info.get("iterations"),
            "points": ta.info.get("points"), "results": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("avatar", type=Path)
    ap.add_argument("--frames", type=int, default=6, help="frames per split, evenly spread")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from machine import calibration, machine

    cal = calibration(3)
    load0, t0 = os.getloadavg(), time.time()
    rec = diagnose(a.avatar, a.frames)
    rec["calibration_before"], rec["calibration_after"] = cal, calibration(3)

    rec["seconds"] = round(time.time() - t0, 1)
    rec["machine"] = machine(load0, os.getloadavg())
    for split, rows in rec["results"].items():
        print(f"\n{split} frames ({a.avatar}, trained at 1/{rec['train_downscale']} size)")
        print("| rendering | PSNR dB | SSIM | LPIPS VGG |\n|---|---|---|---|")
        for k, m in rows.items():
            print(f"| {k} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['lpips_vgg']:.3f} |")
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / ("real_clip_diagnose" + (f"-{a.tag}" if a.tag else "") + ".json")).write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
