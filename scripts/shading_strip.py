"""Render a strip of shaded spheres under the shared CC0 environment maps (visual check of shading).

For each map in ``../shared/data/envmaps`` (skipped when absent) three rows of an analytic sphere:
the environment rotating about +y (highlights must move), rising roughness (blurrier), rising F0
(shinier). Linear radiance is exposed so the mean irradiance is 0.5, clipped, and sRGB-encoded.

    python scripts/shading_strip.py [--out out/shading_strip.png] [--size 160]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "envmaps"


def _srgb(x: torch.Tensor) -> np.ndarray:
    x = x.clamp(0, 1)
    x = torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.pow(1 / 2.4) - 0.055)
    return (x * 255 + 0.5).byte().cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "shading_strip.png")
    ap.add_argument("--envmaps", type=Path, default=SHARED)
    ap.add_argument("--size", type=int, default=160)
    args = ap.parse_args(argv)
    maps = sorted(args.envmaps.glob("*.hdr")) + sorted(args.envmaps.glob("*.exr")) if args.envmaps.is_dir() else []
    if not maps:
        print(f"no environment maps in {args.envmaps}; nothing to render", file=sys.stderr)
        return 0

    import cv2

    from hravatar.geometry import intrinsics, look_at
    from hravatar.io.atomic import atomic_path
    from hravatar.shading.envmap_tools import prefilter_envmap, read_envmap
    from hravatar.shading.lighting import EnvironmentLighting
    from hravatar.shading.shade import shade

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.sphere_gbuffer import sphere_gbuffer

    s = args.size
    vm = look_at((0.0, 0.3, 3.4)).unsqueeze(0)
    K = intrinsics(45, s, s).unsqueeze(0)
    rows = []
    for path in maps:
        t0 = time.perf_counter()
        light = EnvironmentLighting(prefilter_envmap(read_envmap(path), meta={"source": path.name}))
        t1 = time.perf_counter()
        light.exposure = float(-np.log2(light.mean_irradiance() / 0.5))
        settings = {
            "rotation": [dict(rot=a, r=0.25, f0=0.3, label=f"rot {a}") for a in (0, 60, 120, 180, 240, 300)],
            "roughness": [dict(rot=0, r=r, f0=0.5, label=f"o {r}") for r in (0.05, 0.2, 0.35, 0.5, 0.75, 1.0)],
            "f0": [dict(rot=0, r=0.3, f0=f, label=f"F0 {f}") for f in (0.02, 0.04, 0.15, 0.3, 0.6, 1.0)],
        }
        for name, cells in settings.items():
            tiles = []
            for c in cells:
                light.rotation = float(c["rot"])
                gb = sphere_gbuffer(vm, K, s, s, albedo=(0.6, 0.45, 0.35), roughness=c["r"], f0=c["f0"])
                with torch.no_grad():
                    out = shade(gb, (vm, K), light, background=light.background(vm, K, s, s))
                tile = np.ascontiguousarray(_srgb(out["image"][0])[..., ::-1])
                cv2.putText(tile, c["label"], (4, s - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
                tiles.append(tile)
            row = np.concatenate(tiles, 1)
            cv2.putText(row, f"{path.stem}: {name}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            rows.append(row)
        print(f"{path.name}: prefiltered in {t1 - t0:.1f} s, shaded 18 spheres in {time.perf_counter() - t1:.1f} s")
    img = np.concatenate(rows, 0)
    with atomic_path(args.out) as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise RuntimeError(f"could not write {args.out}")
    print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
