"""Benchmark: paired training variants on one preprocessed subject, same budget, same seed.

    python benchmarks/train_ablation.py --subject SUBJECT --iterations 400 --downscale 2 --work DIR \\
        --variant base= --variant perc01="--loss.perceptual 0.1" [--jobs 2] [--tag NAME]

Each ``--variant NAME=OPTIONS`` trains ``hravatar train SUBJECT -o DIR/NAME --iterations N
--downscale D --threads 1 OPTIONS`` (a separate process, under ``nice -n 19``) and evaluates it with
``hravatar evaluate`` (the paper-comparable protocol: held-out last frames at full resolution, black
background, LPIPS VGG as the headline and AlexNet beside it). A variant whose ``DIR/NAME/eval/metrics.json``
already exists is not retrained (``--reuse``, default on), so a series can be extended. Writes
``benchmarks/results/train_ablation[-TAG].json`` (per variant: options, metrics, train seconds, points,
load average before / after; machine: CPU model and flags, load average, a 1-thread matmul
calibration) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from real_clip import calibration, fmt, machine  # noqa: E402


def _cli(args: list[str]) -> list[str]:
    return ["nice", "-n", "19", sys.executable, "-m", "hravatar.cli", *args]


def run_variant(a: argparse.Namespace, name: str, opts: str) -> dict:
    """Train and evaluate one variant (or reuse its results); the record of the table."""
    out = Path(a.work) / name
    rec: dict = {"name": name, "options": opts}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    metrics = out / "eval" / "metrics.json"
    if not (a.reuse and metrics.is_file()):
        rec["load_avg_before"] = [round(x, 2) for x in os.getloadavg()]
        t = time.time()
        subprocess.run(_cli(["train", str(a.subject), "-o", str(out), "--iterations", str(a.iterations),
                             "--downscale", str(a.downscale), "--threads", "1", "--quiet", "--overwrite",
                             *shlex.split(opts)]), check=True, env=env)
        rec["train_wall_s"] = round(time.time() - t, 1)
        rec["load_avg_after_train"] = [round(x, 2) for x in os.getloadavg()]
        subprocess.run(_cli(["evaluate", str(out), "--images", "4"]), check=True, env=env,
                       stdout=subprocess.DEVNULL)
    else:
        rec["reused"] = True
    m = json.loads(metrics.read_text())
    info = json.loads((out / "training.json").read_text())
    mm = m.get("metrics", m)
    rec.update({k: mm.get(k) for k in ("psnr", "ssim", "lpips_vgg", "lpips_alex", "mae100")})
    rec.update(points=info.get("points"), train_seconds=info.get("train_seconds"),
               train_psnr_last=info.get("final_psnr"), iterations=info.get("iterations"))
    return rec


def table(rec: dict) -> str:
    """Markdown table of a record."""
    lines = ["| variant | options | PSNR dB | SSIM | LPIPS VGG | LPIPS Alex | points | train s |",
             "|---|---|---|---|---|---|---|---|"]

    for r in rec["runs"]:
        lines.append(f"| {r['name']} | `{r['options'] or '(defaults)'}` | {fmt(r['psnr'], 2)} | {fmt(r['ssim'], 4)} | "
                     f"{fmt(r['lpips_vgg'], 4)} | {fmt(r['lpips_alex'], 4)} | {r['points']} | "
                     f"{fmt(r['train_seconds'], 0)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subject", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--downscale", type=int, default=2)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME=OPTIONS (OPTIONS may be empty)")
    ap.add_argument("--jobs", type=int, default=1, help="variants trained at once (1 thread each)")
    ap.add_argument("--no-reuse", dest="reuse", action="store_false")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    variants = [v.split("=", 1) if "=" in v else (v, "") for v in a.variant]
    rec: dict = {"benchmark": "train_ablation", "subject": str(a.subject), "machine": machine(),
                 "calibration_gflops_1thread_before": calibration(),
                 "budget": {"iterations": a.iterations, "downscale": a.downscale, "threads_per_run": 1,
                            "jobs": a.jobs}}
    with ThreadPoolExecutor(max(1, a.jobs)) as ex:
        rec["runs"] = list(ex.map(lambda v: run_variant(a, v[0], v[1]), variants))
    rec["calibration_gflops_1thread_after"] = calibration()
    rec["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    name = "train_ablation" + (f"-{a.tag}" if a.tag else "")
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / f"{name}.json").write_text(json.dumps(rec, indent=1) + "\n")
    print(table(rec))


if __name__ == "__main__":
    main()
