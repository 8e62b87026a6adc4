"""Benchmark: frames per second of the whole preprocessing (``hravatar preprocess``) at 512^2.

Runs decode, detection, crop, matting, landmarks + blendshapes, head tracking, overlay video and
the subject write on the shared real clip (or, when it is absent, on a synthetic clip rendered from
the open head model), with the photometric stage (the command's default; ``--no-photometric`` skips
it), and prints a JSON record and a table.

    python benchmarks/preprocess.py [--video PATH] [--size 512] [--max-frames N] [--no-photometric] [--json out.json]

``--photometric-eval`` instead measures what the photometric refinement stage brings: on a synthetic
clip with known parameters, landmark error (against MediaPipe and against the true landmarks) and
rotation / jaw / expression errors of the landmark track and of the refined track; on the real clip
(skipped when absent), the colour error on the face region of (a) the appearance fitted with the
landmark track frozen and (b) the joint refinement, with the same number of steps, and the landmark
error of both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import calibration, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--iterations", type=int, default=None, help="tracking steps (default: the command's)")
    ap.add_argument("--no-overlay", action="store_true")
    ap.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=True,
                    help="include the photometric refinement stage (default: yes, as the command)")
    ap.add_argument("--json", type=Path, default=None, help="also write the record here")
    ap.add_argument("--photometric-eval", action="store_true", help="evaluate the photometric stage instead")
    ap.add_argument("--synthetic-frames", type=int, default=10)
    a = ap.parse_args()
    if a.photometric_eval:
        rec = photometric_eval(a)
        print(json.dumps(rec, indent=1))
        if a.json:
            a.json.write_text(json.dumps(rec, indent=1))
        return

    from hravatar.head import load_head_model
    from hravatar.preprocess.embedding import landmark_embedding
    from hravatar.preprocess.pipeline import PipelineSettings, preprocess_video
    from hravatar.progress import setup_logging

    setup_logging()
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "talking_man_d18.mp4"
    tmp = Path(tempfile.mkdtemp(prefix="hravatar-bench-"))
    video = a.video or (shared if shared.is_file() else None)
    if video is None:  # synthetic fallback
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers.synthetic_clip import synthetic_clip
        from test_preprocess_cli import write_video

        clip = synthetic_clip(load_head_model("open"), num_frames=120, size=a.size, fov_deg=30.0)
        video = write_video(tmp / "synthetic.mp4", clip.frames, fps=30)
    # warm caches (head model build, landmark embedding) so they are not timed
    landmark_embedding(load_head_model("open"))
    s = PipelineSettings(size=a.size, max_frames=a.max_frames, overlay=not a.no_overlay, min_frames=1,
                         photometric=a.photometric)
    if a.iterations:
        s.iterations = a.iterations
    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.time()
    out = preprocess_video(video, tmp / "subject", s)
    wall = time.time() - t0
    man = json.loads((out / "manifest.json").read_text())
    n = man["num_frames"]
    rec = {
        "benchmark": "preprocess",
        "video": str(video),
        "frames": n,
        "size": a.size,
        "iterations": s.iterations,
        "detect_every": s.detect_every,
        "overlay": not a.no_overlay,
        "photometric": a.photometric,
        "wall_s": round(wall, 2),
        "fps": round(n / wall, 2),
        "stage_s": man["timings_s"],
        "mean_landmark_error_px": round(man["tracking"]["mean_landmark_error_px"], 3),
        "cpus": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(tuple(load_before), os.getloadavg()),
        "calibration": calibration(),
    }
    print(json.dumps(rec, indent=1))
    st = rec["stage_s"]
    print(f"\n| frames | size | iterations | photometric | wall s | frames/s | detect s | crop+matte+landmarks s | "
          f"track s | photometric s | overlay s | landmark err px | load avg before/after |\n"
          f"|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {n} | {a.size} | {s.iterations} | {'yes' if a.photometric else 'no'} | {wall:.1f} | **{n / wall:.2f}** | "
          f"{st.get('detect', 0)} | {st.get('frames', 0)} | {st.get('track', 0)} | {st.get('photometric', 0)} | "
          f"{st.get('overlay', 0)} | {rec['mean_landmark_error_px']} | {load_before[0]} / {rec['load_avg_after'][0]} |")
    if a.json:
        a.json.write_text(json.dumps(rec, indent=1))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


def _synthetic_eval(n: int) -> dict:
    import numpy as np
    import torch

    from helpers.synthetic_clip import synthetic_clip
    from hravatar.geometry import axis_angle_to_matrix
    from hravatar.head import load_head_model
    from hravatar.preprocess.embedding import landmark_embedding
    from hravatar.preprocess.mediapipe_models import ARKIT_NAMES, FaceLandmarker
    from hravatar.preprocess.photometric import PhotometricConfig, refine_photometric
    from hravatar.preprocess.tracking import LandmarkHead, TrackingConfig, track

    model = load_head_model("open")
    emb = landmark_embedding(model)
    clip = synthetic_clip(model, num_frames=n, size=512, fov_deg=20.0,
                          expressions={"mouthSmileLeft": 0.6, "mouthSmileRight": 0.6})
    det = FaceLandmarker()
    res = [det.detect(f) for f in clip.frames]
    det.close()
    lm = np.stack([r.points[:, :2] for r in res])
    bs = np.stack([r.blendshapes for r in res])
    valid = np.ones(n, bool)
    tcfg = TrackingConfig(iterations=300, fps=10)
    t0 = time.time()
    base = track(model, emb, lm, valid, 512, bs, ARKIT_NAMES, focal_px=float(clip.K[0, 0]) * 1.2, cfg=tcfg,
                 show_progress=False)
    t_track = time.time() - t0
    t0 = time.time()
    ph = refine_photometric(model, emb, base, clip.frames, lm, valid, bs, ARKIT_NAMES, PhotometricConfig(),
                            tcfg, show_progress=False)
    t_photo = time.time() - t0
    head = LandmarkHead(model, emb, exact=True)
    good = torch.as_tensor(emb.weights > 0.5)
    jaw_names = set(model.meta.get("jaw_expressions", []))
    eidx = [i for i, nm in enumerate(model.expr_names) if nm not in jaw_names]

    def uv_of(shape, expr, pose, trans, vm, K):
        with torch.no_grad():
            p = head(shape, expr, pose, trans) @ vm[:3, :3].T + vm[:3, 3]
        return p[..., :2] / p[..., 2:] * K[0, 0] + K[0, 2]

    gt = uv_of(torch.zeros(model.num_shape), torch.as_tensor(clip.expression), torch.as_tensor(clip.pose),
               torch.as_tensor(clip.translation), torch.as_tensor(clip.viewmat), torch.as_tensor(clip.K))

    def metrics(r) -> dict:
        uv = uv_of(r.shape, r.expression, r.pose, r.translation, r.viewmat, r.K)
        Re, Rt = axis_angle_to_matrix(r.pose[:, 0]), axis_angle_to_matrix(torch.as_tensor(clip.pose[:, 0]))
        cos = (((Re.transpose(1, 2) @ Rt).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
        rot = np.degrees(torch.acos(cos).numpy())
        jaw = np.degrees(np.abs(r.pose[:, 2, 0].numpy() - clip.pose[:, 2, 0]))
        out = {
            "landmark_err_vs_mediapipe_px": float(r.landmark_error_px.mean()),
            "landmark_err_vs_truth_px": float((uv - gt).norm(dim=-1)[:, good].mean()),
            "rotation_err_mean_deg": float(rot.mean()), "rotation_err_max_deg": float(rot.max()),
            "jaw_err_mean_deg": float(jaw.mean()), "jaw_err_max_deg": float(jaw.max()),
            "expression_mae": float(np.abs(r.expression.numpy()[:, eidx] - clip.expression[:, eidx]).mean()),
            "focal_px": float(r.K[0, 0]),
        }
        return {k: round(v, 3) for k, v in out.items()}

    return {"frames": n, "size": 512, "true_focal_px": round(float(clip.K[0, 0]), 1),
            "landmarks_only": metrics(base), "photometric": metrics(ph.track),
            "colour_error_before": round(ph.photo_error_before, 5),
            "colour_error_after": round(ph.photo_error_after, 5),
            "track_s": round(t_track, 2), "photometric_s": round(t_photo, 2)}


def _real_eval(video: Path, size: int, max_frames: int | None) -> dict:
    import cv2
    import numpy as np

    from hravatar.head import load_head_model
    from hravatar.preprocess import pipeline as pl
    from hravatar.preprocess.embedding import landmark_embedding
    from hravatar.preprocess.mediapipe_models import ARKIT_NAMES
    from hravatar.preprocess.photometric import PhotometricConfig, refine_photometric
    from hravatar.preprocess.tracking import TrackingConfig

    tmp = Path(tempfile.mkdtemp(prefix="hravatar-photo-"))
    s = pl.PipelineSettings(size=size, max_frames=max_frames, iterations=300, min_frames=1)
    meta = pl.probe(video)
    work = pl.Work(tmp / ".work", pl._fingerprint(video, s))
    work.open()
    pl._stage_detect(work, video, s, meta)
    det = dict(np.load(work.path("detect.npz")))
    pl._stage_frames(work, video, s, det)
    model = load_head_model("open")
    fps = meta["fps"]
    pl._stage_track(work, s, model, det, fps)
    tr = pl._load_track(work.path("track.npz"), size)
    lm = np.load(work.path("landmarks.npz"))
    emb = landmark_embedding(model)
    cfg = PhotometricConfig()
    small = np.stack([cv2.resize(f, (cfg.resolution,) * 2, interpolation=cv2.INTER_AREA) for f in pl._frames(work)])
    tcfg = TrackingConfig(iterations=300, fps=fps)
    out = {"video": str(video), "frames": int(len(small)), "size": size, "resolution": cfg.resolution,
           "appearance_steps": cfg.appearance_steps, "steps": cfg.steps, "batch_frames": cfg.batch_frames}
    for name, geo in (("appearance_only", False), ("photometric", True)):
        t0 = time.time()
        r = refine_photometric(model, emb, tr, small, lm["points"][..., :2], lm["valid"], lm["blendshapes"],
                               ARKIT_NAMES, PhotometricConfig(refine_geometry=geo), tcfg, show_progress=False)
        out[name] = {
            "colour_error_landmark_track": round(r.photo_error_before, 5),
            "colour_error_final": round(r.photo_error_after, 5),
            "landmark_err_px": round(float(np.nanmean(r.track.landmark_error_px.numpy())), 3),
            "seconds": round(time.time() - t0, 1),
        }
    out["landmark_err_px_track"] = round(float(np.nanmean(tr.landmark_error_px.numpy())), 3)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return out


def photometric_eval(a: argparse.Namespace) -> dict:
    """Synthetic and real-clip evaluation of the photometric stage (see the module docstring)."""
    import torch

    from hravatar.progress import setup_logging

    setup_logging()
    rec: dict = {"benchmark": "preprocess-photometric", "load_avg_before": [round(x, 2) for x in os.getloadavg()],
                 "threads": torch.get_num_threads()}
    rec["synthetic"] = _synthetic_eval(a.synthetic_frames)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "talking_man_d18.mp4"
    video = a.video or (shared if shared.is_file() else None)
    rec["real"] = _real_eval(video, a.size, a.max_frames) if video else None
    rec["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return rec


if __name__ == "__main__":
    main()
