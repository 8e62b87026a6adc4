"""Benchmark: a real clip end to end (preprocess -> train -> evaluate) with a stated budget.

    python benchmarks/real_clip.py [VIDEO] [--size 512] [--downscale 2] [--series 500 1500 3000]
                                   [--keep-torso] [--subject DIR] [--tag NAME]

Preprocesses VIDEO (default: the shared ``talking_man_d18.mp4``) at ``--size``, trains one avatar per
budget of ``--series`` (separate runs, each with its own schedule scaled to its length, at
``--downscale``), and evaluates every avatar with the paper-comparable protocol of
``hravatar evaluate`` (held-out last frames, full subject resolution, black background, LPIPS VGG as
the headline). Writes ``benchmarks/results/real_clip[-TAG].json`` (metrics, stage times, points,
machine: CPU model and flags, load average, a calibration figure) and the Markdown table
``benchmarks/results/real_clip[-TAG].md``, and prints the table.

The calibration figure is single-thread float32 matrix-multiply GFLOP/s measured before and after
the run, so that runs on loaded or different machines can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from hravatar.report.eval_report import PAPER as PAPER_INSTA

HERE = Path(__file__).resolve().parent
SHARED_CLIP = HERE.parents[1] / "shared" / "data" / "videos" / "talking_man_d18.mp4"
_AVG = PAPER_INSTA["average"]
PAPER = {**PAPER_INSTA["wojtek_1"], "note": "HRAvatar (CVPR 2025), INSTA wojtek_1, 512x512, torso removed, 30k "
         f"iterations on a GPU; paper average over subjects {_AVG['psnr']} / {_AVG['ssim']} / {_AVG['lpips_vgg']}"}


def machine() -> dict:
    """CPU model, flags of interest, cores, torch version, load average."""
    import torch

    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in have]
                break
    except OSError:
        pass
    return {"cpu": model, "flags": flags, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def calibration(seconds: float = 1.0) -> float:
    """Single-thread float32 GFLOP/s of a 256x256 matmul, best of repeated runs over ``seconds``."""
    import torch

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(256, 256), torch.randn(256, 256)
        best, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            for _ in range(20):
                a @ b
            dt = time.perf_counter() - t0
            best = max(best, 20 * 2 * 256**3 / dt / 1e9)
        return round(best, 2)
    finally:
        torch.set_num_threads(n_threads)


def run(a: argparse.Namespace) -> dict:
    from hravatar.evaluate import EvaluateConfig, evaluate_avatar
    from hravatar.gaussians.strategy import DensifyConfig
    from hravatar.preprocess.pipeline import PipelineSettings, preprocess_video
    from hravatar.progress import setup_logging
    from hravatar.train import TrainConfig, train

    setup_logging()
    work = Path(a.work or tempfile.mkdtemp(prefix="hravatar-realclip-"))
    work.mkdir(parents=True, exist_ok=True)
    rec: dict = {"benchmark": "real_clip", "video": str(a.video), "machine": machine(),
                 "calibration_gflops_1thread_before": calibration(),
                 "budget": {"size": a.size, "downscale": a.downscale, "series": a.series,
                            "train_resolution": a.size // a.downscale,
                            "matte": "person" if a.keep_torso else "head-only",
                            "encoder": a.encoder, "threads": a.threads, "device": a.device,
                            "test_frames": a.test_frames,
                            "densify_reset_every": a.reset_every},
                 "paper": PAPER}
    t0 = time.time()
    if a.subject:
        subject = Path(a.subject)
        man = json.loads((subject / "manifest.json").read_text())
        rec["preprocess"] = {"reused": str(subject)}
    else:
        subject = work / "subject"
        s = PipelineSettings(size=a.size, overlay=False, keep_torso=a.keep_torso, overwrite=True)
        t = time.time()
        preprocess_video(a.video, subject, s)
        man = json.loads((subject / "manifest.json").read_text())
        rec["preprocess"] = {"wall_s": round(time.time() - t, 1), "stage_s": man.get("timings_s"),
                             "mean_landmark_error_px": man.get("tracking", {}).get("mean_landmark_error_px")}
    rec["frames"] = man.get("num_frames")
    rec["subject_matte"] = man.get("settings", {}).get("matte", "person")
    runs = []
    for n in a.series:
        out = work / f"avatar-{n}"
        t = time.time()
        load_before = [round(x, 2) for x in os.getloadavg()]
        train(TrainConfig(subject=subject, output=out, iterations=n, downscale=a.downscale, encoder=a.encoder,
                          threads=a.threads, test_frames=a.test_frames, overwrite=True, quiet=True,
                          device=a.device,
                          **({} if a.reset_every is None else {"densify": DensifyConfig(reset_every=a.reset_every)})))
        t_train = time.time() - t
        info = json.loads((out / "training.json").read_text())
        t = time.time()
        m = evaluate_avatar(EvaluateConfig(avatar=out, output=out / "eval", images=a.eval_images,
                                                test_frames=a.test_frames, device=a.device))
        runs.append({
            "iterations": n, "train_s": round(t_train, 1), "eval_s": round(time.time() - t, 1),
            "points": info.get("points"), "train_psnr_last": info.get("final_psnr"),
            "load_avg_before": load_before, "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            **{k: m.get(k) for k in ("psnr", "ssim", "lpips_vgg", "lpips_alex", "mae100", "num_frames",
                                     "image_size")},
            "eval_images": str(out / "eval" / "images"),
        })
        print(json.dumps(runs[-1]), flush=True)
    rec["runs"] = runs
    rec["total_s"] = round(time.time() - t0, 1)
    rec["calibration_gflops_1thread_after"] = calibration()
    rec["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rec["work"] = str(work)
    if not a.keep_work and not a.work:
        shutil.rmtree(work, ignore_errors=True)
        rec["work"] = None
    return rec


def fmt(x: float | None, d: int) -> str:
    """``x`` with ``d`` decimals, ``n/a`` when missing (table cells)."""
    return "n/a" if x is None else f"{x:.{d}f}"


def table(rec: dict) -> str:
    """The Markdown table of a record."""
    b, m = rec["budget"], rec["machine"]
    lines = [
        f"Real clip `{Path(rec['video']).name}` ({rec['frames']} frames), {rec['subject_matte']} matte, "
        f"preprocessed at {b['size']}^2, trained at {b['train_resolution']}^2, evaluated at full resolution "
        f"(held-out last frames, black background). Machine: {m['cpu']} ({', '.join(m['flags']) or 'no AVX flags'}), "
        f"{m['logical_cpus']} logical CPUs, load average {m['load_avg'][0]} before / "
        f"{m.get('load_avg_after', ['?'])[0]} after; calibration {rec['calibration_gflops_1thread_before']} / "
        f"{rec.get('calibration_gflops_1thread_after')} GFLOP/s (1-thread matmul, before / after).",
        "",
        "| iterations | train s | points | test frames | PSNR dB | SSIM | LPIPS VGG | LPIPS Alex | MAE* | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    for r in rec["runs"]:
        lines.append(f"| {r['iterations']} | {r['train_s']:.0f} | {r['points']} | {r['num_frames']} | "
                     f"{fmt(r['psnr'], 2)} | {fmt(r['ssim'], 3)} | {fmt(r['lpips_vgg'], 3)} | "
                     f"{fmt(r['lpips_alex'], 3)} | "
                     f"{fmt(r['mae100'], 2)} | {r['load_avg_before'][0]} |")
    p = rec["paper"]
    lines.append(f"| paper (30k, GPU) | | | | {p['psnr']} | {p['ssim']} | "
                 f"{p['lpips_vgg']} | | | |")
    pre = rec.get("preprocess", {})
    if "stage_s" in pre:
        st = pre["stage_s"] or {}
        lines += ["", "Preprocessing stages (s): " + ", ".join(f"{k} {v}" for k, v in st.items())]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", type=Path, nargs="?", default=SHARED_CLIP)
    ap.add_argument("--size", type=int, default=512, help="preprocessing (= evaluation) resolution")
    ap.add_argument("--downscale", type=int, default=2, help="training downscale factor")
    ap.add_argument("--series", type=int, nargs="+", default=[500, 1500, 3000], help="training budgets (iterations)")
    ap.add_argument("--keep-torso", action="store_true", help="the full-person matte instead of the head-only one")
    ap.add_argument("--subject", type=Path, default=None, help="reuse a preprocessed subject (skip preprocessing)")
    ap.add_argument("--encoder", default="mobilenet_v2")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto", help="cpu, cuda (gsplat) or auto")
    ap.add_argument("--eval-images", type=int, default=4, help="side-by-side test images to write (-1: all)")
    ap.add_argument("--reset-every", type=int, default=None,
                    help="opacity reset interval (0: none; default: the paper's schedule scaled to the run)")
    ap.add_argument("--test-frames", type=int, default=None, help="held-out last frames (default: last 15%%)")
    ap.add_argument("--work", type=Path, default=None, help="keep the subject and avatars here")
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    a = ap.parse_args()
    if not a.video.is_file() and not a.subject:
        raise SystemExit(f"error: {a.video}: no such video; pass the path of a talking-head clip")
    rec = run(a)
    md = table(rec)
    print("\n" + md)
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    stem = "real_clip" + (f"-{a.tag}" if a.tag else "")
    (res / f"{stem}.json").write_text(json.dumps(rec, indent=1))
    (res / f"{stem}.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
