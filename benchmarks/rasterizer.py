"""Benchmark of the Gaussian rasterizer on a head-sized scene.

Scene: N Gaussians on an ellipsoid with radii 0.08 x 0.10 x 0.09 m (a head), flattened along the
surface normal, screen-space sigmas log-uniform in 0.5-5 px at 512^2 (half that at 256^2),
opacities in [0.2, 1], 10 feature channels plus expected depth and alpha ("RGB+ED"), one camera
0.6 m in front of the face with a 25 degree field of view. Reports the median forward and
forward+backward wall time, the threads used, and the dense reference's time where it fits in
memory (it materialises C*H*W*N floats several times).

Run: ``python benchmarks/rasterizer.py`` (writes ``benchmarks/results/rasterizer.json``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from hravatar.geometry import matrix_to_quat  # noqa: E402
from hravatar.render import cpu as cpu_backend  # noqa: E402
from hravatar.render import intrinsics, look_at, rasterize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name, uptime  # noqa: E402

RADII = (0.08, 0.10, 0.09)
DISTANCE = 0.6
FOV_DEG = 25.0
CHANNELS = 10


def head_scene(n: int, seed: int = 0, ref_width: int = 512) -> dict[str, torch.Tensor]:
    """N Gaussians on a head-sized ellipsoid (metres, head frame: +y up, +z out of the face)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    radii = torch.tensor(RADII)
    means = d * radii
    normal = torch.nn.functional.normalize(d / radii**2, dim=-1)
    # tangent frame: (t1, t2, normal) as the rotation's columns, random spin about the normal
    helper = torch.where(
        normal[:, 1:2].abs() < 0.9, torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
    )
    t1 = torch.nn.functional.normalize(torch.linalg.cross(helper, normal, dim=-1), dim=-1)
    t2 = torch.linalg.cross(normal, t1, dim=-1)
    ang = torch.rand(n, 1, generator=g) * 2 * math.pi
    a1 = t1 * torch.cos(ang) + t2 * torch.sin(ang)
    a2 = torch.linalg.cross(normal, a1, dim=-1)
    rot = torch.stack([a1, a2, normal], dim=-1)
    quats = matrix_to_quat(rot)
    focal = 0.5 * ref_width / math.tan(math.radians(FOV_DEG) / 2)
    px_to_m = DISTANCE / focal
    sig_px = torch.exp(torch.empty(n, 2).uniform_(math.log(0.5), math.log(5.0), generator=g))
    scales = torch.cat([sig_px * px_to_m, (0.2 * sig_px.min(dim=1, keepdim=True).values) * px_to_m], dim=-1)
    opacities = torch.empty(n).uniform_(0.2, 1.0, generator=g)
    colors = torch.rand(n, CHANNELS, generator=g)
    return {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors}


def camera(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    view = look_at([0.0, 0.0, DISTANCE], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0])[None]
    K = intrinsics(FOV_DEG, size, size)[None]
    return view, K


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def bench_one(n: int, size: int, backend: str, repeats: int) -> dict:
    scene = head_scene(n)
    view, K = camera(size)
    params = {k: v.clone().requires_grad_(True) for k, v in scene.items()}

    def fwd():
        with torch.no_grad():
            rasterize(
                **scene, viewmats=view, Ks=K, width=size, height=size, render_mode="RGB+ED", backend=backend
            )

    def fwd_bwd():
        img, alpha, meta = rasterize(
            **params, viewmats=view, Ks=K, width=size, height=size, render_mode="RGB+ED", backend=backend
        )
        meta["means2d"].retain_grad()
        (img.sum() + alpha.sum()).backward()
        for p in params.values():
            p.grad = None

    fwd()  # warm-up (and build)
    fwd_bwd()
    tf = _time(fwd, repeats)
    tb = _time(fwd_bwd, repeats)
    with torch.no_grad():
        _, alpha, meta = rasterize(**scene, viewmats=view, Ks=K, width=size, height=size, backend=backend)
    return {
        "n": n,
        "size": size,
        "backend": backend,
        "forward_ms": statistics.median(tf),
        "forward_backward_ms": statistics.median(tb),
        "forward_ms_all": tf,
        "forward_backward_ms_all": tb,
        "visible": int(meta["visible"].sum()),
        "coverage": float((alpha > 0.5).float().mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[50_000, 100_000])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--reference-max-elems", type=float, default=4e8, help="C*H*W*N limit for the reference")
    ap.add_argument(
        "--reference-row",
        type=int,
        nargs=2,
        default=[128, 5000],
        metavar=("SIZE", "N"),
        help="an extra small configuration where the dense reference fits in memory",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rasterizer.json")
    args = ap.parse_args()

    threads = torch.get_num_threads()
    have_cpu = cpu_backend.available()
    load_before = os.getloadavg()
    rows = []
    configs = [(size, n) for size in args.sizes for n in args.counts]
    if args.reference_row:
        configs.append(tuple(args.reference_row))
    for size, n in configs:
        row = {"n": n, "size": size, "threads": threads}
        if have_cpu:
            r = bench_one(n, size, "cpu", args.repeats)
            row.update(cpu_forward_ms=r["forward_ms"], cpu_forward_backward_ms=r["forward_backward_ms"])
            row.update(visible=r["visible"], coverage=r["coverage"])
            row["cpu_samples"] = {
                "forward": r["forward_ms_all"],
                "forward_backward": r["forward_backward_ms_all"],
            }
        if size * size * n <= args.reference_max_elems:
            r = bench_one(n, size, "reference", max(1, min(3, args.repeats)))
            row.update(
                reference_forward_ms=r["forward_ms"],
                reference_forward_backward_ms=r["forward_backward_ms"],
            )
        else:
            row.update(reference_forward_ms=None, reference_forward_backward_ms=None)
        rows.append(row)
        print(_fmt_row(row), flush=True)
    load_after = os.getloadavg()
    result = {
        "command": "python benchmarks/rasterizer.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out"
        ),
        "machine": {
            "cpu": cpu_name(),
            "logical_cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "uptime": uptime(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "scene": {
            "radii_m": RADII,
            "distance_m": DISTANCE,
            "fov_deg": FOV_DEG,
            "channels": CHANNELS,
            "render_mode": "RGB+ED",
            "screen_sigma_px_at_512": [0.5, 5.0],
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nload average before/after: {load_before} / {load_after}; wrote {args.out}")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def _fmt_row(r: dict) -> str:
    return (
        f"| {r['size']}^2 | {r['n'] // 1000}k | {r['threads']} | {_fmt(r.get('cpu_forward_ms'))} | "
        f"{_fmt(r.get('cpu_forward_backward_ms'))} | {_fmt(r.get('reference_forward_ms'))} | "
        f"{_fmt(r.get('reference_forward_backward_ms'))} |"
    )


def table(result: dict) -> str:
    """Markdown table of a result dict (as written to the JSON file)."""
    head = (
        "| image | Gaussians | threads | cpu forward ms | cpu fwd+bwd ms "
        "| reference forward ms | reference fwd+bwd ms |\n"
        "|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(_fmt_row(r) for r in result["rows"])])




if __name__ == "__main__":
    main()
