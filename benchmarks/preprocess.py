"""Benchmark: frames per second of the whole preprocessing (``hravatar preprocess``) at 512^2.

Runs decode, detection, crop, matting, landmarks + blendshapes, head tracking, overlay video and
the subject write on the shared real clip (or, when it is absent, on a synthetic clip rendered from
the open head model), without the photometric stage, and prints a JSON record and a table.

    python benchmarks/preprocess.py [--video PATH] [--size 512] [--max-frames N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--no-overlay", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the record here")
    a = ap.parse_args()

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
        from hravatar.preprocess.synthetic import synthetic_clip
        from test_preprocess_cli import write_video

        clip = synthetic_clip(load_head_model("open"), num_frames=120, size=a.size, fov_deg=30.0)
        video = write_video(tmp / "synthetic.mp4", clip.frames, fps=30)
    # warm caches (head model build, landmark embedding) so they are not timed
    landmark_embedding(load_head_model("open"))
    s = PipelineSettings(size=a.size, max_frames=a.max_frames, iterations=a.iterations,
                         overlay=not a.no_overlay, min_frames=1)
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
        "iterations": a.iterations,
        "overlay": not a.no_overlay,
        "wall_s": round(wall, 2),
        "fps": round(n / wall, 2),
        "stage_s": man["timings_s"],
        "mean_landmark_error_px": round(man["tracking"]["mean_landmark_error_px"], 3),
        "cpus": os.cpu_count(),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(rec, indent=1))
    print(f"\n| frames | size | wall s | frames/s | detect s | crop+matte+landmarks s | track s | overlay s | "
          f"landmark err px |\n|---|---|---|---|---|---|---|---|---|\n| {n} | {a.size} | {wall:.1f} | "
          f"{n / wall:.2f} | {rec['stage_s'].get('detect', 0)} | {rec['stage_s'].get('frames', 0)} | "
          f"{rec['stage_s'].get('track', 0)} | {rec['stage_s'].get('overlay', 0)} | "
          f"{rec['mean_landmark_error_px']} |")
    if a.json:
        a.json.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
