"""Web viewer benchmark: bundle size and the page's frame time in headless Chromium (software WebGL2).

    python benchmarks/web_viewer.py AVATAR [--subject SUBJECT] [--sizes 256 512] [--frames 15]
                                           [--screenshot docs/images/web_viewer.png [--envmap MAP.hdr]]

Builds the avatar's web bundle (size per array, bytes per point, the size of a 100k-point avatar's
bundle from the same layout), opens the viewer in the system Chromium (SwiftShader, no GPU),
renders ``--frames`` frames per size with a changing expression and view and reports the median
frame time (up to a 1-pixel readback of the finished frame): ``expression``, a scripted render
(deformation, synchronous readback of the posed centres, sort, splatting, shading);
``expression_async``, as the page's interactive loop draws (the centres copied into a pixel-pack
buffer behind a fence and sorted in a worker, the frame drawn with the last order meanwhile);
``orbit``, only the view moves (no re-deformation; synchronous sort). Plus the PSNR of the
browser's frame against the Python renderer at the reference parameters. Writes
``benchmarks/results/web_viewer.json`` with the machine and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _cpu() -> dict:
    name, flags = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "sse4"))]
                break
    except OSError:
        pass
    return {"cpu": name, "flags": sorted(set(flags)), "cores": os.cpu_count()}


def _calibration() -> float:
    """GFLOP/s of a 512x512 float32 matmul (one thread) on this machine now."""
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    t0 = time.perf_counter()
    for _ in range(20):
        a @ a
    return 20 * 2 * 512**3 / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("avatar", type=Path)
    ap.add_argument("--subject", type=Path, default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the page (512 px view)")
    ap.add_argument("--screenshot-only", action="store_true", help="only the screenshot (no timing, no JSON)")
    ap.add_argument("--envmap", type=Path, default=None,
                    help="an HDR map as a second light; the screenshot shows the avatar under it, in front of it")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "web_viewer.json")
    args = ap.parse_args()
    from helpers.web_browser import Page, browser, psnr, python_render, serve_bundle
    from hravatar.apps.web_bundle import build_bundle
    from hravatar.avatar import load_avatar

    load_before = os.getloadavg()
    calib = _calibration()
    la = load_avatar(args.avatar, "cpu", args.subject)
    t0 = time.perf_counter()
    envs = []
    if args.envmap:
        from hravatar.apps.common import load_environment

        envs = [(args.envmap.name, load_environment(args.envmap, la))]
    bundle = build_bundle(la, envs)
    build_s = time.perf_counter() - t0
    N = bundle.header["num_points"]
    arrays = {k: v for k, v in bundle.header["arrays"].items()}
    sizes = {}
    for k, a in arrays.items():
        item = {"f32": 4, "f16": 2, "u32": 4, "i8": 1}[a["dtype"]]
        sizes[k] = int(np.prod(a["shape"])) * item
    per_point = sum(v for k, v in sizes.items() if k != "sequence") / N
    fixed = bundle.size_bytes - sum(sizes.values())
    result: dict = {
        "machine": {**_cpu(), "load_before": load_before, "calibration_matmul_gflops_1thread": round(calib, 2)},
        "avatar": str(args.avatar), "points": N, "expressions": bundle.header["num_expr"],
        "bundle_bytes": bundle.size_bytes, "bundle_build_s": round(build_s, 2), "array_bytes": sizes,
        "bytes_per_point": round(per_point, 1), "lights_and_lut_bytes": fixed,
        "bundle_mb_100k_points": round((per_point * 100_000 + fixed) / 1e6, 1), "rows": [],
    }
    with serve_bundle(bundle) as url, browser() as br:
        page = Page(br, url)
        assert page.ready, page.page.evaluate("window.hravatar.errors")
        gl = page.page.evaluate("""(() => { const gl = document.createElement('canvas').getContext('webgl2');
            const e = gl.getExtension('WEBGL_debug_renderer_info');
            return e ? gl.getParameter(e.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER); })()""")
        result["webgl_renderer"] = gl
        p0 = la.reference.params
        # the page's loop redraws when a worker sort arrives: not here (only the timed frames draw)
        page.page.evaluate("window.hravatar.renderer.onSorted = null")
        for size in [] if args.screenshot_only else args.sizes:
            cam = la.camera(size)
            web = page.render(p0, cam)
            ref = python_render(la, p0, cam)
            row = {"size": size, "psnr_vs_python_db": round(psnr(web, ref), 2)}
            # every frame a new jaw (deformation) / the same as the interactive loop / only the view moves
            for kind in ("expression", "expression_async", "orbit"):
                times = []
                for i in range(args.frames):
                    patch = {"size": size, "azimuth": -30 + 60 * i / args.frames}
                    patch["jaw"] = 0.02 * i + (0.01 if kind == "expression_async" else 0) if kind != "orbit" else 0.0
                    # state change and draw in one evaluate: the page's own loop cannot draw in between
                    times.append(page.page.evaluate("([s, a]) => { const h = window.hravatar; "
                                                    "Object.assign(h.state, s); h.drawNow(a); "
                                                    "return h.renderer.lastTimes; }",
                                                    [patch, kind == "expression_async"]))
                med = {k: round(float(np.median([t[k] for t in times[1:]])), 1) for k in ("total", "deformSort")}
                row[f"{kind}_frame_ms"] = med["total"]
                row[f"{kind}_deform_readback_sort_ms"] = med["deformSort"]
            result["rows"].append(row)
        if args.screenshot:
            page.page.set_viewport_size({"width": 1000, "height": 640})
            if envs:  # the HDR light, its image behind the avatar
                page.page.select_option("#sel_light", "1")
                page.page.select_option("#sel_bg", "environment")
                page.page.evaluate("window.hravatar.set({size: 512, azimuth: 20, jaw: 0.15})")
            else:
                page.page.evaluate("window.hravatar.set({size: 512, azimuth: 20, jaw: 0.15, "
                                   "background: [0.5, 0.5, 0.5]})")
                page.page.evaluate("document.getElementById('sel_bg').value = 'grey'")
            page.page.evaluate("window.hravatar.drawNow()")
            page.page.wait_for_timeout(500)
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.page.screenshot(path=str(args.screenshot))
    if args.screenshot_only:
        return
    result["machine"]["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{N} points, {bundle.header['num_expr']} expressions: bundle {bundle.size_bytes / 1e6:.1f} MB "
          f"({per_point:.0f} B/point; 100k points: {result['bundle_mb_100k_points']} MB); WebGL: {gl}")
    print(f"{'size':>6} {'expression ms/frame':>20} {'(deform+read+sort)':>19} {'async ms/frame':>15} "
          f"{'(deform)':>9} {'orbit ms/frame':>15} {'PSNR vs Python':>15}")
    for r in result["rows"]:
        print(f"{r['size']:>6} {r['expression_frame_ms']:>20.1f} {r['expression_deform_readback_sort_ms']:>19.1f} "
              f"{r['expression_async_frame_ms']:>15.1f} {r['expression_async_deform_readback_sort_ms']:>9.1f} "
              f"{r['orbit_frame_ms']:>15.1f} {r['psnr_vs_python_db']:>15.2f}")
    print(f"load average before {load_before}, after {result['machine']['load_after']}; "
          f"calibration {calib:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
