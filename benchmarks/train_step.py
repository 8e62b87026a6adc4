"""Benchmark: seconds per training iteration at 256^2 and 512^2 with about 75k Gaussians.

One iteration = what ``hravatar train`` does per step after the albedo warm-up: encoder on the
224x224 crop, deformation (blendshapes + LBS + normals), rasterization of the 8-channel G-buffer +
depth, split-sum shading with the learnable environment, the paper's losses (L1 + D-SSIM, jaw,
normal consistency, roughness TV), backward, and the Adam steps. Densification is not included
(it runs every 500 iterations). Each stage's time is its forward plus its share of the backward
pass (measured with gradient hooks at the stage boundaries).

    python benchmarks/train_step.py [--sizes 256 512] [--iters 5] [--head open|synthetic] [--json out.json]

Prints a JSON record and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test helpers (synthetic head)

STAGES = ("encoder", "deformation", "rasterization", "shading", "loss", "optimizer")


def _head(kind: str):
    if kind == "open":
        from hravatar.head import load_head_model

        return load_head_model("open")
    from helpers.synthetic_head import synthetic_head

    return synthetic_head(subdivisions=5, num_shape=20, num_expr=52)


def bench_size(size: int, iters: int, head_kind: str, encoder_size: int, backend: str,
               full_shading: bool = False) -> dict:
    from helpers.tiny_subject import tiny_camera
    from hravatar.avatar import GBUFFER_LAYOUT as L
    from hravatar.encoder import ExpressionEncoder, freeze_batchnorm
    from hravatar.gaussians import AvatarConfig, GaussianHead
    from hravatar.losses import jaw_loss, normal_consistency_loss, photometric_loss, tv_loss
    from hravatar.render import camera_centers, rasterize
    from hravatar.shading.lighting import LearnableLighting
    from hravatar.shading.normals import normals_from_depth
    from hravatar.shading.shade import shade, shade_foreground

    torch.manual_seed(0)
    head = _head(head_kind)
    ppf = max(1, round(75000 / head.faces.shape[0]))
    avatar = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=ppf, init_opacity=0.5))
    light = LearnableLighting()
    enc = ExpressionEncoder(avatar.num_expr, input_size=encoder_size)
    opt = avatar.make_optimizer(names=tuple(k for k in avatar.lr_table() if k != "colors"))
    lopt = torch.optim.Adam(light.parameters(), lr=5e-2, eps=1e-15)
    eopt = torch.optim.Adam(enc.parameters(), lr=5e-5, eps=1e-15)
    vm, K = tiny_camera(size, distance=0.6, focal_ratio=2.0)
    centre = (head.v_template.min(0).values + head.v_template.max(0).values) / 2
    vm[:3, 3] = vm[:3, 3] - vm[:3, :3] @ centre  # look at the middle of the head
    g = torch.Generator().manual_seed(1)
    crop = torch.rand(1, 224, 224, 3, generator=g)
    mask = torch.zeros(size, size, 1)
    mask[size // 8: -size // 8, size // 8: -size // 8] = 1
    target = torch.rand(size, size, 3, generator=g) * 0.5 * mask  # frames are composited over black
    pose = torch.zeros(1, 5, 3)
    shape = torch.zeros(1, avatar.num_shape)
    trans = torch.zeros(1, 3)
    times = {k: [] for k in (*STAGES, "total")}
    vis = []
    for it in range(iters + 1):
        enc.train()
        freeze_batchnorm(enc)
        marks: dict[str, float] = {}

        def mark(name, marks=marks):
            def hook(grad):
                marks[name] = time.perf_counter()
                return grad

            return hook

        t0 = time.perf_counter()
        expr, jaw = enc(crop)
        t1 = time.perf_counter()
        p = torch.cat([pose[:, :2], jaw[:, None], pose[:, 3:]], 1)
        dg = avatar.deform(shape, expr, p, trans)
        n = dg.normals(camera_centers(vm[None]))[0]
        feats = torch.cat([avatar.albedo, avatar.roughness, avatar.f0, n], -1)
        t2 = time.perf_counter()
        colors, alphas, meta = rasterize(dg.means[0], dg.quats[0], dg.scales[0], dg.opacities[0], feats, vm[None],
                                         K[None], size, size, render_mode="RGB+ED", backend=backend)
        t3 = time.perf_counter()
        if full_shading:
            gb = {k: colors[..., L[k]] for k in ("albedo", "roughness", "f0", "normal")} | {"alpha": alphas}
            img = shade(gb, (vm[None], K[None]), light, premultiplied=True)["image"][0]
        else:  # what the trainer does: shade only the covered pixels
            img = shade_foreground(colors, alphas, L, vm[None], K[None], light)[0]
        t4 = time.perf_counter()
        nd, valid = normals_from_depth(colors[..., -1:], K[None], vm[None], alphas)
        normal = torch.nn.functional.normalize(colors[..., L["normal"]], dim=-1)
        loss = (photometric_loss(img, target) + jaw_loss(jaw, torch.zeros_like(jaw))
                + normal_consistency_loss(nd, normal, valid.float() * mask[None])
                + tv_loss(colors[..., L["roughness"]][0] / alphas[0].clamp_min(1e-6), mask))
        t5 = time.perf_counter()
        # gradient hooks at the stage boundaries (backward runs loss -> shading -> raster -> deform -> encoder)
        img.register_hook(mark("shading_in"))
        colors.register_hook(mark("raster_out"))
        for t in (dg.means, dg.quats, dg.scales):
            t.register_hook(mark("deform_out"))
        expr.register_hook(mark("encoder_out"))
        tb = time.perf_counter()
        loss.backward()
        te = time.perf_counter()
        for o in (opt, lopt, eopt):
            o.step()
        for o in (opt, lopt, eopt):
            o.zero_grad(set_to_none=True)
        t6 = time.perf_counter()
        if it == 0:
            vis.append(float((alphas > 0.5).float().mean()))
            continue  # warm-up (compilation, caches)
        b_loss = marks.get("shading_in", tb) - tb
        b_shade = marks.get("raster_out", tb) - marks.get("shading_in", tb)
        b_rast = marks.get("deform_out", tb) - marks.get("raster_out", tb)
        b_def = marks.get("encoder_out", te) - marks.get("deform_out", tb)
        b_enc = te - marks.get("encoder_out", te)
        times["encoder"].append(t1 - t0 + b_enc)
        times["deformation"].append(t2 - t1 + b_def)
        times["rasterization"].append(t3 - t2 + b_rast)
        times["shading"].append(t4 - t3 + b_shade)
        times["loss"].append(t5 - t4 + b_loss)
        times["optimizer"].append(t6 - te)
        times["total"].append(t6 - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"size": size, "points": avatar.num_points, "coverage": vis[0], "seconds": med, "iters": iters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--head", choices=["open", "synthetic"], default="open")
    ap.add_argument("--encoder-size", type=int, default=224)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--full-shading", action="store_true", help="shade every pixel (the old path)")
    ap.add_argument("--no-mallopt", action="store_true", help="leave glibc's allocator as it is (the old baseline)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if not a.no_mallopt:
        from hravatar.train import tune_cpu_allocator

        tune_cpu_allocator()  # as the trainer does on CPU
    from hravatar.render import select_backend

    rec = {
        "benchmark": "train_step",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "backend": select_backend() if a.backend == "auto" else a.backend,
        "head": a.head,
        "encoder_input": a.encoder_size,
        "results": [bench_size(s, a.iters, a.head, a.encoder_size, a.backend, a.full_shading) for s in a.sizes],
    }
    print(json.dumps(rec, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rec, indent=1))
    print()
    print("| size | points | " + " | ".join(STAGES) + " | total s/it |")
    print("|---|---|" + "---|" * len(STAGES) + "---|")
    for r in rec["results"]:
        s = r["seconds"]
        print(f"| {r['size']}^2 | {r['points']} | " + " | ".join(f"{s[k]:.3f}" for k in STAGES)
              + f" | **{s['total']:.3f}** |")


if __name__ == "__main__":
    main()
