"""How well does a trained avatar reproduce its subject's outline? Alpha against matte, error split.

    python benchmarks/real_clip_outline.py AVATAR [AVATAR ...] [--frames 8] [--tag NAME]

For evenly spread held-out frames (``--split train``: training frames), the avatar is rendered at
the subject's full resolution (as ``hravatar evaluate`` does: training footprint, encoder expressions,
black background) and compared
with the ground truth composited over black with its matte. Per avatar, the mean over the frames of:

* ``alpha_l1``: mean |rendered alpha - matte| over the image;
* ``silhouette_disagree_px``: pixels where exactly one of rendered alpha and matte is above 0.5;
* ``iou``: intersection over union of the two silhouettes (alpha > 0.5, matte > 0.5);
* ``err_share_band_in`` / ``err_share_band_out``: share of the squared colour error within 6 px
  inside / outside the matte's silhouette; ``err_share_low``: share in the lowest fifth of the
  matte's rows (neck, chin, the cut); ``signed_band_in``: mean (render - ground truth) in the
  inner band (negative: the render is too dark / too transparent at the outline);
* ``psnr``: over the whole image;
* ``best_shift_px`` / ``disagree_after_shift_px``: the image translation (up to 8 px, 1 px steps)
  of the rendered silhouette that best matches the matte's, its length and the disagreeing pixels
  left after it (how much of the outline error a per-frame 2D misalignment, e.g. tracking jitter,
  explains).

Writes ``benchmarks/results/real_clip_outline[-TAG].json`` (numbers, machine, load average).
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
BAND_PX = 6
SHIFT_PX = 8


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``m`` translated by ``(dy, dx)`` pixels, zero-filled (no wrap-around)."""
    out = np.zeros_like(m)
    H, W = m.shape
    out[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = m[max(-dy, 0):H + min(-dy, 0),
                                                                  max(-dx, 0):W + min(-dx, 0)]
    return out


def outline_stats(alpha: np.ndarray, matte: np.ndarray, img: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Outline numbers of one frame. ``alpha``, ``matte``: ``[H,W]`` in [0,1]; ``img``, ``gt``:
    ``[H,W,3]`` in [0,1] over black. Returns the per-frame numbers described in the module doc."""
    import cv2

    fg = (matte > 0.5).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    band_out = (cv2.dilate(fg, k, iterations=BAND_PX) - fg) > 0
    band_in = (fg - cv2.erode(fg, k, iterations=BAND_PX)) > 0
    sq = ((img - gt) ** 2).sum(-1)
    tot = max(float(sq.sum()), 1e-12)
    rows = np.nonzero(fg.any(1))[0]
    low = np.zeros_like(fg, bool)
    if rows.size:
        low[int(rows.max() - 0.2 * (rows.max() - rows.min())):] = True
    ra, ma = alpha > 0.5, matte > 0.5
    union = max(int((ra | ma).sum()), 1)
    mse = float(sq.mean() / 3)
    best = (int((ra ^ ma).sum()), 0, 0)
    for dy in range(-SHIFT_PX, SHIFT_PX + 1):
        for dx in range(-SHIFT_PX, SHIFT_PX + 1):
            sh = _shift(ra, dy, dx)
            best = min(best, (int((sh ^ ma).sum()), dy, dx))
    return {
        "alpha_l1": float(np.abs(alpha - matte).mean()),
        "silhouette_disagree_px": int((ra ^ ma).sum()),
        "iou": float((ra & ma).sum() / union),
        "err_share_band_in": float(sq[band_in].sum() / tot),
        "err_share_band_out": float(sq[band_out].sum() / tot),
        "err_share_low": float(sq[low & (fg > 0)].sum() / tot),
        "signed_band_in": float((img - gt).mean(-1)[band_in].mean()) if band_in.any() else 0.0,
        "psnr": float(10 * np.log10(1.0 / max(mse, 1e-12))),
        "best_shift_px": float(np.hypot(best[1], best[2])),
        "disagree_after_shift_px": best[0],
    }


def measure(avatar: Path, frames: int, split: str = "test") -> dict:
    from hravatar.avatar import load_avatar
    from hravatar.evaluate import over_background

    ta = load_avatar(avatar, "cpu")
    ds = ta.subject(split)
    idx = sorted({int(round(x)) for x in np.linspace(0, len(ds) - 1, frames)})
    per = []
    with torch.no_grad():
        for i in idx:
            fr = ds[i]
            r = ta.render_frame(fr)
            img = over_background(r.image[0], r.alpha[0], "black").clamp(0, 1).numpy()
            gt = over_background(fr.image, fr.mask, "black").clamp(0, 1).numpy()
            per.append(outline_stats(r.alpha[0, ..., 0].clamp(0, 1).numpy(), fr.mask[..., 0].numpy(), img, gt))
    mean = {k: round(float(np.mean([p[k] for p in per])), 4) for k in per[0]}
    return {"avatar": str(avatar), "split": split, "iterations": ta.info.get("iterations"),
            "points": ta.info.get("points"), "frames": [ds[i].name for i in idx], "mean": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("avatars", type=Path, nargs="+")
    ap.add_argument("--frames", type=int, default=8, help="held-out frames, evenly spread")
    ap.add_argument("--split", choices=("test", "train"), default="test", help="frames to measure")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from machine import machine

    load0, t0 = os.getloadavg(), time.time()
    rec = {"benchmark": "real_clip_outline", "band_px": BAND_PX,
           "results": [measure(p, a.frames, a.split) for p in a.avatars]}
    rec["seconds"] = round(time.time() - t0, 1)
    rec["machine"] = machine(load0, os.getloadavg())
    keys = list(rec["results"][0]["mean"])
    print("| avatar | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for r in rec["results"]:
        print(f"| {Path(r['avatar']).name} | " + " | ".join(f"{r['mean'][k]}" for k in keys) + " |")
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / ("real_clip_outline" + (f"-{a.tag}" if a.tag else "") + ".json")).write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
