"""Hair initialisation: train with and without ``--hair-init`` on synthetic long-hair and short-hair
subjects (and optionally a preprocessed real subject) and evaluate on the held-out frames.

    python benchmarks/hair_init.py --work hair_work --size 128 --frames 50 --iterations 400
    python benchmarks/hair_init.py --work hair_work --real subjects/me --downscale 4

Prints a table and writes ``benchmarks/results/hair_init[-TAG].json`` (per run: PSNR, SSIM, LPIPS
VGG/Alex, MAE*, initial and final points, hair-init statistics, train seconds, load average; the
machine and a 1-thread calibration). Every run is written as soon as it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import calibration, machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def synth_subject(work: Path, hair: str, size: int, frames: int) -> Path:
    from hravatar.synth.subject import SynthConfig, synthesize

    out = work / f"synth-{hair}-{size}-{frames}"
    if not (out / "gt" / "synth.json").is_file():
        synthesize(SynthConfig(out=out, size=size, frames=frames, hair=hair, overwrite=True))
    return out


def train_eval(subject: Path, out: Path, hair_init: str, a: argparse.Namespace) -> dict:
    from hravatar.evaluate import EvaluateConfig, evaluate_avatar
    from hravatar.train import TrainConfig, train

    load_before = [round(x, 2) for x in os.getloadavg()]
    t = time.time()
    train(TrainConfig(subject=subject, output=out, iterations=a.iterations, downscale=a.downscale, encoder=a.encoder,
                      threads=a.threads, hair_init=hair_init, overwrite=True, quiet=True, seed=a.seed))
    t_train = time.time() - t
    info = json.loads((out / "training.json").read_text())
    m = evaluate_avatar(EvaluateConfig(avatar=out, output=out / "eval", images=2, max_frames=a.eval_frames))
    return {
        "subject": str(subject), "hair_init": hair_init, "iterations": a.iterations, "train_s": round(t_train, 1),
        "points": info.get("points"), "initial_points": info.get("initial_points"),
        "train_psnr_last": info.get("final_psnr"),
        **{k: m.get(k) for k in ("psnr", "ssim", "lpips_vgg", "lpips_alex", "mae100", "num_frames", "image_size")},
        "load_avg_before": load_before, "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }


def table(runs: list[dict]) -> str:
    def f(x: float | None, d: int) -> str:
        return "-" if x is None else f"{x:.{d}f}"

    rows = ["| subject | hair init | iterations | points (start -> end) | PSNR | SSIM | LPIPS VGG | MAE* | train s "
            "| load |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rows.append(f"| {Path(r['subject']).name} | {r['hair_init']} | {r['iterations']} | "
                    f"{r.get('initial_points') or '-'} -> {r['points']} | {f(r['psnr'], 2)} | {f(r['ssim'], 3)} | "
                    f"{f(r['lpips_vgg'], 3)} | {f(r['mae100'], 2)} | {r['train_s']} | {r['load_avg_before'][0]} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for subjects and avatars")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--downscale", type=int, default=1)
    p.add_argument("--encoder", default="none", help="expression encoder (none: tracked expressions, fastest)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-frames", type=int, default=0, help="evaluate at most this many test frames (0: all)")
    p.add_argument("--hair", nargs="+", default=["long", "none"], help="synthetic subjects to run")
    p.add_argument("--real", type=Path, default=None, help="a preprocessed subject instead of the synthetic ones")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    from hravatar.progress import setup_logging

    setup_logging()
    load0 = os.getloadavg()
    rec: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                 "calibration_before": calibration()}
    name = "hair_init" + (f"-{a.tag}" if a.tag else "")
    a.work.mkdir(parents=True, exist_ok=True)
    subjects = [a.real] if a.real else [synth_subject(a.work, h, a.size, a.frames) for h in a.hair]
    runs = []
    for s in subjects:
        for hi in ("off", "on"):
            runs.append(train_eval(s, a.work / f"avatar-{s.name}-{hi}-{a.iterations}", hi, a))
            print(json.dumps(runs[-1]), flush=True)
            rec.update(runs=runs, machine=machine(load0, os.getloadavg()))
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / f"{name}.json").write_text(json.dumps(rec, indent=1))
    rec["calibration_after"] = calibration()
    rec["machine"] = machine(load0, os.getloadavg())
    (RESULTS / f"{name}.json").write_text(json.dumps(rec, indent=1))
    print(table(runs))


if __name__ == "__main__":
    main()
