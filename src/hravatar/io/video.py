"""Video decode and encode with PyAV (bundled FFmpeg).

Frames are uint8 RGB ``[H,W,3]`` numpy arrays, already turned upright according to the stream's
rotation metadata (the display matrix: phone videos are often stored sideways).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_path
from hravatar.progress import log, progress


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns without decoding everything.

    Attributes:
        fps: average frame rate (frames/s).
        num_frames: frame count from the container (may be an estimate; 0 if unknown).
        width, height: displayed size in pixels (after rotation).
        rotation: degrees counter-clockwise the stored frames are turned for display (0/90/180/270).
    """

    fps: float
    num_frames: int
    width: int
    height: int
    rotation: int


def _open(path: Path):  # -> av.container.InputContainer
    import av

    if not path.is_file():
        raise HRAvatarError(f"{path}: video not found")
    try:
        container = av.open(str(path))
    except Exception as e:  # av.error.* variants
        reason = getattr(e, "strerror", None) or type(e).__name__
        if path.stat().st_size == 0:
            reason = "the file is empty"
        msg = f"{path}: not a readable video ({reason}); it may be truncated or not a video: check or re-encode it"
        raise HRAvatarError(msg) from None
    if not container.streams.video:
        container.close()
        raise HRAvatarError(f"{path}: contains no video stream (an empty recording or an audio-only file)")
    return container


def _frame_rotation(frame, stream=None) -> int:
    """Counter-clockwise display rotation in degrees (0/90/180/270) of a decoded frame.

    FFmpeg attaches the container's display matrix to each frame; PyAV reports its rotation
    counter-clockwise. Older files may only carry a ``rotate`` stream tag (clockwise degrees).
    """
    try:
        rot = int(round(float(frame.rotation)))
    except Exception:
        rot = 0
    if rot == 0 and stream is not None:
        meta = {str(k).lower(): v for k, v in (getattr(stream, "metadata", None) or {}).items()}
        tag = meta.get("rotate")
        try:
            rot = -int(round(float(tag))) if tag else 0
        except ValueError:
            rot = 0
    return int(90 * round(rot / 90)) % 360


def _upright(img: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _resize(img: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return img
    import cv2

    h, w = img.shape[:2]
    if isinstance(size, int):
        s = size / min(h, w)
        wh = (max(1, round(w * s)), max(1, round(h * s)))
    else:
        wh = (int(size[0]), int(size[1]))
    if wh == (w, h):
        return img
    interp = cv2.INTER_AREA if wh[0] < w else cv2.INTER_LINEAR
    return cv2.resize(img, wh, interpolation=interp)


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's frame rate, frame count, displayed size and rotation (decodes one frame)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        n = int(stream.frames or 0)
        if n == 0 and stream.duration and stream.time_base:
            n = int(round(float(stream.duration * stream.time_base) * fps))
        try:
            first = next(container.decode(stream))
        except (StopIteration, Exception):
            raise HRAvatarError(f"{path}: video has no decodable frames") from None
        rot = _frame_rotation(first, stream)
        w, h = first.width, first.height
        if rot in (90, 270):
            w, h = h, w
        return VideoInfo(fps=fps, num_frames=n, width=w, height=h, rotation=rot)
    finally:
        container.close()


def iter_video(
    path: str | Path,
    stride: int = 1,
    max_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    show_progress: bool = True,
) -> Iterator[np.ndarray]:
    """Yield upright uint8 RGB frames ``[H,W,3]``.

    Args:
        path: video file.
        stride: keep every ``stride``-th frame.
        max_frames: stop after this many kept frames.
        size: resize to ``(width, height)``, or an int for the short side (aspect kept).
        show_progress: show a progress bar.
    Raises:
        HRAvatarError: unreadable file or no decodable frame. A truncated file yields the frames
        that decode and logs a warning.
    """
    path = Path(path)
    if stride < 1:
        raise ValueError("stride must be >= 1")
    container = _open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    total = int(stream.frames or 0)
    if total:
        total = (total + stride - 1) // stride
        if max_frames:
            total = min(total, max_frames)
    kept = 0
    bar = progress(total=total or None, desc=f"decode {path.name}", disable=not show_progress)
    try:
        index = -1
        gen = container.decode(stream)
        while True:
            try:
                frame = next(gen)
            except StopIteration:
                break
            except Exception as e:
                if kept == 0:
                    raise HRAvatarError(f"{path}: video has no decodable frames ({type(e).__name__})") from None
                log.warning("%s: decoding stopped after %d frames (%s); the file looks truncated", path, kept,
                            type(e).__name__)
                break
            index += 1
            if index % stride:
                continue
            img = frame.to_ndarray(format="rgb24")
            yield _resize(_upright(img, _frame_rotation(frame, stream)), size)
            kept += 1
            bar.update(1)
            if max_frames and kept >= max_frames:
                break
    finally:
        bar.close()
        container.close()
    if kept == 0:
        raise HRAvatarError(f"{path}: video has no decodable frames")
    if total and kept < total and not max_frames:
        log.warning("%s: expected %d frames but decoded %d; the file looks truncated", path, total, kept)


def read_video(
    path: str | Path,
    stride: int = 1,
    max_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    show_progress: bool = True,
) -> tuple[list[np.ndarray], VideoInfo]:
    """Decode a whole video: ``(frames, info)`` with frames as in :func:`iter_video`.

    ``info.fps`` is the rate of the returned frames (the source rate divided by ``stride``).
    """
    info = probe_video(path)
    frames = list(iter_video(path, stride, max_frames, size, show_progress))
    h, w = frames[0].shape[:2]
    return frames, VideoInfo(info.fps / stride, len(frames), w, h, info.rotation)


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    crf: int = 18,
    rotation: int = 0,
    show_progress: bool = False,
    total: int | None = None,
) -> Path:
    """Encode frames (uint8 or float in [0,1], RGB ``[H,W,3]``) as H.264/yuv420p mp4, atomically.

    Odd sizes are padded by one pixel (yuv420p needs even sizes). ``rotation`` (degrees
    counter-clockwise) is written as display-matrix metadata. The index (``moov``) is put at the
    front of the file (``faststart``), so browsers stream it and a cut-off copy still decodes
    up to the cut. Returns ``path``.
    """
    import av

    from hravatar.io.image import to_uint8

    path = Path(path)
    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = None
            bar = progress(total=total, desc=f"encode {path.name}", disable=not show_progress)
            for img in frames:
                img = to_uint8(np.asarray(img))
                if img.ndim == 3 and img.shape[2] == 4:
                    img = img[..., :3]
                if img.ndim == 2:
                    img = np.repeat(img[..., None], 3, axis=2)
                h, w = img.shape[:2]
                if stream is None:
                    from fractions import Fraction

                    stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height = w + (w % 2), h + (h % 2)
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "medium"}
                    if rotation:
                        stream.set_display_rotation(rotation)
                    size = (h, w)
                elif (h, w) != size:
                    raise ValueError(f"frame {n} is {w}x{h}, expected {size[1]}x{size[0]}")
                if w % 2 or h % 2:
                    img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
                bar.update(1)
            bar.close()
            if stream is None:
                raise HRAvatarError(f"{path}: no frames to write")
            for packet in stream.encode():
                out.mux(packet)
    return path
