"""Per-frame face detection on the full video frames (MediaPipe BlazeFace, full range).

The result is one box per frame (the largest face), ``NaN`` where no face was found, plus the number
of faces seen so callers can warn when several people are in the picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hravatar.progress import log, progress


@dataclass
class FaceTrack:
    """Face boxes of a video.

    Attributes:
        boxes: ``[N,4]`` float32 pixel boxes ``x0, y0, x1, y1`` of the largest face per frame in the
            source frame; rows are ``NaN`` where no face was detected.
        scores: ``[N]`` float32 detection confidence (0 where none).
        counts: ``[N]`` int32 number of faces detected per frame.
        frame_hw: ``(H, W)`` of the source frames.
        sampled: ``[N]`` bool, frames the detector ran on (all by default; see ``every`` of
            :func:`detect_faces`); rows of other frames are ``NaN`` and are interpolated by the crop.
    """

    boxes: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    frame_hw: tuple[int, int]
    sampled: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sampled is None:
            self.sampled = np.ones(len(self.boxes), bool)

    @property
    def found(self) -> np.ndarray:
        """``[N]`` bool: a face was detected in the frame."""
        return np.isfinite(self.boxes[:, 0])

    @property
    def sizes(self) -> np.ndarray:
        """``[N]`` box side in pixels (max of width and height; NaN where missing)."""
        return np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])

    def to_dict(self) -> dict[str, np.ndarray]:
        return {
            "boxes": self.boxes,
            "scores": self.scores,
            "counts": self.counts,
            "frame_hw": np.array(self.frame_hw, np.int64),
            "sampled": np.asarray(self.sampled, bool),
        }

    @classmethod
    def from_dict(cls, d: dict[str, np.ndarray]) -> FaceTrack:
        hw = tuple(int(x) for x in np.asarray(d["frame_hw"]))
        return cls(
            np.asarray(d["boxes"], np.float32),
            np.asarray(d["scores"], np.float32),
            np.asarray(d["counts"], np.int32),
            (hw[0], hw[1]),
            np.asarray(d["sampled"], bool) if "sampled" in d else None,
        )


def detect_faces(
    frames: Iterable[np.ndarray],
    total: int | None = None,
    min_confidence: float = 0.5,
    show_progress: bool = True,
    every: int = 1,
) -> FaceTrack:
    """Detect the largest face in every frame (or every ``every``-th frame).

    Args:
        frames: iterable of uint8 ``[H,W,3]`` RGB frames (all the same size).
        total: number of frames, for the progress bar.
        min_confidence: BlazeFace score threshold.
        every: run the detector on every ``every``-th frame only (and on each frame after one where
            it found nothing); the others get ``NaN`` boxes, filled by interpolation in the crop
            (:func:`hravatar.preprocess.crop.fill_and_smooth`). The crop is one square per video,
            the union of the smoothed head boxes, so a head that moves a little between two
            samples changes nothing.
    Returns:
        :class:`FaceTrack` with pixel boxes in the source frames.
    """
    from hravatar.preprocess.mediapipe_models import FaceDetector

    det = FaceDetector(min_confidence=min_confidence)
    boxes, scores, counts, sampled = [], [], [], []
    hw = (0, 0)
    every = max(1, int(every))
    missed = False
    try:
        for i, frame in enumerate(progress(frames, total=total, desc="detect faces", disable=not show_progress)):
            hw = (int(frame.shape[0]), int(frame.shape[1]))
            run = i % every == 0 or missed
            sampled.append(run)
            faces = det.detect(frame) if run else []
            missed = run and not faces
            counts.append(len(faces))
            if faces:
                f = faces[0]
                boxes.append([f.x0, f.y0, f.x1, f.y1])
                scores.append(f.score)
            else:
                boxes.append([np.nan] * 4)
                scores.append(0.0)
    finally:
        det.close()
    track = FaceTrack(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.array(counts, np.int32),
        hw,
        np.array(sampled, bool),
    )
    several = int((track.counts > 1).sum())
    if several:
        log.warning(f"several faces in {several} of {int(track.sampled.sum())} frames; using the largest one")
    return track
