"""Cross-reenactment benchmark: which driver signal transfers another person's face best.

Two measurements (``python benchmarks/reenact.py --work DIR``; every step is cached in DIR):

1. Synthetic ground truth. ``hravatar synth --readable-face`` identities A (seed 0, ``--avatar-size``
   px, default 256, 120 frames) and B (seed 1, 256 px, 80 frames; ``--plain-face``: the default paint, whose blinks and
   brows MediaPipe barely reads); an avatar is trained on A at its resolution (``--iterations``,
   default 800); B drives it. The ground truth is
   A's ground-truth avatar rendered with B's exact expression, jaw and eyes, and B's head motion
   since its first frame applied around A's reference pose. Reported per signal: PSNR / SSIM /
   LPIPS of the reenacted frames, and the parameter errors (expression coefficients that B's
   animation drives, jaw angle, head rotation).
2. A real driver, no ground truth: ``--real VIDEO`` (the shared 480x480 talking-man clip) drives
   the same synthetic avatar A (a different "person"). MediaPipe's face landmarker runs on the
   driver and on the reenacted output (rendered at ``--size``, default 256 px: A's training
   resolution); reported per signal: the Pearson
   correlation over time of each blendshape score (jawOpen, eyeBlinkLeft/Right,
   mouthSmileLeft/Right, browInnerUp, ...) and of head yaw / pitch.

Signals: ``mediapipe-names`` / ``mediapipe-calibrated`` (MediaPipe ARKit scores + head transform,
relative transfer; ``hravatar reenact --correspondence names|calibrated|calibrated-all``), ``tracked``
(our tracker run on the driver's video, relative transfer), ``encoder`` (the avatar's per-subject
expression encoder on the driver's crops; head pose from tracking), and on the synthetic driver
``oracle`` (B's exact parameters through the same relative mapping: the avatar's own ceiling).
Writes benchmarks/results/reenact.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TARGET_SHAPES = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "browInnerUp")
SIGNALS = ("mediapipe-names", "mediapipe-calibrated", "mediapipe-calibrated-all", "tracked", "encoder")
MOVED_STD = 0.02
BROW_DOWN = ("browDownLeft", "browDownRight")
EXTRA_SHAPES = ("mouthFunnel", "mouthPucker", "mouthClose", "eyeSquintLeft", "eyeSquintRight", "browDownLeft",
                "browDownRight", "eyeLookOutLeft", "eyeLookInLeft")


def _cli(*args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    subprocess.run([sys.executable, "-m", "hravatar.cli", *args], check=True, env=env)


def machine() -> dict:
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    a = torch.randn(512, 512)
    t = time.perf_counter()
    for _ in range(20):
        a @ a
    calib = (time.perf_counter() - t) / 20 * 1e3
    return {"cpu": cpu, "avx512": "avx512f" in flags, "avx2": "avx2" in flags, "cores": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "calibration_matmul512_ms": round(calib, 2)}


# ---- preparation (cached) ------------------------------------------------------------------------
def prepare(work: Path, real: Path | None, iterations: int, readable: bool = True, size_a: int = 256
            ) -> dict[str, Path]:
    from hravatar.apps.common import to_uint8, write_frames
    from hravatar.data import load_subject
    from hravatar.preprocess.pipeline import PipelineSettings, preprocess_video

    p = {"A": work / "A", "B": work / "B", "avatar": work / "avA", "B_video": work / "B.mp4",
         "B_tracked": work / "B_tracked", "real_tracked": work / "real_tracked"}
    face = ("--readable-face",) if readable else ()
    if not (p["A"] / "manifest.json").is_file():
        _cli("synth", str(p["A"]), "--size", str(size_a), "--frames", "120", "--seed", "0", "--overwrite", *face)
    if not (p["B"] / "manifest.json").is_file():
        _cli("synth", str(p["B"]), "--size", "256", "--frames", "80", "--seed", "1", "--overwrite", *face)
    if not (p["avatar"] / "avatar.safetensors").is_file() and not any(p["avatar"].glob("*.safetensors")):
        _cli("train", str(p["A"]), "-o", str(p["avatar"]), "--iterations", str(iterations),
             "--encoder-input-size", "96")
    if not p["B_video"].is_file():
        ds = load_subject(p["B"], "all")
        write_frames(p["B_video"], (to_uint8(ds[i].image) for i in range(len(ds))), fps=25.0, total=len(ds))
    if not (p["B_tracked"] / "tracked_params.json").is_file():
        preprocess_video(p["B_video"], p["B_tracked"], PipelineSettings(min_frames=2, photometric=False))
    if real is not None and not (p["real_tracked"] / "tracked_params.json").is_file():
        preprocess_video(real, p["real_tracked"], PipelineSettings(min_frames=2, photometric=False))
    return p


# ---- helpers -------------------------------------------------------------------------------------
def _render_all(la, drv, size: int = 0) -> list[np.ndarray]:
    from hravatar.apps.common import to_uint8
    from hravatar.avatar import FrameParams

    cam, ref, dev = la.camera(size), la.reference, la.device
    out = []
    for t in range(len(drv.expression)):
        def f(x):
            return torch.as_tensor(np.asarray(x)[None], dtype=torch.float32, device=dev)

        p = FrameParams(ref.shape, f(drv.expression[t]), f(drv.pose[t]), f(drv.translation[t]))
        with torch.no_grad():
            out.append(to_uint8(la.render(p, cam).image[0]))
    return out


def _driver(signal: str, driver: Path, la, work: Path, max_frames: int = 0):
    """``signal``: tracked, encoder, or mediapipe-<correspondence>[:<head gain>[:<expression gain>]]
    (names / calibrated / calibrated-all; head gain and expression gain calibrated / none, empty or
    absent: the command's default)."""
    from hravatar.apps.reenact import ReenactConfig, load_driver

    signal, _, gains = signal.partition(":")
    gain, _, egain = gains.partition(":")
    expr, _, corr = signal.partition("-")
    cfg = ReenactConfig(avatar=la.path, driver=driver, expressions=expr, correspondence=corr or "default",
                        head_gain=gain or "default", expression_gain=egain or "default", max_frames=max_frames)
    return load_driver(cfg, la, work / "unused.mp4")


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from hravatar.avatar.drive import matrix_to_rotvec, rotvec_to_matrix

    return np.degrees(np.linalg.norm(matrix_to_rotvec(rotvec_to_matrix(a) @ np.swapaxes(rotvec_to_matrix(b), -1, -2)),
                                     axis=-1))


# ---- 1. synthetic ground truth -------------------------------------------------------------------
def synthetic(p: dict[str, Path], la, work: Path, signals: tuple[str, ...], max_frames: int = 0
              ) -> tuple[dict, dict, list]:
    from hravatar.avatar import Camera, FrameParams
    from hravatar.avatar.drive import avatar_base, drive_tracked
    from hravatar.data import load_subject
    from hravatar.metrics import lpips, lpips_available, psnr, ssim
    from hravatar.synth.render import shade_maps, surface_maps
    from hravatar.synth.subject import rebuild_gt

    dsB = load_subject(p["B"], "all")
    eB, pB, tB, vB = (x.numpy() for x in (dsB.expression, dsB.pose, dsB.translation, dsB.viewmats))
    base = avatar_base(la)
    gt_base = avatar_base(la)
    gt_base.neutral[:], gt_base.neutral_jaw = 0.0, 0.0
    gt_e, gt_p, gt_t = drive_tracked(gt_base, eB, pB, tB, vB, relative=False)
    n = max_frames or len(gt_e)
    gt_e, gt_p, gt_t = gt_e[:n], gt_p[:n], gt_t[:n]
    # ground-truth frames: A's ground-truth avatar with those parameters, A's camera and training light
    gtA = rebuild_gt(p["A"])
    light = gtA["lights"][gtA["info"]["train_env"]]
    cam = la.camera(0)
    gcam = Camera(cam.viewmat.cpu(), cam.K.cpu(), cam.width, cam.height)
    gt_frames = []
    with torch.no_grad():
        for t in range(len(gt_e)):
            fp = FrameParams(gtA["shape"][None], torch.as_tensor(gt_e[t:t + 1]), torch.as_tensor(gt_p[t:t + 1]),
                             torch.as_tensor(gt_t[t:t + 1]))
            gt_frames.append(shade_maps(surface_maps(gtA["avatar"], fp, gcam), gcam, light)["image"][0].clamp(0, 1))
    names = base.expr_names
    driven = [j for j, n in enumerate(names) if np.abs(gt_e[:, j]).max() > 1e-3]
    runs = {"oracle": tuple(x[:n] for x in drive_tracked(base, eB, pB, tB, vB))}
    res: dict = {"frames": len(gt_e), "driven_expressions": [names[j] for j in driven], "signals": {}}
    for sig in signals:
        d = _driver(sig, p["B"] if sig.startswith("mediapipe") else p["B_tracked"], la, work)
        runs[sig] = (d.expression[:n], d.pose[:n], d.translation[:n])
    use_lpips = lpips_available()
    strips = {}
    for sig, (e, po, tr) in runs.items():
        from hravatar.apps.reenact import Driver

        imgs = _render_all(la, Driver([], e, po, tr, 25.0))
        pred = [torch.as_tensor(i).float() / 255 for i in imgs]
        ps = [float(psnr(a[None], b[None])) for a, b in zip(pred, gt_frames, strict=True)]
        ss = [float(ssim(a[None], b[None])) for a, b in zip(pred, gt_frames, strict=True)]
        lp = [float(lpips(a[None], b[None])) for a, b in zip(pred, gt_frames, strict=True)] if use_lpips else []
        res["signals"][sig] = {
            "psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "lpips": float(np.mean(lp)) if lp else None,
            "expr_mae": float(np.abs(e[:, driven] - gt_e[:, driven]).mean()),
            "expr_corr": float(np.nanmean([_corr(e[:, j], gt_e[:, j]) for j in driven])),
            "jaw_mae_deg": float(np.degrees(np.abs(po[:, 2, 0] - gt_p[:, 2, 0]).mean())),
            "jaw_corr": _corr(po[:, 2, 0], gt_p[:, 2, 0]),
            "head_rot_err_deg": float(_angle_deg(po[:, 0], gt_p[:, 0]).mean()),
            "eye_rot_err_deg": float(_angle_deg(po[:, 3:], gt_p[:, 3:]).mean()),
        }
        strips[sig] = imgs
    res["lpips_net"] = "alex" if use_lpips else None
    gt_u8 = [(g.numpy() * 255 + 0.5).astype(np.uint8) for g in gt_frames]
    return res, strips, gt_u8


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# ---- 2. a real driver: MediaPipe on driver and output --------------------------------------------
def _yaw_pitch(mats: np.ndarray) -> np.ndarray:
    """``[T,2]`` yaw, pitch (degrees) of the head relative to the first frame, camera frame."""
    from scipy.spatial.transform import Rotation

    from hravatar.avatar.drive import mediapipe_head

    R, _ = mediapipe_head(mats)
    return np.degrees(Rotation.from_matrix(R @ R[0].T).as_euler("YXZ")[:, :2])


def real(p: dict[str, Path], la, video: Path, work: Path, size: int, max_frames: int, signals: tuple[str, ...]
         ) -> tuple[dict, dict]:
    from hravatar.avatar.drive import mediapipe_signal
    from hravatar.head.arkit import ARKIT_NAMES
    from hravatar.io.video import read_video

    frames, _ = read_video(video, max_frames=max_frames or None, show_progress=False)
    s_drv, m_drv, _ = mediapipe_signal(frames, total=len(frames))
    yp_drv = _yaw_pitch(m_drv)
    col = {n: i for i, n in enumerate(ARKIT_NAMES)}
    res: dict = {"video": video.name, "frames": len(frames), "render_size": size,
                 "driver_std": {n: float(s_drv[:, col[n]].std()) for n in TARGET_SHAPES + EXTRA_SHAPES},
                 "signals": {}}
    # target blendshapes the driver really moves (score std >= MOVED_STD): a correlation with a flat
    # driver curve measures MediaPipe's noise, not the transfer
    moved = [k for k in TARGET_SHAPES if res["driver_std"][k] >= MOVED_STD]
    res["moved_targets"], res["moved_std_threshold"] = moved, MOVED_STD
    outs = {}
    for sig in signals:
        d = _driver(sig, video if sig.startswith("mediapipe") else p["real_tracked"], la, work, max_frames)
        n = min(len(d.expression), len(frames))
        from hravatar.apps.reenact import Driver

        imgs = _render_all(la, Driver([], d.expression[:n], d.pose[:n], d.translation[:n], 25.0), size)
        s_out, m_out, found = mediapipe_signal(imgs, total=len(imgs))
        yp_out = _yaw_pitch(m_out)
        corr = {k: _corr(s_drv[:n, col[k]], s_out[:, col[k]]) for k in TARGET_SHAPES + EXTRA_SHAPES}
        res["signals"][sig] = {
            "blendshape_corr": corr,
            "mean_corr_target": float(np.nanmean([corr[k] for k in TARGET_SHAPES])),
            "mean_corr_moved": float(np.nanmean([corr[k] for k in moved])),
            "yaw_corr": _corr(yp_drv[:n, 0], yp_out[:, 0]),
            "pitch_corr": _corr(yp_drv[:n, 1], yp_out[:, 1]),
            "output_face_found": float(found.mean()),
        }
        outs[sig] = imgs
    return res, {"frames": frames, **outs}


def table(rec: dict) -> str:
    lines = ["synthetic ground truth (A driven by B; mean over frames)",
             "| signal | PSNR dB | SSIM | LPIPS | expr MAE | expr corr | jaw MAE deg | jaw corr | head rot deg "
             "| eye rot deg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s, r in rec["synthetic"]["signals"].items():
        lp = "n/a" if r["lpips"] is None else f"{r['lpips']:.3f}"
        lines.append(f"| {s} | {r['psnr']:.2f} | {r['ssim']:.3f} | {lp} | {r['expr_mae']:.3f} | {r['expr_corr']:.2f} "
                     f"| {r['jaw_mae_deg']:.2f} | {r['jaw_corr']:.2f} | {r['head_rot_err_deg']:.2f} "
                     f"| {r['eye_rot_err_deg']:.2f} |")
    if rec.get("real"):
        lines += ["", f"real driver {rec['real']['video']} ({rec['real']['frames']} frames): MediaPipe on driver vs "
                  "output, Pearson correlation over time",
                  "| signal | " + " | ".join(TARGET_SHAPES + BROW_DOWN) + " | mean | mean moved | yaw | pitch |",
                  "|---|" + "---|" * (len(TARGET_SHAPES) + len(BROW_DOWN) + 4)]
        for s, r in rec["real"]["signals"].items():
            c = r["blendshape_corr"]
            lines.append(f"| {s} | " + " | ".join(f"{c[k]:.2f}" for k in TARGET_SHAPES + BROW_DOWN)
                         + f" | {r['mean_corr_target']:.2f} | {r['mean_corr_moved']:.2f} | {r['yaw_corr']:.2f} "
                         f"| {r['pitch_corr']:.2f} |")
        lines.append(f"(mean moved: over the targets the driver moves, score std >= {MOVED_STD}: "
                     f"{', '.join(rec['real']['moved_targets'])})")
    return "\n".join(lines)


def strip_image(path: Path, rows: list[list[np.ndarray]], height: int = 160) -> None:
    """Rows of images, resized to ``height``, stacked into one PNG."""
    import cv2

    def fit(img):
        h, w = img.shape[:2]
        return cv2.resize(img, (round(w * height / h), height), interpolation=cv2.INTER_AREA)

    lines = [np.concatenate([fit(i) for i in row], 1) for row in rows]
    width = max(x.shape[1] for x in lines)
    lines = [np.pad(x, ((0, 2), (0, width - x.shape[1]), (0, 0))) for x in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(lines, 0)[..., ::-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="cache folder (synthetic subjects, avatar, drivers)")
    ap.add_argument("--real", type=Path, default=None, help="a real driver video (e.g. the shared talking-man clip)")
    ap.add_argument("--iterations", type=int, default=800, help="training iterations of avatar A")
    ap.add_argument("--avatar-size", type=int, default=256,
                    help="identity A's image size (px), which avatar A is trained at (needs a fresh --work)")
    ap.add_argument("--size", type=int, default=256, help="render size for the real-driver measurement")
    ap.add_argument("--max-frames", type=int, default=0, help="real driver: first N frames (0 = all)")
    ap.add_argument("--synthetic-frames", type=int, default=0, help="synthetic driver: first N frames (0 = all)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reenact.json")
    ap.add_argument("--strip", type=Path, default=None, help="write a side-by-side strip PNG here")
    ap.add_argument("--signals", default=",".join(SIGNALS), help=f"comma-separated subset of {','.join(SIGNALS)}")
    ap.add_argument("--plain-face", action="store_true",
                    help="synthesize A and B without --readable-face (the earlier benchmark; needs a fresh --work)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from hravatar.avatar import load_avatar

    load_before = os.getloadavg()
    t0 = time.time()
    p = prepare(a.work, a.real, a.iterations, readable=not a.plain_face, size_a=a.avatar_size)
    t_prep = time.time() - t0
    la = load_avatar(p["avatar"], "cpu")
    t1 = time.time()
    signals = tuple(x for x in a.signals.split(",") if x)
    syn, syn_imgs, gt = synthetic(p, la, a.work, signals, a.synthetic_frames)
    tr = json.loads((p["avatar"] / "training.json").read_text()) if (p["avatar"] / "training.json").is_file() else {}
    rec: dict = {"benchmark": "reenact", "command": " ".join(sys.argv), "machine": machine(),
                 "avatar": {"subject": f"hravatar synth --seed 0 --size {a.avatar_size} --frames 120"
                            + ("" if a.plain_face else " --readable-face"),
                            "iterations": tr.get("iterations", a.iterations), "encoder_input": 96,
                            "image_size": tr.get("image_size"), "train_frames": tr.get("train_frames"),
                            "points": tr.get("points"), "train_seconds": tr.get("train_seconds"),
                            "final_psnr": tr.get("final_psnr")},
                 "synthetic": syn}
    t2 = time.time()
    real_imgs = None
    if a.real is not None:
        rec["real"], real_imgs = real(p, la, a.real, a.work, a.size, a.max_frames, signals)
    rec["timings_s"] = {"prepare": round(t_prep, 1), "synthetic": round(t2 - t1, 1), "real": round(time.time() - t2, 1)}
    rec["machine"]["loadavg_before"], rec["machine"]["loadavg_after"] = load_before, os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rec, indent=1) + "\n")
    print(table(rec))
    print(f"\nload average before/after: {load_before} / {os.getloadavg()}; wrote {a.out}")
    if a.strip is not None and real_imgs is not None:
        T = len(real_imgs["frames"])
        pick = [int(x) for x in np.linspace(0, T - 1, 6)]
        rows = [[real_imgs["frames"][i] for i in pick]] + [[real_imgs[s][i] for i in pick]
                                                            for s in signals]
        strip_image(a.strip, rows)
        print(f"wrote {a.strip} (rows: driver, {', '.join(signals)}; frames {pick})")


if __name__ == "__main__":
    main()
