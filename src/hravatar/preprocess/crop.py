"""One square crop per video that keeps the whole head inside in every frame.

Face boxes (BlazeFace: roughly brows to chin, cheek to cheek) are filled where missing, median
smoothed over time, grown to head boxes (margins for hair above, ears at the sides, chin and neck
below) and united over the video. The square around that union is shifted/clamped into the frame and
resized to the output size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

#: head box from a face box of side s: left/right margins, margin above the box top, below the bottom
HEAD_MARGINS = {"side": 0.45, "top": 0.7, "bottom": 0.35}


@dataclass
class CropWindow:
    """A square window ``[x0, x0+side) x [y0, y0+side)`` in source pixels, resized to ``size``.

    A source pixel position ``p`` maps to crop pixels ``(p - (x0, y0)) * size / side``.
    """

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        """Output pixels per source pixel."""
        return self.size / self.side

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Source-frame pixel coordinates ``[...,2]`` -> crop pixel coordinates."""
        return (points - np.array([self.x0, self.y0], points.dtype)) * self.scale

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Crop and resize one frame ``[H,W,C]`` (uint8 or float) -> ``[size,size,C]`` (black outside)."""
        H, W = frame.shape[:2]
        x1, y1 = self.x0 + self.side, self.y0 + self.side
        sx0, sy0, sx1, sy1 = max(self.x0, 0), max(self.y0, 0), min(x1, W), min(y1, H)
        region = frame[sy0:sy1, sx0:sx1]
        if (sx0, sy0, sx1, sy1) != (self.x0, self.y0, x1, y1):
            pad = np.zeros((self.side, self.side) + frame.shape[2:], frame.dtype)
            pad[sy0 - self.y0 : sy1 - self.y0, sx0 - self.x0 : sx1 - self.x0] = region
            region = pad
        if self.side == self.size:
            return np.ascontiguousarray(region)
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_CUBIC
        out = cv2.resize(region, (self.size, self.size), interpolation=interp)
        return out.reshape((self.size, self.size) + frame.shape[2:])

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def fill_and_smooth(boxes: np.ndarray, window: int = 9) -> np.ndarray:
    """Fill missing boxes by linear interpolation (nearest at the ends) and median-filter over time.

    Args:
        boxes: ``[N,4]`` pixel boxes, ``NaN`` rows where missing (at least one row must be finite).
        window: median filter length in frames (odd).
    Returns:
        ``[N,4]`` float32 boxes.
    """
    from scipy.ndimage import median_filter

    boxes = np.asarray(boxes, np.float64)
    ok = np.isfinite(boxes[:, 0])
    if not ok.any():
        raise ValueError("no face box in any frame")
    t = np.arange(len(boxes))
    filled = np.stack([np.interp(t, t[ok], boxes[ok, k]) for k in range(4)], 1)
    if window > 1 and len(boxes) > 2:
        w = min(window, len(boxes) | 1)
        filled = median_filter(filled, size=(w, 1), mode="nearest")
    return filled.astype(np.float32)


def head_boxes(face_boxes: np.ndarray, margins: dict[str, float] | None = None) -> np.ndarray:
    """Grow face boxes ``[N,4]`` to head boxes ``[N,4]`` (hair, ears, chin and neck included)."""
    m = dict(HEAD_MARGINS, **(margins or {}))
    x0, y0, x1, y1 = face_boxes.T
    s = np.maximum(x1 - x0, y1 - y0)
    return np.stack([x0 - m["side"] * s, y0 - m["top"] * s, x1 + m["side"] * s, y1 + m["bottom"] * s], 1)


def crop_window(
    face_boxes: np.ndarray,
    frame_hw: tuple[int, int],
    size: int,
    smooth: int = 9,
    margins: dict[str, float] | None = None,
) -> CropWindow:
    """The square crop for a whole video.

    Args:
        face_boxes: ``[N,4]`` per-frame face boxes in source pixels (``NaN`` rows where missing).
        frame_hw: ``(H, W)`` of the source frames.
        size: output side in pixels.
        smooth: temporal median window (frames).
        margins: overrides of :data:`HEAD_MARGINS` (multiples of the face box side).
    Returns:
        :class:`CropWindow`; its square contains every frame's head box where the frame allows
        (the side is at most ``min(H, W)``: what is outside the video cannot be recovered).
    """
    H, W = frame_hw
    heads = head_boxes(fill_and_smooth(face_boxes, smooth), margins)
    ux0, uy0 = heads[:, 0].min(), heads[:, 1].min()
    ux1, uy1 = heads[:, 2].max(), heads[:, 3].max()
    side = float(max(ux1 - ux0, uy1 - uy0))
    side = min(side, float(min(H, W)))
    cx, cy = (ux0 + ux1) / 2, (uy0 + uy1) / 2
    side_i = int(round(side))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    if uy1 - uy0 > side_i:  # must cut: keep the top of the head, lose the neck
        y0 = int(round(uy0))
    x0 = min(max(x0, 0), W - side_i)
    y0 = min(max(y0, 0), H - side_i)
    return CropWindow(x0, y0, side_i, int(size))
