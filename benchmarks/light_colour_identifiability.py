"""Oracle bound (issue 18): how much do a synthetic subject's frames say about the light's colour?

For ``hravatar synth`` subjects, :func:`hravatar.synth.identifiability.colour_signal`: with the true
geometry, materials and light shape known and only the light's colour and the albedo free, the RMS
change of the frames that a colour error of 1, 3 and 6 degrees makes (best and worst direction),
beside the frames' 8-bit rounding and, where a trained avatar folder ``SUBJECT__SUFFIX`` exists, the
avatar's own misfit of its training frames (``training.json`` ``final_psnr`` over the whole image,
converted to the foreground with the subject's mean mask coverage: an estimate).

    python benchmarks/light_colour_identifiability.py WORK/subject_s0_k0.15_warm ... \
        --avatar-suffix __spec_light_half --out benchmarks/results/light_colour_identifiability.json

Writes the JSON and a Markdown table beside it, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, write_record  # noqa: E402


def mask_coverage(subject: Path, step: int = 10) -> float:
    """Mean fraction of pixels with alpha > 0.5 in every ``step``-th frame of the subject."""
    from PIL import Image

    files = sorted((subject / "image").glob("*.png"))[::step]
    return float(np.mean([(np.asarray(Image.open(f))[..., 3] > 127).mean() for f in files]))


def row(subject: Path, suffix: str, frame_step: int) -> dict:
    from hravatar.synth.identifiability import colour_signal

    r = colour_signal(subject, frame_step)
    av = subject.parent / f"{subject.name}{suffix}"
    if suffix and (av / "training.json").is_file():
        psnr = float(json.loads((av / "training.json").read_text())["final_psnr"])
        cov = mask_coverage(subject)
        r["avatar"] = av.name
        r["avatar_train_psnr_db"] = psnr
        r["mask_coverage"] = cov
        r["avatar_train_rms_foreground_est"] = 10 ** (-psnr / 20) / math.sqrt(max(cov, 1e-6))
        m = av / "metrics.json"
        if m.is_file():
            r["avatar_albedo_chroma_error_deg"] = json.loads(m.read_text())["headline"].get("albedo_chroma_error_deg")
    return r


def table(rows: list[dict]) -> str:
    head = ("| subject | frame RMS | specular share | not diffuse-like | 1 deg: residual RMS | 3 deg | 6 deg | "
            "8-bit rounding | avatar's training misfit (fg, est.) | avatar's albedo chroma err |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    e = "{:.1e}".format

    def rng(r: dict, k: str) -> str:
        b = r["by_error_deg"][k]
        return f"{e(b['residual_rms_min'])}-{e(b['residual_rms_max'])}"

    return head + "".join(
        f"| {r['subject']} | {r['frame_rms']:.3f} | {r['specular_share_rms']:.2f} | "
        f"{r['specular_not_diffuse_like_share_rms']:.2f} | {rng(r, '1')} | {rng(r, '3')} | {rng(r, '6')} | "
        f"{e(r['quantisation_rms'])} | "
        + (f"{e(r['avatar_train_rms_foreground_est'])} ({r['avatar_train_psnr_db']:.1f} dB) | "
           if "avatar_train_rms_foreground_est" in r else "- | ")
        + (f"{r['avatar_albedo_chroma_error_deg']:.2f} |\n" if r.get("avatar_albedo_chroma_error_deg") is not None
           else "- |\n")
        for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("subjects", nargs="+", type=Path, help="hravatar synth subject folders")
    ap.add_argument("--avatar-suffix", default="__spec_light_half",
                    help="trained avatar folder = subject folder name + this suffix ('' for none)")
    ap.add_argument("--frame-step", type=int, default=3, help="use every N-th frame")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "light_colour_identifiability.json")
    ap.add_argument("--note", default="", help="stored in the JSON")
    a = ap.parse_args()
    torch.set_num_threads(1)
    before = os.getloadavg()
    rows = []
    for s in a.subjects:
        rows.append(row(s, a.avatar_suffix, a.frame_step))
        print(f"{s.name}: done", file=sys.stderr, flush=True)
    rec = {"what": __doc__.splitlines()[0], "note": a.note, "frame_step": a.frame_step, "rows": rows,
           "machine": machine(before, os.getloadavg())}
    write_record(a.out, rec, table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
