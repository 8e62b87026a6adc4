"""Benchmark: frames per second of rendering an avatar (deform + rasterize + shade), per stage.

What a user of ``hravatar render``/``view``/``relight`` waits for per frame: the avatar posed with
one set of parameters (expression, jaw), its G-buffer rasterized (albedo, roughness, F0, normal +
expected depth) and the covered pixels shaded with the learnable split-sum lighting, composited
over black. Two paths are timed:

* ``fast``: the inference kernels (CPU only, no autograd): ``hravatar.render.fast.fast_deform``,
  ``rasterize_fast`` (projection + sort + binning + forward in C++), and
  ``hravatar.shading.fast.shade_foreground_fast``;
* ``reference``: the differentiable path the trainer uses (``GaussianHead.deform`` + normals,
  ``hravatar.render.rasterize(render_mode="RGB+ED")``, ``shade_foreground``), under
  ``torch.no_grad()``, on the CPU and, when present, on CUDA (gsplat).

The avatar is either initialised on the open head model as the trainer does (default: about 75k
Gaussians, ``points_per_face = round(75000 / faces)``, initial opacity 0.1) or a trained avatar
folder (``--avatar``). Timings are medians over ``--iters`` frames after one warm-up frame: wall time (what the user
sees) and process CPU time (all threads summed; on a machine shared with other work it is far
less noisy than wall time, and with ``--threads 1`` it approximates the idle single-core time).

    python benchmarks/render.py [--sizes 256 512] [--iters 15] [--avatar AVATAR] [--json out.json]

Prints a Markdown table and writes JSON (machine, load average before/after, calibration).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import calibration, machine  # noqa: E402

STAGES = ("deform", "rasterize", "shade")


def _shade_foreground():
    from hravatar.avatar.render import GBUFFER_LAYOUT
    from hravatar.shading.shade import shade_foreground

    return lambda *a: shade_foreground(a[0], a[1], GBUFFER_LAYOUT, *a[2:])


def build_scene(avatar_dir: Path | None, target_points: int):
    """``(avatar, lighting, description)`` on the CPU."""
    if avatar_dir is not None:
        from hravatar.avatar import load_avatar

        la = load_avatar(avatar_dir, "cpu")
        return la.gaussians, la.lighting, f"trained avatar {avatar_dir}"
    from hravatar.gaussians import AvatarConfig, GaussianHead
    from hravatar.head import load_head_model
    from hravatar.shading.lighting import LearnableLighting

    head = load_head_model("open")
    ppf = max(1, round(target_points / head.faces.shape[0]))
    av = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=ppf))
    return av, LearnableLighting(), f"open head, initialised as the trainer does ({ppf} points per face)"


def camera(avatar, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera 0.6 m in front of the avatar's centre (OpenCV), focal 2x the image size."""
    with torch.no_grad():
        g = avatar.deform()
        centre = g.means[0].mean(0)
    vm = torch.eye(4)
    vm[:3, :3] = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    vm[:3, 3] = torch.tensor([0.0, 0.0, 0.6]) - vm[:3, :3] @ centre
    K = torch.tensor([[2.0 * size, 0, size / 2], [0, 2.0 * size, size / 2], [0, 0, 1.0]])
    return vm, K


def params(avatar, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    pose = torch.zeros(1, 5, 3)
    pose[0, 2, 0] = 0.12  # jaw open a little
    pose[0, 1, 1] = 0.1
    return {"shape": 0.3 * torch.randn(1, avatar.num_shape, generator=g),
            "expression": 0.5 * torch.randn(1, avatar.num_expr, generator=g),
            "pose": pose, "translation": torch.zeros(1, 3)}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def time_fast(avatar, lighting, size: int, iters: int) -> dict:
    from hravatar.render.fast import fast_deform, rasterize_fast
    from hravatar.shading.fast import shade_foreground_fast

    vm, K = camera(avatar, size)
    p = params(avatar)
    centre = -(vm[:3, :3].T @ vm[:3, 3])
    times = {k: [] for k in (*STAGES, "total")}
    cover = 0.0
    n_isect = 0
    cpu = {k: [] for k in (*STAGES, "total")}
    for it in range(iters + 1):
        c0 = time.process_time()
        t0 = time.perf_counter()
        g = fast_deform(avatar, p["shape"], p["expression"], p["pose"], p["translation"], centre)
        t1, c1 = time.perf_counter(), time.process_time()
        feats = torch.cat([avatar.albedo, avatar.roughness, avatar.f0, g.normals], -1)
        gb, alpha, meta = rasterize_fast(g.means, g.quats, g.scales, g.opacities, feats, vm, K, size, size)
        t2, c2 = time.perf_counter(), time.process_time()
        img = shade_foreground_fast(gb, alpha, vm[None], K[None], lighting, None)
        t3, c3 = time.perf_counter(), time.process_time()
        if it == 0:  # warm-up (kernel build, lighting preparation, shape cache)
            cover = float((alpha > 0).float().mean())
            n_isect = meta["n_isect"]
            continue
        for k, v in zip((*STAGES, "total"), (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            times[k].append(1000 * v)
        for k, v in zip((*STAGES, "total"), (c1 - c0, c2 - c1, c3 - c2, c3 - c0), strict=True):
            cpu[k].append(1000 * v)
    assert torch.isfinite(img).all()
    cpu_med = {f"cpu_{k}_ms": round(statistics.median(v), 2) for k, v in cpu.items()}
    return _summary(times) | cpu_med | {"coverage": round(cover, 3), "n_isect": n_isect}


@torch.no_grad()
def time_reference(avatar, lighting, size: int, iters: int, device: torch.device) -> dict:
    from hravatar.render import rasterize

    shade_fg = _shade_foreground()
    vm, K = camera(avatar.to("cpu"), size)  # before moving: ``to`` moves the avatar in place
    av = avatar.to(device)
    light = lighting.to(device)
    vm, K = vm.to(device), K.to(device)
    p = {k: v.to(device) for k, v in params(avatar).items()}
    centre = -(vm[:3, :3].T @ vm[:3, 3])
    times = {k: [] for k in (*STAGES, "total")}
    cpu = []
    for it in range(iters + 1):
        _sync(device)
        c0 = time.process_time()
        t0 = time.perf_counter()
        g = av.deform(p["shape"], p["expression"], p["pose"], p["translation"])
        n = g.normals(centre[None])[0]
        _sync(device)
        t1 = time.perf_counter()
        feats = torch.cat([av.albedo, av.roughness, av.f0, n], -1)
        gb, alpha, _ = rasterize(g.means[0], g.quats[0], g.scales[0], g.opacities[0], feats, vm[None], K[None],
                                 size, size, render_mode="RGB+ED")
        _sync(device)
        t2 = time.perf_counter()
        img = shade_fg(gb, alpha, vm[None], K[None], light, None)
        _sync(device)
        t3 = time.perf_counter()
        if it == 0:
            continue
        cpu.append(1000 * (time.process_time() - c0))
        for k, v in zip((*STAGES, "total"), (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            times[k].append(1000 * v)
    assert torch.isfinite(img).all()
    avatar.to("cpu")
    lighting.to("cpu")
    return _summary(times) | {"cpu_total_ms": round(statistics.median(cpu), 2)}


def _summary(times: dict) -> dict:
    med = {f"{k}_ms": round(statistics.median(v), 2) for k, v in times.items()}
    med["fps"] = round(1000.0 / med["total_ms"], 1)
    med["samples_ms"] = {k: [round(x, 2) for x in v] for k, v in times.items()}
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--iters", type=int, default=15, help="timed frames of the fast path (after one warm-up)")
    ap.add_argument("--reference-iters", type=int, default=5, help="timed frames of the reference path")
    ap.add_argument("--points", type=int, default=75_000, help="target Gaussian count of the initialised avatar")
    ap.add_argument("--avatar", type=Path, default=None, help="a trained avatar folder instead of the initialised one")
    ap.add_argument("--threads", type=int, default=0, help="torch/kernel threads (0: torch's default)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference path on the CPU")
    ap.add_argument("--no-fast", action="store_true", help="skip the fast CPU path (e.g. to time CUDA alone)")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "render.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    calib = calibration()
    avatar, lighting, desc = build_scene(args.avatar, args.points)
    rows = []
    cuda_error = None
    for size in args.sizes:
        if not args.no_fast:
            r = {"size": size, "path": "fast", "device": "cpu"} | time_fast(avatar, lighting, size, args.iters)
            rows.append(r)
            print(_row(r), flush=True)
        if not args.no_reference:
            r = {"size": size, "path": "reference", "device": "cpu"} | time_reference(
                avatar, lighting, size, args.reference_iters, torch.device("cpu"))
            rows.append(r)
            print(_row(r), flush=True)
        if torch.cuda.is_available():
            try:
                r = {"size": size, "path": "reference", "device": "cuda"} | time_reference(
                    avatar, lighting, size, args.iters, torch.device("cuda"))
            except Exception as exc:  # noqa: BLE001 - e.g. gsplat missing: record, keep the CPU rows
                avatar.to("cpu")
                lighting.to("cpu")
                print(f"CUDA path failed: {exc}", flush=True)
                cuda_error = str(exc)
                continue
            rows.append(r)
            print(_row(r), flush=True)
    load_after = os.getloadavg()
    result = {
        "command": "python benchmarks/render.py " + " ".join(sys.argv[1:]),
        "machine": machine(load_before, load_after),
        "calibration": calib,
        "scene": {"avatar": desc, "gaussians": avatar.num_points, "camera": "0.6 m from the centre, focal 2x size",
                  "lighting": type(lighting).__name__, "background": "black"},
        "rows": rows,
        "cuda_error": cuda_error,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\n{avatar.num_points} Gaussians; calibration {calib}; load average before/after "
          f"{result['machine']['loadavg_before']} / {result['machine']['loadavg_after']}; wrote {args.json}")


HEAD = ("| image | path | device | deform ms | rasterize ms | shade ms | total ms | FPS | CPU ms (all threads) |\n"
        "|---|---|---|---|---|---|---|---|---|")


def _row(r: dict) -> str:
    return (f"| {r['size']}^2 | {r['path']} | {r['device']} | {r['deform_ms']:.1f} | {r['rasterize_ms']:.1f} | "
            f"{r['shade_ms']:.1f} | {r['total_ms']:.1f} | {r['fps']:.1f} | {r.get('cpu_total_ms', 0):.1f} |")


def table(result: dict) -> str:
    """Markdown table of a result dict (as written to the JSON file)."""
    return "\n".join([HEAD, *(_row(r) for r in result["rows"])])


if __name__ == "__main__":
    main()
