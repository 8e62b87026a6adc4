"""Benchmark: seconds per training iteration of the trainer's OWN step (what ``hravatar train`` runs).

A :class:`hravatar.train.Trainer` is created on a subject folder exactly as ``hravatar train``
does (default: a synthetic subject rendered at ``--size`` px, trained with the open head model at
``--points-per-face`` 8, i.e. about 75k Gaussians, the MobileNetV2 encoder at 224 px; or
``--subject`` a real one), and ``Trainer.step`` is called for iterations after the albedo
warm-up (the full PBR step): frame loading (image, mask, albedo prior, face crop), the encoder,
deformation, rasterization of the G-buffer, split-sum shading, the paper's losses, backward,
the non-finite guard, the Adam steps and the densification bookkeeping.

The per-stage split comes from timing wrappers around the trainer's own calls (nothing else
changes): ``data`` (``dataset[i]`` + downscale), ``encoder`` (forward), ``render`` (forward of
deform + rasterize + shade: ``hravatar.avatar.render``, the differentiable path), ``backward``
(the whole backward pass, every stage), ``optimizer``
(the Adam steps); ``other`` is the rest (losses, guard, densification statistics). ``CPU s/it``
is the process CPU time of the step (all threads), less noisy than wall time on a shared machine.

    python benchmarks/train_step.py [--size 512] [--iters 5] [--subject DIR] [--json out.json]

Prints a Markdown table and writes JSON (machine, load average before/after, calibration).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import calibration, machine  # noqa: E402

STAGES = ("data", "encoder", "render", "backward", "optimizer", "other")


def synthetic_subject(root: Path, size: int, frames: int) -> Path:
    """A synthetic subject folder (rendered from a small test head) at ``size`` px."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.tiny_subject import make_tiny_subject
    return make_tiny_subject(root / "subject", size=size, frames=frames, points_per_face=2)


class _Timer:
    """Accumulates wall time of wrapped calls per stage during one step (on CUDA the device is
    synchronised around each wrapped call, so that a stage's GPU work is counted in it)."""

    def __init__(self, cuda: bool = False) -> None:
        self.acc = dict.fromkeys(STAGES, 0.0)
        self.sync = torch.cuda.synchronize if cuda else (lambda: None)

    def wrap(self, stage: str, fn):
        def inner(*a, **kw):
            self.sync()
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.sync()
                self.acc[stage] += time.perf_counter() - t

        return inner


def bench(args: argparse.Namespace, work: Path) -> dict:
    import hravatar.train as train_mod
    from hravatar.train import TrainConfig, Trainer

    subject = args.subject or synthetic_subject(work, args.size, args.frames)
    cfg = TrainConfig(subject=Path(subject), output=work / "avatar", head_model=args.head_model,
                      points_per_face=args.points_per_face, iterations=100_000, max_iterations=0,
                      encoder_warmup_steps=0, quiet=True, device=args.device, threads=args.threads,
                      downscale=args.downscale)
    t0 = time.perf_counter()
    tr = Trainer.create(cfg)
    setup_s = time.perf_counter() - t0
    cuda = tr.device.type == "cuda"
    timer = _Timer(cuda)
    # timing wrappers around the trainer's own calls (behaviour unchanged)
    ds_cls = type(tr.ds)
    orig_getitem = ds_cls.__getitem__
    ds_cls.__getitem__ = timer.wrap("data", orig_getitem)
    orig_down = train_mod.downscale_frame
    train_mod.downscale_frame = timer.wrap("data", orig_down)
    orig_render = train_mod.render
    train_mod.render = timer.wrap("render", orig_render)
    orig_backward = torch.Tensor.backward
    torch.Tensor.backward = timer.wrap("backward", orig_backward)
    if tr.encoder is not None:
        tr.encoder.forward = timer.wrap("encoder", tr.encoder.forward)
    opts = [o for o in (tr.opt, tr.light_opt, tr.enc_opt) if o is not None]
    for o in opts:
        o.step = timer.wrap("optimizer", o.step)
    rows, points = [], []
    try:
        start = tr.warmup + 1  # the full PBR step (after the albedo warm-up)
        for k in range(args.iters + 1):
            timer.acc = dict.fromkeys(STAGES, 0.0)
            n0 = tr.avatar.num_points
            timer.sync()
            t, c = time.perf_counter(), time.process_time()
            rec = tr.step(start + k)
            timer.sync()
            total = time.perf_counter() - t
            cpu_total = time.process_time() - c
            if k == 0:
                continue  # warm-up (allocator, kernel build)
            acc = dict(timer.acc)
            acc["other"] = total - sum(acc.values())
            rows.append({"total": total, **acc, "cpu_total": cpu_total, "points": n0, "finite": rec is not None,
                         "mode": None if rec is None else rec["mode"]})
            points.append(n0)
    finally:
        ds_cls.__getitem__ = orig_getitem
        train_mod.downscale_frame = orig_down
        train_mod.render = orig_render
        torch.Tensor.backward = orig_backward
    med = {f"{k}_s": round(statistics.median(r[k] for r in rows), 3) for k in ("total", *STAGES, "cpu_total")}
    return {"size": tr.width, "height": tr.height, "points": points[0], "points_last": points[-1],
            "setup_s": round(setup_s, 1), "modes": sorted({str(r["mode"]) for r in rows}),
            **med, "samples_s": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
            "subject": str(args.subject) if args.subject else f"synthetic, {args.size}px, {args.frames} frames",
            "encoder": cfg.encoder, "encoder_input": cfg.encoder_input_size, "head_model": args.head_model,
            "device": str(tr.device) + (f" ({torch.cuda.get_device_name()})" if cuda else "")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="image side of the synthetic subject")
    ap.add_argument("--frames", type=int, default=6, help="frames of the synthetic subject")
    ap.add_argument("--subject", type=Path, default=None, help="a real subject folder instead")
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--head-model", default="open")
    ap.add_argument("--points-per-face", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5, help="timed steps (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (gsplat)")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train_step.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    calib = calibration()
    with tempfile.TemporaryDirectory(prefix="hravatar-bench-") as tmp:
        r = bench(args, Path(tmp))
    load_after = os.getloadavg()
    result = {"command": "python benchmarks/train_step.py " + " ".join(sys.argv[1:]),
              "machine": machine(load_before, load_after), "calibration": calib, "rows": [r]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\npoints {r['points']} (last step {r['points_last']}); calibration {calib}; load average before/after "
          f"{result['machine']['loadavg_before']} / {result['machine']['loadavg_after']}; wrote {args.json}")


def table(result: dict) -> str:
    """Markdown table of a result dict (as written to the JSON file)."""
    head = ("| image | Gaussians | s/it | data | encoder | render fwd | backward | optimizer | other | CPU s/it |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {r['size']}x{r['height']} | {r['points']} | {r['total_s']:.2f} | {r['data_s']:.3f} | "
            f"{r['encoder_s']:.3f} | {r['render_s']:.3f} | {r['backward_s']:.3f} | {r['optimizer_s']:.3f} | "
            f"{r['other_s']:.3f} | {r.get('cpu_total_s', 0):.2f} |" for r in result["rows"]]
    return "\n".join([head, *rows])


if __name__ == "__main__":
    main()
