"""``eval/report.html``: one self-contained page of an avatar's evaluation (``hravatar evaluate``).

The metrics with the protocol they were measured under, the paper's numbers beside them (for
orientation: another clip, another schedule), the per-frame numbers, and side-by-side panels of
some evaluated frames (ground truth | render | error | albedo | normal), every image embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hravatar.report.html import ImageLike, Report

#: HRAvatar (CVPR 2025), Table 1: INSTA's wojtek_1 and the average over INSTA's subjects
#: (512x512, torso removed, 30k iterations on a GPU).
PAPER = {
    "wojtek_1": {"psnr": 31.26, "ssim": 0.959, "lpips_vgg": 0.036},
    "average": {"psnr": 30.36, "ssim": 0.948, "lpips_vgg": 0.057, "mae100": 0.845},
}
#: frames shown in the report at most (evenly spread over the frames that have images)
MAX_FRAMES = 8
#: panels are shown (and embedded) at most this tall, in pixels
PANEL_HEIGHT = 256


def report_frames(imaged: Sequence[int]) -> set[int]:
    """The (at most :data:`MAX_FRAMES`, evenly spread) of the ``imaged`` frame indices the page shows."""
    ids = sorted(imaged)
    if not ids:
        return set()
    return {ids[int(round(x))] for x in np.linspace(0, len(ids) - 1, min(MAX_FRAMES, len(ids)))}


def shrink_panel(img: ImageLike) -> np.ndarray:
    """``img`` (float [H,W,C] in [0,1], numpy or torch) box-downscaled to at most PANEL_HEIGHT rows."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    k = max(1, int(np.ceil(a.shape[0] / PANEL_HEIGHT)))
    if k > 1:
        h, w = a.shape[0] // k * k, a.shape[1] // k * k
        a = a[:h, :w].reshape(h // k, k, w // k, k, -1).mean((1, 3))
    return a


def write_eval_report(path: Path, metrics: dict[str, Any], rows: Sequence[dict[str, Any]],
                      panels: Sequence[tuple[str, Sequence[tuple[str, ImageLike]]]]) -> Path:
    """Write the evaluation page to ``path`` (atomically).

    Args:
        metrics: the content of ``metrics.json`` (means, protocol, subject, avatar).
        rows: per-frame numbers (``frame``, ``psnr``, ``ssim``, ...), as ``per_frame.csv``.
        panels: ``[(frame name, [(caption, image [h,w,3] in [0,1]), ...]), ...]`` of the frames to
            show (:func:`report_frames`), each image already shrunk (:func:`shrink_panel`).
    """
    p = metrics.get("protocol") or {}
    rep = Report(f"Evaluation of {Path(str(metrics.get('avatar', ''))).name}",
                 f"subject {metrics.get('subject')}; {metrics.get('num_frames')} {metrics.get('split')} frames")
    size = "x".join(map(str, p.get("image_size") or []))
    rep.section("Metrics", f"Frames at {p.get('resolution')} resolution ({size}),"
                f" {p.get('background')} background, pose: {p.get('pose')}. LPIPS with VGG is the headline, as in "
                "the paper's evaluation. The paper's rows are for orientation only: another clip, 350 test "
                "frames, 30k iterations on a GPU.")
    keys = ("psnr", "ssim", "lpips_vgg", "lpips_alex", "mae100")
    table = [{"": "this avatar", **{k: metrics.get(k) for k in keys}}]
    table += [{"": f"paper, INSTA {name}", **{k: v.get(k) for k in keys}} for name, v in PAPER.items()]
    rep.table(table, ["", *keys])
    if metrics.get("lpips_note"):
        rep.paragraph(str(metrics["lpips_note"]))
    if panels:
        rep.section("Frames", "Ground truth | render | error (brighter = larger) | albedo | normal, "
                    "for shaded avatars; full-size panels are in images/.")
        rep.image_rows(panels, height=PANEL_HEIGHT)
    rep.section("Per frame")
    rep.table(list(rows))
    return rep.write(path)
