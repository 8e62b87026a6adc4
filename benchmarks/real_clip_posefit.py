"""How much of a trained avatar's error on a frame is its tracked head pose? Refit the pose, re-measure.

    python benchmarks/real_clip_posefit.py AVATAR [--frames 3] [--steps 30] [--split test] [--tag NAME]

A diagnostic, not part of evaluation. For evenly spread frames, the avatar's global head rotation
and translation (``FrameParams.pose[:, 0]``, ``translation``) are refitted to the frame at the
training resolution (Adam, L1 colour + L1 alpha against the matte, everything else frozen), then
the frame is rendered at full resolution with the tracked and with the refitted pose and both are
compared with the ground truth over black (PSNR, and the silhouette pixels that disagree). The
difference bounds what per-frame pose refinement (in training and on the test frames) could gain.

Writes ``benchmarks/results/real_clip_posefit[-TAG].json`` (numbers, machine, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def refit(ta, fr_small, p, steps: int, lr: float) -> tuple:
    """Refit ``p``'s global rotation and translation to ``fr_small``; returns (params, first, last loss)."""
    from hravatar.avatar import Camera, render
    from hravatar.avatar.render import footprint_eps2d

    rot = p.pose[:, 0].clone().requires_grad_(True)
    tr = p.translation.clone().requires_grad_(True)
    opt = torch.optim.Adam([rot, tr], lr=lr)
    cam = Camera.of_frame(fr_small)
    eps = footprint_eps2d(float(cam.K[0, 0]), ta.train_focal)
    losses = []
    for _ in range(steps):
        q = p.clone()
        q.pose = torch.cat([rot[:, None], p.pose[:, 1:]], 1)
        q.translation = tr
        out = render(ta.gaussians, ta.lighting, q, cam, ta.mode, eps2d=eps)
        loss = (out.image[0] - fr_small.image).abs().mean() + (out.alpha[0] - fr_small.mask).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    q = p.clone()
    q.pose = torch.cat([rot.detach()[:, None], p.pose[:, 1:]], 1)
    q.translation = tr.detach()
    return q, losses[0], losses[-1]


def measure(avatar: Path, frames: int, steps: int, split: str, lr: float) -> dict:
    from hravatar.avatar import Camera, load_avatar
    from hravatar.data import downscale_frame
    from hravatar.evaluate import over_background
    from hravatar.metrics import psnr

    ta = load_avatar(avatar, "cpu")
    for v in ta.gaussians.params.values():
        v.requires_grad_(False)
    d = max(1, ta.settings.downscale)
    ds = ta.subject(split)
    idx = sorted({int(round(x)) for x in np.linspace(0, len(ds) - 1, frames)})
    rows = []
    for i in idx:
        fr = ds[i]
        with torch.no_grad():
            p = ta.frame_params(fr)
        q, l0, l1 = refit(ta, downscale_frame(fr, d), p, steps, lr)
        gt = over_background(fr.image, fr.mask, "black").clamp(0, 1)
        row = {"frame": fr.name, "fit_loss_first": round(l0, 5), "fit_loss_last": round(l1, 5),
               "rotation_change_deg": round(float((q.pose[0, 0] - p.pose[0, 0]).norm()) * 180 / np.pi, 3),
               "translation_change_mm": round(float((q.translation - p.translation).norm()) * 1000, 2)}
        for key, prm in (("tracked", p), ("refit", q)):
            r = ta.render(prm, Camera.of_frame(fr))
            img = over_background(r.image[0], r.alpha[0], "black").clamp(0, 1)
            dis = int(((r.alpha[0] > 0.5) ^ (fr.mask > 0.5)).sum())
            row[key] = {"psnr": round(float(psnr(img, gt)[0]), 3), "silhouette_disagree_px": dis}
        rows.append(row)
        print(json.dumps(row), flush=True)
    mean = {k: round(float(np.mean([r[k]["psnr"] for r in rows])), 3) for k in ("tracked", "refit")}
    return {"avatar": str(avatar), "split": split, "steps": steps, "lr": lr, "frames": rows, "mean_psnr": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("avatar", type=Path)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam step (radians / metres)")
    ap.add_argument("--split", choices=("test", "train"), default="test")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from machine import machine

    load0, t0 = os.getloadavg(), time.time()
    rec = {"benchmark": "real_clip_posefit", **measure(a.avatar, a.frames, a.steps, a.split, a.lr)}
    rec["seconds"] = round(time.time() - t0, 1)
    rec["machine"] = machine(load0, os.getloadavg())
    print(json.dumps(rec["mean_psnr"]))
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / ("real_clip_posefit" + (f"-{a.tag}" if a.tag else "") + ".json")).write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
