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
    _check_hdr_header(path)
    try:
        with quiet_cv2():
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.dtype != np.float32:
        raise HRAvatarError(f"{path}: not a readable Radiance .hdr file (corrupt or truncated)")
    return _check(path, img[..., ::-1] if img.ndim == 3 else img)


#: largest environment map accepted (pixels): 16k x 8k
MAX_PIXELS = 16384 * 8192


def _check_hdr_header(path: Path) -> None:
    """Validate a Radiance header before decoding: the magic line, the ``-Y H +X W`` resolution line,
    a sane size, and at least the bytes such an image needs (run-length encoding packs a scan line
    into no fewer than ``4 + 8 * ceil(W / 127)`` bytes). A header claiming 999999996 rows in a 2 kB
    file is one clear error instead of an OpenCV assertion or a huge allocation."""
    with open(path, "rb") as f:
        head = f.read(65536)
    if not (head.startswith(b"#?RADIANCE") or head.startswith(b"#?RGBE")):
        raise HRAvatarError(f"{path}: not a Radiance .hdr file (no #?RADIANCE header)")
    end = head.find(b"\n\n")
    if end < 0:
        raise HRAvatarError(f"{path}: Radiance header is truncated (no blank line after it)")
    nl = head.find(b"\n", end + 2)
    res = head[end + 2 : nl if nl >= 0 else len(head)].split()
    if len(res) != 4 or res[0] not in (b"-Y", b"+Y") or res[2] not in (b"+X", b"-X"):
        line = b" ".join(res)[:40]
        raise HRAvatarError(f"{path}: Radiance resolution line {line!r} is not '-Y H +X W'; "
                            "the file is damaged or uses an unsupported orientation")
    try:
        h, w = int(res[1]), int(res[3])
    except ValueError:
        raise HRAvatarError(f"{path}: Radiance resolution line has no numbers; the file is damaged") from None
    if not (1 <= h <= 65536 and 1 <= w <= 65536 and h * w <= MAX_PIXELS):
        raise HRAvatarError(f"{path}: Radiance header claims {h} x {w} pixels; the file is damaged "
                            f"(at most {MAX_PIXELS} pixels are supported)")
    need = (nl + 1 if nl >= 0 else len(head)) + h * (4 + 8 * (-(-w // 127)))
    size = path.stat().st_size
    if size < need:
        raise HRAvatarError(f"{path}: .hdr is truncated ({size} bytes; a {h} x {w} image needs at least {need})")


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
