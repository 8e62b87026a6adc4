"""Benchmark: `hravatar batch` on a local Ray versus the single-subject commands one after another.

Three tiny synthetic subjects (`hravatar synth`, 64 px, 12 frames; the settings of
tests/test_batch.py) go through train (30 iterations) -> evaluate -> render (video + thumbnail):

* sequential: `hravatar train`, `hravatar evaluate`, `hravatar render` (twice: the video and the
  thumbnail) for subject 1, then subject 2, then subject 3 (12 processes, one after another);
* batch: `hravatar batch S1 S2 S3 -o OUT --num-cpus N --cpus-per-job 1` (one command).

Wall time of each, the load average before/after, and a calibration figure (seconds of a fixed
single-thread matmul workload, measured before each phase, so that runs on a shared machine can be
compared). Writes benchmarks/results/batch.json and prints a Markdown table.

    python benchmarks/batch.py [--num-cpus 2] [--work DIR] [--out benchmarks/results/batch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_flags, cpu_name  # noqa: E402

TRAIN = {"iterations": 30, "points_per_face": 1, "encoder_width": 0.25, "encoder_input_size": 32,
         "encoder_warmup_steps": 3}


def calibrate() -> float:
    """Seconds for 30 single-thread 384x384 float32 matmuls (lower = a faster / less loaded CPU)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    a = torch.randn(384, 384)
    t0 = time.perf_counter()
    for _ in range(30):
        a = torch.tanh(a @ a)
    torch.set_num_threads(n)
    return round(time.perf_counter() - t0, 3)


def _cli(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "hravatar.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (the test uses 2)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder, removed)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "batch.json")
    args = ap.parse_args()
    import yaml

    work = args.work or Path(tempfile.mkdtemp(prefix="hrbench"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HRAVATAR_PLAIN="1", RAY_USAGE_STATS_ENABLED="0")
    try:
        subs = []
        for i in range(3):
            s = work / f"sub{i}"
            if not (s / "manifest.json").is_file():
                _cli("synth", str(s), "--size", "64", "--frames", "12", "--seed", str(i), "--points-per-face", "1",
                     "--env-height", "16", env=env)
            subs.append(s)
        cfg = work / "tiny.yaml"
        cfg.write_text(yaml.safe_dump({"train": TRAIN, "evaluate": {"images": 1}}))
        phases = {}

        # sequential: the single-subject commands, one subject after another
        seq = work / "sequential"
        shutil.rmtree(seq, ignore_errors=True)
        cal, load0, t0 = calibrate(), os.getloadavg(), time.perf_counter()
        train_args = [f"--{k.replace('_', '-')}={v}" for k, v in TRAIN.items()]
        for s in subs:
            av = seq / s.name / "avatar"
            _cli("train", str(s), "-o", str(av), "--quiet", "--threads", "1", *train_args, env=env)
            _cli("evaluate", str(av), "--images", "1", env=env)
            _cli("render", str(av), "-o", str(av / "render_test.mp4"), env=env)
            _cli("render", str(av), "-o", str(seq / s.name / "thumbnail.png"), "--max-frames", "1", "--size", "160",
                 env=env)
        phases["sequential"] = {"wall_s": round(time.perf_counter() - t0, 1), "loadavg_before": load0,
                                "loadavg_after": os.getloadavg(), "calibration_s": cal,
                                "command": "hravatar train/evaluate/render per subject, one after another"}
        print(f"sequential: {phases['sequential']['wall_s']} s (load {load0[0]:.2f})", flush=True)

        # batch: one command on a local Ray
        out = work / "batch"
        shutil.rmtree(out, ignore_errors=True)
        cal, load0, t0 = calibrate(), os.getloadavg(), time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "hravatar.cli", "batch", *map(str, subs), "-o", str(out),
                            "--num-cpus", str(args.num_cpus), "--cpus-per-job", "1", "--config", str(cfg)],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"hravatar batch failed:\n{r.stdout}\n{r.stderr}")
        summary = json.loads((out / "batch.json").read_text())
        phases["batch"] = {"wall_s": round(time.perf_counter() - t0, 1), "loadavg_before": load0,
                           "loadavg_after": os.getloadavg(), "calibration_s": cal,
                           "batch_json_wall_s": summary["wall_seconds"],
                           "command": f"hravatar batch S1 S2 S3 --num-cpus {args.num_cpus} --cpus-per-job 1",
                           "psnr": {s["name"]: s["psnr"] for s in summary["subjects"]}}
        print(f"batch: {phases['batch']['wall_s']} s (load {load0[0]:.2f})", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": f"python benchmarks/batch.py --num-cpus {args.num_cpus}",
        "workload": "3 synthetic subjects (64 px, 12 frames), train 30 iterations, evaluate, render + thumbnail",
        "machine": {"cpu": cpu_name(), "flags": cpu_flags(), "logical_cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "phases": phases,
        "speedup": round(phases["sequential"]["wall_s"] / phases["batch"]["wall_s"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| run | wall s | load before -> after | calibration s |\n|---|---|---|---|")
    for k, p in phases.items():
        print(f"| {k} | {p['wall_s']} | {p['loadavg_before'][0]:.2f} -> {p['loadavg_after'][0]:.2f} | "
              f"{p['calibration_s']} |")
    print(f"\nspeedup {result['speedup']}x; wrote {args.out}")


if __name__ == "__main__":
    main()
