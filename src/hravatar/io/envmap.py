"""HDR environment maps: ``.hdr`` (Radiance RGBE, via OpenCV) and ``.exr`` (via ``openexr``).

Maps are equirectangular float32 ``[H,W,3]`` **RGB**, linear radiance. Negative values are clamped
to 0 on load; NaN/Inf values are rejected.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_path
from hravatar.io.image import quiet_cv2

SUFFIXES = (".hdr", ".exr")


def _check(path: Path, img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] < 3 or img.shape[0] < 2 or img.shape[1] < 2:
        raise HRAvatarError(f"{path}: expected an RGB environment map, got shape {img.shape}")
    img = np.ascontiguousarray(img[..., :3], dtype=np.float32)
    if not np.isfinite(img).all():
        raise HRAvatarError(f"{path}: environment map contains NaN or Inf values; repair or re-export it")
    return np.maximum(img, 0.0)


@contextlib.contextmanager
def _quiet_openexr() -> Iterator[None]:
    """Silence the OpenEXR library's own diagnostics (C++ on fd 2, Python prints on stdout) while
    reading: we report one clear line instead."""
    with contextlib.redirect_stdout(io.StringIO()), _quiet_fd2():
        yield


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    try:
        with _quiet_openexr(), OpenEXR.File(str(path)) as f:
            ch = f.channels()
            if "RGB" in ch:
                img = np.asarray(ch["RGB"].pixels)
            elif all(c in ch for c in "RGB"):
                img = np.stack([np.asarray(ch[c].pixels) for c in "RGB"], -1)
            elif "RGBA" in ch:
                img = np.asarray(ch["RGBA"].pixels)[..., :3]
            elif "Y" in ch:
                img = np.asarray(ch["Y"].pixels)
            else:
                raise HRAvatarError(f"{path}: EXR has no R, G, B (or Y) channels: {sorted(ch)}")
    except HRAvatarError:
        raise
    except Exception as e:  # openexr raises RuntimeError/OSError variants
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HRAvatarError(f"{path}: not a readable EXR file, corrupt or truncated ({reason})") from None
    return img.astype(np.float32)


def read_envmap(path: str | Path) -> np.ndarray:
    """Read an equirectangular ``.hdr``/``.exr`` as float32 RGB ``[H,W,3]`` (>= 0)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise HRAvatarError(f"{path}: unsupported environment map type; use .hdr or .exr")
    if not path.is_file():
        raise HRAvatarError(f"{path}: environment map not found")
    if suffix == ".exr":
        return _check(path, _read_exr(path))
    with quiet_cv2():
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.float32:
        raise HRAvatarError(f"{path}: not a readable Radiance .hdr file (corrupt or truncated)")
    return _check(path, img[..., ::-1] if img.ndim == 3 else img)


def write_envmap(path: str | Path, img: np.ndarray) -> Path:
    """Write float RGB ``[H,W,3]`` to ``.hdr`` (RGBE, ~1% precision) or ``.exr`` (float32), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise HRAvatarError(f"{path}: unsupported environment map type; use .hdr or .exr")
    arr = np.ascontiguousarray(np.asarray(img, dtype=np.float32)[..., :3])
    if arr.ndim != 3:
        raise ValueError(f"environment map must be [H,W,3], got {arr.shape}")
    with atomic_path(path) as tmp:
        if suffix == ".hdr":
            if not cv2.imwrite(str(tmp), np.ascontiguousarray(arr[..., ::-1])):
                raise HRAvatarError(f"{path}: could not write .hdr")
        else:
            import OpenEXR

            header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
            with OpenEXR.File(header, {"RGB": arr}) as f:
                f.write(str(tmp))
    return path
