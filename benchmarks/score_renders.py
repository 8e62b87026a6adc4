"""Score saved 8-bit renders against a subject's test frames (PSNR, SSIM, LPIPS VGG and AlexNet).

For renders made on another machine (e.g. a GPU without the 60 MB of LPIPS weights). There, pack
the render panels of ``hravatar evaluate --images -1`` (ground truth | render | error | ...) into
one small file; here, score it:

    python benchmarks/score_renders.py pack AVATAR/eval/images RENDERS.npz
    python benchmarks/score_renders.py score RENDERS.npz SUBJECT [--test-frames N] [--json out.json]

``RENDERS.npz`` holds ``names [F]`` (frame names, e.g. ``00184``) and ``renders [F,H,W,3]`` uint8
(over black). The ground truth is composited over black exactly as ``hravatar evaluate`` does; the
renders are 8-bit, so the numbers can differ from ``evaluate``'s (float renders) in the last digits.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import torch


def fail(msg: str) -> None:
    """One ``error:`` line on stderr, exit 2."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def pack(images: Path, out: Path) -> None:
    """The second panel (the render) of every ``images/*.png`` written by ``hravatar evaluate``."""
    from PIL import Image

    from hravatar.report.plots import hstack

    gap = inspect.signature(hstack).parameters["gap"].default  # the panels' separator, as evaluate writes
    names, crops = [], []
    for f in sorted(images.glob("*.png")):
        a = np.asarray(Image.open(f).convert("RGB"))
        h = a.shape[0]
        crops.append(a[:, h + gap:2 * h + gap])
        names.append(f.stem)
    if not names:
        fail(f"no images in {images}; run hravatar evaluate with --images -1")
    np.savez_compressed(out, names=np.array(names), renders=np.stack(crops))
    print(f"packed {len(names)} renders into {out}")


def score(a: argparse.Namespace) -> None:
    from hravatar.data import load_subject
    from hravatar.evaluate import over_background
    from hravatar.metrics import load_lpips, psnr, ssim

    z = np.load(a.renders)
    renders = {str(n): r for n, r in zip(z["names"], z["renders"], strict=True)}
    ds = load_subject(a.subject, "test", a.test_frames)
    nets = {n: load_lpips(n, "cpu") for n in ("vgg", "alex")}
    rows = []
    for i in range(len(ds)):
        fr = ds[i]
        if fr.name not in renders:
            fail(f"no render for test frame {fr.name} in {a.renders}; pack every test frame (--images -1)")
        img = torch.from_numpy(renders[fr.name]).float() / 255.0
        gt = over_background(fr.image, fr.mask, "black").clamp(0, 1)
        row = {"name": fr.name, "psnr": float(psnr(img, gt)[0]), "ssim": float(ssim(img, gt)[0])}
        with torch.no_grad():
            for n, m in nets.items():
                row[f"lpips_{n}"] = float(m(img[None], gt[None])[0])
        rows.append(row)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "lpips_vgg", "lpips_alex")}
    out = {"renders": a.renders.name, "frames": len(rows), **mean, "per_frame": rows}
    print(json.dumps(mean))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="render panels of evaluate's images -> one npz")
    p.add_argument("images", type=Path)
    p.add_argument("out", type=Path)
    s = sub.add_parser("score", help="metrics of packed renders against the subject")
    s.add_argument("renders", type=Path)
    s.add_argument("subject", type=Path)
    s.add_argument("--test-frames", type=int, default=None, help="held-out last frames (default: last 15%%)")
    s.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.images, a.out)
    else:
        score(a)


if __name__ == "__main__":
    main()
