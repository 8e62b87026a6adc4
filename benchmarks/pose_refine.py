"""Per-frame pose refinement (training) and the test-time pose fit (evaluate --fit-pose), measured.

    python benchmarks/pose_refine.py synth [--size 64] [--iterations 150]
    python benchmarks/pose_refine.py collect NAME=EVAL_DIR ... --tag TAG

``synth``: on a tiny synthetic subject with *exact* tracking (tests/helpers/tiny_subject.py), train
with and without ``--pose-refine`` (same seed, same budget) and evaluate the held-out frames at the
training size: the refinement must not hurt where the poses are already right.
``collect``: put the ``metrics.json`` of finished ``hravatar evaluate`` runs (real clip: baseline,
pose-refined training, with and without ``--fit-pose``) in one table.

Writes ``benchmarks/results/pose_refine-synth.json`` or ``pose_refine-TAG.json`` (machine, load).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine  # noqa: E402

KEYS = ("psnr", "ssim", "lpips_vgg", "lpips_alex", "mae100")


def synth(size: int, iterations: int, frames: int, seeds: list[int]) -> dict:
    import torch

    sys.path.insert(0, str(HERE.parent / "tests"))
    from helpers.tiny_subject import make_tiny_subject
    from hravatar.evaluate import EvaluateConfig, evaluate_avatar
    from hravatar.train import TrainConfig, train

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subj = make_tiny_subject(Path(tmp) / "subject", size=size, frames=frames)
        for seed, on in ((s, o) for s in seeds for o in (False, True)):
            out = Path(tmp) / f"{'on' if on else 'off'}{seed}"
            t0 = time.time()
            train(TrainConfig(subject=subj, output=out, iterations=iterations, points_per_face=1, encoder="none",
                              hair_init="off", quiet=True, pose_refine=on, seed=seed))
            secs = time.time() - t0
            m = evaluate_avatar(EvaluateConfig(avatar=out, lpips=False, images=0, device="cpu"))
            info = json.loads((out / "training.json").read_text())
            rows.append({"seed": seed, "pose_refine": on, "train_s": round(secs, 1),
                         "final_train_psnr": info["final_psnr"],
                         "offsets": info["pose_refine"], **{k: m[k] for k in ("psnr", "ssim", "mae100")}})
            print(json.dumps(rows[-1]), flush=True)
    return {"subject": f"tiny synthetic (exact tracking), {size} px, {frames} frames", "iterations": iterations,
            "runs": rows}


def collect(pairs: list[str]) -> dict:
    """``NAME=EVAL_DIR`` (its metrics.json) or ``NAME=EVAL_DIR|OTHER_EVAL_DIR`` (EVAL_DIR's per-frame
    numbers averaged over the frames OTHER_EVAL_DIR evaluated: a paired subset)."""
    import csv

    runs = []
    for p in pairs:
        name, spec = p.split("=", 1)
        d, _, sub = spec.partition("|")
        m = json.loads((Path(d) / "metrics.json").read_text())
        row = {"run": name, "eval_dir": d, **{k: m.get(k) for k in KEYS}, "num_frames": m["num_frames"],
               "pose": m["protocol"].get("pose", "tracked"), "fit_pose": m.get("fit_pose"),
               "eval_seconds": m.get("seconds")}
        if sub:
            with open(Path(sub) / "per_frame.csv") as f:
                names = {r["name"] for r in csv.DictReader(f)}
            with open(Path(d) / "per_frame.csv") as f:
                sel = [r for r in csv.DictReader(f) if r["name"] in names]
            row.update({k: sum(float(r[k]) for r in sel) / len(sel) for k in KEYS}, num_frames=len(sel),
                       frames_of=sub)
        train_json = Path(d).parent / "training.json"
        if train_json.is_file():
            info = json.loads(train_json.read_text())
            row.update(points=info.get("points"), train_seconds=info.get("train_seconds"),
                       train_pose_refine=info.get("pose_refine"))
        runs.append(row)
    return {"runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("synth", "collect"))
    ap.add_argument("pairs", nargs="*", help="collect: NAME=EVAL_DIR or NAME=EVAL_DIR|SUBSET_EVAL_DIR")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--tag", default="real")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    load0, t0 = os.getloadavg(), time.time()
    rec = {"benchmark": "pose_refine", "note": a.note}
    rec.update(synth(a.size, a.iterations, a.frames, a.seeds) if a.what == "synth" else collect(a.pairs))
    rec["seconds"] = round(time.time() - t0, 1)
    rec["machine"] = machine(load0, os.getloadavg())
    for r in rec["runs"]:
        print("  ".join(f"{k}={v}" for k, v in r.items() if not isinstance(v, dict)))
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    name = "pose_refine-synth" if a.what == "synth" else f"pose_refine-{a.tag}"
    (res / f"{name}.json").write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
