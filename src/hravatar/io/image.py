"""PNG/JPEG image read and write (RGB/RGBA, uint8), atomic, with float helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_path


@contextlib.contextmanager
def quiet_cv2() -> Iterator[None]:
    """Silence OpenCV's own error lines while reading (we raise one clear error instead)."""
    try:
        from cv2.utils import logging as cvlog

        level = cvlog.getLogLevel()
        cvlog.setLogLevel(cvlog.LOG_LEVEL_SILENT)
    except Exception:  # pragma: no cover - older OpenCV builds
        yield
        return
    try:
        yield
    finally:
        cvlog.setLogLevel(level)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H,W,3]`` or RGBA ``[H,W,4]`` (16-bit is scaled to 8-bit)."""
    path = Path(path)
    if not path.is_file():
        raise HRAvatarError(f"{path}: image not found")
    with quiet_cv2():
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise HRAvatarError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if img.dtype != np.uint8:
        raise HRAvatarError(f"{path}: unsupported image type {img.dtype}; expected 8- or 16-bit")
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        return np.ascontiguousarray(img[..., [2, 1, 0, 3]])
    return np.ascontiguousarray(img[..., ::-1])


def write_image(path: str | Path, img: np.ndarray) -> Path:
    """Write ``img`` (uint8 or float in [0,1]; ``[H,W]``, ``[H,W,3]`` RGB or ``[H,W,4]`` RGBA) atomically.

    The format follows the suffix (``.png`` keeps alpha; ``.jpg`` drops it).
    """
    path = Path(path)
    arr = to_uint8(np.asarray(img))
    if arr.ndim == 3 and arr.shape[2] == 4:
        bgr = arr[..., [2, 1, 0, 3]]
        if path.suffix.lower() in (".jpg", ".jpeg"):
            bgr = bgr[..., :3]
    elif arr.ndim == 3 and arr.shape[2] == 3:
        bgr = arr[..., ::-1]
    elif arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        bgr = arr.reshape(arr.shape[0], arr.shape[1])
    else:
        raise ValueError(f"image must be [H,W], [H,W,3] or [H,W,4], got {arr.shape}")
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(bgr)):
            raise HRAvatarError(f"{path}: could not encode image (unsupported suffix?)")
    return path


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 ``[...]`` -> float32 in [0,1] (float input is returned as float32)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float in [0,1] (clipped) or uint8 -> uint8, rounding to nearest."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return (np.clip(np.nan_to_num(img.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
