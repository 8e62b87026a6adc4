"""``hravatar preprocess VIDEO -o SUBJECT``: one command from a video to training data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro


@dataclass
class PreprocessConfig:
    """Crop, matte, find landmarks and track the head in a video; write a subject folder."""

    video: Annotated[Path, tyro.conf.Positional]
    """The input video (mp4, mov, webm, ...), one person facing the camera."""
    output: Annotated[Path, tyro.conf.arg(aliases=["-o"])] = Path("subject")
    """Subject folder to write (image/*.png RGBA, tracked_params.json, manifest.json, overlay.mp4)."""
    head_model: Literal["open", "flame"] = "open"
    """Head model to track: the open model (default) or FLAME (needs --flame-path or $HRAVATAR_FLAME_PATH)."""
    flame_path: Path | None = None
    """Your FLAME model file (generic_model.pkl / flame2023.pkl), for --head-model flame."""
    size: int = 512
    """Side of the square output images in pixels."""
    fps: float | None = None
    """Resample the video to this frame rate (default: keep every frame)."""
    max_frames: int | None = None
    """Use at most this many frames (after resampling)."""
    min_frames: int = 30
    """Refuse clips with fewer frames than this (training needs enough frames)."""
    min_face_px: int = 64
    """Refuse videos whose face box is smaller than this many source pixels."""
    matter: str = "mediapipe"
    """Matting backend: 'mediapipe' or a plug-in 'package.module:ClassName' with a matte(image) method."""
    fov_deg: float = 50.0
    """Assumed horizontal field of view of the camera (initial focal length; refined by tracking)."""
    iterations: int = 400
    """Optimisation steps of the head tracking."""
    overlay: bool = True
    """Write overlay.mp4 (landmarks and tracked mesh over the frames) for checking."""
    overwrite: bool = False
    """Replace an existing, complete subject folder."""
    keep_torso: bool = False
    """Keep the whole person in the matte (shoulders, clothes). Default: a head-only matte (hair, face,
    ears, neck) cut at the tracked head mesh's neck and refined by colour, as the paper's data."""
    photometric: bool = True
    """Refine the landmark tracking photometrically (renders the tracked head and compares it with the
    frames; on by default: +0.36 dB held-out PSNR of the trained avatar on a real clip, about 2.5 min for
    216 frames; --no-photometric skips it)."""
    photometric_steps: int = 0
    """Joint refinement steps of --photometric (after 40 appearance-only steps), 4 frames per step;
    0: about 15 draws of every frame (15 x frames / 4, between 80 and 1500)."""
    photometric_resolution: int = 160
    """Render side in pixels of --photometric."""


def preprocess(cfg: PreprocessConfig) -> int:
    """Run preprocessing; returns the exit status (errors are raised as HRAvatarError)."""
    from hravatar.errors import HRAvatarError
    from hravatar.preprocess.pipeline import PipelineSettings, preprocess_video

    checks = [("--fps", cfg.fps is None or cfg.fps > 0, "a positive frame rate"),
              ("--max-frames", cfg.max_frames is None or cfg.max_frames >= 1, "at least 1"),
              ("--min-frames", cfg.min_frames >= 1, "at least 1"),
              ("--min-face-px", cfg.min_face_px >= 1, "at least 1"),
              ("--fov-deg", 1 <= cfg.fov_deg <= 170, "between 1 and 170 degrees"),
              ("--iterations", cfg.iterations >= 0, "0 or more"),
              ("--photometric-steps", cfg.photometric_steps >= 0, "0 or more"),
              ("--photometric-resolution", 16 <= cfg.photometric_resolution <= 4096, "between 16 and 4096")]
    for opt, ok, want in checks:
        if not ok:
            raise HRAvatarError(f"{opt}: {getattr(cfg, opt[2:].replace('-', '_'))} is out of range; use {want}")

    s = PipelineSettings(
        head_model=cfg.head_model,
        flame_path=cfg.flame_path,
        size=cfg.size,
        fps=cfg.fps,
        max_frames=cfg.max_frames,
        min_frames=cfg.min_frames,
        min_face_px=cfg.min_face_px,
        matter=cfg.matter,
        fov_deg=cfg.fov_deg,
        iterations=cfg.iterations,
        overlay=cfg.overlay,
        overwrite=cfg.overwrite,
        photometric=cfg.photometric,
        keep_torso=cfg.keep_torso,
        extra={"photometric": {"steps": cfg.photometric_steps, "resolution": cfg.photometric_resolution}},
    )
    out = preprocess_video(cfg.video, cfg.output, s)
    print(out)
    return 0
