"""Mapping variants on the real driver: which rows of the MediaPipe -> expression map help or hurt.

``python benchmarks/reenact_variants.py --work DIR [VARIANT ...]`` reuses ``benchmarks/reenact.py``'s
cached avatar A and its real-driver measurement (``real()``: MediaPipe on the driver and on the
output, Pearson correlation per blendshape and of head yaw / pitch), with the correspondence rows
swapped per variant:

* ``names``: name to name (the default); ``calibrated``: the fitted mouth rows;
* ``smile``: the fitted rows for ``mouthSmile/Dimple/Stretch`` only; ``half``: name to name with the
  other mouth rows at gain 0.5; ``nobrow`` / ``nomouth``: name to name with the brow / mouth rows at 0;
* ``readable-mouth-eyes`` / ``readable-smile-eyes``: a correspondence fitted on readable faces
  (``correspondence.probe(..., readable=True)``, 3 identities x 200 renders, about a minute), its
  rows for the mouth (or smiles) plus eyes and brows;
* ``headonly``: name to name with expressions, jaw and eyes held at their median (head motion only);
* ``names@512``: name to name, output rendered at 512 px for MediaPipe;
* ``nogain``: name to name with MediaPipe's head rotation as measured (``--head-gain none``; the
  default scales it by ``drive.HEAD_GAINS["calibrated"]``);
* ``nogaze``: name to name with the eye joints held at their median (no gaze transfer);
* ``browdown-half``: name to name with the ``browDown*`` rows at gain 0.5;
* ``tracked-head`` / ``procrustes-head``: name to name, with the driver's head rotation taken from our
  tracker on the driver (``benchmarks/reenact.py``'s cached ``real_tracked``: it fits the mesh with its
  expressions and jaw) or from a rigid Procrustes fit of MediaPipe's landmarks on expression-stable
  points (forehead, nose bridge and tip, temples, eye corners, :data:`STABLE`) to their mean shape over
  the clip, instead of MediaPipe's matrix (translation: MediaPipe's; head gain as the default);
* ``gt-face`` / ``gt-face-nogain``: name to name (with / without the head gain), rendered on avatar A's
  ground-truth face (the open head model with ``hravatar synth --readable-face``'s paint, A's shape
  and training light) instead of the trained avatar: the mapping without the avatar's own errors.

Writes benchmarks/results/reenact_variants.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reenact as bench  # noqa: E402

VARIANTS = ("names", "calibrated", "smile", "half", "readable-mouth-eyes", "readable-smile-eyes", "nobrow",
            "nomouth", "headonly", "names@512", "nogain", "nogaze", "browdown-half",
            "gt-face", "gt-face-nogain", "tracked-head", "procrustes-head")
#: MediaPipe face-mesh indices that expressions move little: forehead, nose bridge and tip, temples and
#: the face contour at eye level, eye corners.
STABLE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 109, 338, 67, 297, 103, 332, 54, 284, 21, 251, 162, 389,
          127, 356, 234, 454, 33, 133, 362, 263, 98, 327)
SMILE = ("mouthSmile", "mouthDimple", "mouthStretch")
EYES = ("eyeBlink", "eyeSquint", "eyeWide", "brow")


def _names_rows(gain) -> object:
    return lambda targets, recompute=False: {"rows": {n: [[n, gain(n)]] for n in targets}}


def _readable_rows(cache: Path):
    from hravatar.avatar import correspondence as corr
    from hravatar.avatar.drive import mapped_expressions

    targets = mapped_expressions()
    if not cache.is_file():
        d = corr.probe(targets, (0, 1, 2), 200, readable=True)
        ok = d["found"]
        A = corr.fit_forward(d["c"][ok], d["s"][ok], d["identity"][ok], d["neutral"][ok])
        cache.write_text(json.dumps({"targets": targets, "A": A.tolist()}))
    rec = json.loads(cache.read_text())
    rows = corr.inverse_rows(np.asarray(rec["A"]), rec["targets"])
    return lambda targets, recompute=False: {"rows": rows}


def _gt_renderer(la, work: Path):
    """``bench._render_all``'s replacement that renders avatar A's ground-truth face (A's camera at the
    requested size, its training light, black background)."""
    from hravatar.avatar import Camera, FrameParams
    from hravatar.synth.render import shade_maps, surface_maps
    from hravatar.synth.subject import rebuild_gt

    gt = rebuild_gt(work / "A")
    light = gt["lights"][gt["info"]["train_env"]]

    def render_all(_la, drv, size: int = 0) -> list[np.ndarray]:
        cam = la.camera(size)
        gcam = Camera(cam.viewmat.cpu(), cam.K.cpu(), cam.width, cam.height)
        out = []
        for t in range(len(drv.expression)):
            def f(x):
                return torch.as_tensor(np.asarray(x)[None], dtype=torch.float32)

            p = FrameParams(gt["shape"][None], f(drv.expression[t]), f(drv.pose[t]), f(drv.translation[t]))
            with torch.no_grad():
                img = shade_maps(surface_maps(gt["avatar"], p, gcam), gcam, light)["image"][0].clamp(0, 1)
            out.append((img.numpy() * 255 + 0.5).astype(np.uint8))
        return out

    return render_all


def procrustes_rotations(points: np.ndarray, idx=STABLE, iterations: int = 3) -> np.ndarray:
    """``[T,3,3]`` rotations (image axes x right, y down, z away: the OpenCV camera's) of a similarity
    Procrustes fit of each frame's landmarks ``points [T,478,3]`` (pixels) on ``idx`` to their mean
    shape (generalised Procrustes: the mean is re-estimated ``iterations`` times)."""
    P = np.asarray(points, np.float64)[:, list(idx)]
    P = P - P.mean(1, keepdims=True)
    ref = P[0]
    for _ in range(iterations):
        Rs, aligned = [], []
        for X in P:
            U, sv, Vt = np.linalg.svd(X.T @ ref)
            d = np.sign(np.linalg.det(U @ Vt))
            R = U @ np.diag([1.0, 1.0, d]) @ Vt  # X ~ scale * ref @ R.T
            Rs.append(R)
            aligned.append(X @ R / ((sv * [1.0, 1.0, d]).sum() / (ref ** 2).sum()))
        ref = np.mean(aligned, 0)
    return np.array(Rs)


def _head_swap(name: str, work: Path, video: Path, drive0):
    """``drive.drive_mediapipe`` with the driver's head rotation replaced (tracked / procrustes)."""
    from hravatar.avatar import drive

    if name == "tracked-head":
        from hravatar.data import load_subject

        ds = load_subject(work / "real_tracked", "all")
        R, _ = drive.tracked_head(ds.pose.numpy(), ds.translation.numpy(), ds.viewmats.numpy())
    else:
        from hravatar.io.video import read_video
        from hravatar.preprocess.mediapipe_models import FaceLandmarker

        frames, _ = read_video(video, show_progress=False)
        lmk = FaceLandmarker(require_task=True)
        try:
            pts = [lmk.detect(np.ascontiguousarray(f)) for f in frames]
        finally:
            lmk.close()
        R = procrustes_rotations(np.stack([p.points for p in pts]))

    def swapped(base, scores, matrices, *a, **k):
        M = np.array(matrices, np.float64)
        n = min(len(M), len(R))
        M[:n, :3, :3] = drive.GL_TO_CV @ R[:n] @ drive.GL_TO_CV  # mediapipe_head maps it back to R
        return drive0(base, scores, M, *a, **k)

    return swapped


def run_variant(name: str, la, work: Path, video: Path) -> dict:
    """Patch the correspondence for ``name``, run the real-driver measurement, restore."""
    from hravatar.avatar import correspondence as corr
    from hravatar.avatar import drive

    rows0, region0, map0, render0 = corr.calibrated_rows, corr.calibrated_region, drive.map_scores, bench._render_all
    drive0 = drive.drive_mediapipe
    size, signal = 256, "mediapipe-calibrated"
    try:
        if name in ("names", "names@512", "headonly", "nogaze", "tracked-head", "procrustes-head"):
            signal = "mediapipe-names"
            size = 512 if name == "names@512" else 256
        elif name in ("nogain", "gt-face", "gt-face-nogain"):
            signal = "mediapipe-names:none" if name.endswith("nogain") else "mediapipe-names"
            if name.startswith("gt-face"):
                bench._render_all = _gt_renderer(la, work)
        elif name == "calibrated":
            pass
        elif name == "smile":
            corr.calibrated_region = lambda n: n.startswith(SMILE)
        else:
            corr.calibrated_region = lambda n: True
            corr.calibrated_rows = {
                "half": _names_rows(lambda n: 0.5 if n.startswith("mouth") and not n.startswith(SMILE) else 1.0),
                "nobrow": _names_rows(lambda n: 0.0 if n.startswith("brow") else 1.0),
                "nomouth": _names_rows(lambda n: 0.0 if n.startswith("mouth") else 1.0),
                "browdown-half": _names_rows(lambda n: 0.5 if n.startswith("browDown") else 1.0),
            }.get(name) or _readable_rows(work / "readable_correspondence.json")
            if name == "readable-mouth-eyes":
                corr.calibrated_region = lambda n: region0(n) or n.startswith(EYES)
            elif name == "readable-smile-eyes":
                corr.calibrated_region = lambda n: n.startswith(SMILE + EYES)
        if name == "headonly":
            def still(*a, **k):
                return tuple(np.repeat(np.median(x, 0, keepdims=True), len(x), 0) for x in map0(*a, **k))

            drive.map_scores = still
        if name in ("tracked-head", "procrustes-head"):
            drive.drive_mediapipe = _head_swap(name, work, video, drive0)
        if name == "nogaze":
            def no_gaze(*a, **k):
                e, j, y = map0(*a, **k)
                return e, j, np.repeat(np.median(y, 0, keepdims=True), len(y), 0)

            drive.map_scores = no_gaze
        res, _ = bench.real({"real_tracked": work / "real_tracked"}, la, video, work, size, 0, (signal,))
    finally:
        corr.calibrated_rows, corr.calibrated_region, drive.map_scores = rows0, region0, map0
        bench._render_all, drive.drive_mediapipe = render0, drive0
    return dict(res["signals"][signal], render_size=size, driver_std=res["driver_std"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="benchmarks/reenact.py's cache folder (avatar A)")
    ap.add_argument("--real", type=Path, default=Path("../shared/data/videos/talking_man_d18.mp4"))
    ap.add_argument("--out", type=Path, default=bench.REPO / "benchmarks" / "results" / "reenact_variants.json")
    ap.add_argument("variants", nargs="*", default=list(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    a = ap.parse_args()
    bad = [v for v in a.variants if v not in VARIANTS]
    if bad:
        sys.exit(f"error: variants: unknown {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    from hravatar.avatar import load_avatar

    la = load_avatar(a.work / "avA", "cpu")
    rec = {"benchmark": "reenact_variants", "command": " ".join(sys.argv), "machine": bench.machine(),
           "video": a.real.name, "variants": {}}
    rec["machine"]["loadavg_before"] = os.getloadavg()
    shapes = bench.TARGET_SHAPES + bench.BROW_DOWN
    print("| variant | " + " | ".join(shapes) + " | mean | yaw | pitch | s |")
    print("|---|" + "---|" * (len(shapes) + 4))
    for v in a.variants:
        t = time.time()
        r = run_variant(v, la, a.work, a.real)
        r["seconds"], r["loadavg"] = round(time.time() - t, 1), os.getloadavg()
        rec["variants"][v] = r
        c = r["blendshape_corr"]
        print(f"| {v} | " + " | ".join(f"{c[k]:.2f}" for k in shapes)
              + f" | {r['mean_corr_target']:.2f} | {r['yaw_corr']:.2f} | {r['pitch_corr']:.2f} | {r['seconds']:.0f} |",
              flush=True)
    rec["machine"]["loadavg_after"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
