"""The subject folder: what preprocessing writes and training reads.

Layout (readable by HRAvatar's own data loader, which ignores the extra keys)::

    SUBJECT/
      image/00000.png        RGBA 8-bit: straight (not premultiplied) colour, alpha = matte,
                             colour set to 0 where alpha == 0 (background black)
      tracked_params.json    HRAvatar's keys + ours under "hravatar" (see below)
      manifest.json          ours: format, version, source, settings, per-frame quality; written
                             last, so its presence with "complete": true marks a finished folder
      albedo/00000.png       optional pseudo albedo (RGB 8-bit, HRAvatar's folder name)
      gt/albedo/00000.png    optional synthetic ground truth: albedo (RGB 8-bit, same colour space
                             as the images), gt/normal/ (RGB 16-bit, (n + 1) / 2 of the unit normal
                             in the OpenCV camera frame), gt/mask/ (8-bit), gt/relit/<name>/ (RGB)

``tracked_params.json``::

    "intrinsics": [fx, fy, cx, cy]            pixels
    "shapecode":  [[beta_1 .. beta_S]]        one per subject
    "00000": {                                one entry per frame, key = image name without suffix
        "expcode":      [[psi_1 .. psi_E]],
        "fullposecode": [[15 numbers]],        axis-angle: global, neck, jaw, eye_l, eye_r
        "translation":  [[tx, ty, tz]],        metres, added after skinning
        "world_mat":    4x4,                   HRAvatar's camera: diag(1,-1,-1,1) @ world_mat is the
                                               OpenCV world-to-camera of a world scaled by
                                               flame_scale (4 for "tracked_params.json")
        "crop_box":     [cx, cy, size]         ours: square face crop for the encoder, pixels
    }
    "hravatar": {"format": "hravatar-subject", "version": 1, "head_model": "open", "image_size": [H, W],
                 "K": 3x3 pixels, "num_shape": S, "num_expr": E, "flame_scale": 4.0, "frames": [...]}

Why ``world_mat`` carries a factor 4: HRAvatar's loader multiplies the skinned head (translation
included) by ``flame_scale = 4`` when the file is called ``tracked_params.json`` (1 for
``tracked_params_v2.json``) before applying ``world_mat``. Scaling the camera translation by the
same factor gives identical pixels, so we write ``world_mat = diag(1,-1,-1,1) @ [R | 4 t]`` where
``[R | t]`` is our OpenCV world-to-camera matrix in metres, and the reader divides it back out.
HRAvatar's loader also assumes the principal point at the image centre and one focal length
``W * fx / (2 cx)``; our ``K`` (under "hravatar") is exact and is what our reader uses.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hravatar.errors import HRAvatarError

FORMAT_NAME = "hravatar-subject"
FORMAT_VERSION = 1
#: HRAvatar's head scale for ``tracked_params.json`` (``tracked_params_v2.json`` uses 1).
HRAVATAR_FLAME_SCALE = 4.0
#: OpenGL <-> OpenCV camera axes flip (y and z).
FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])
CROP_SIZE = 224
#: what hravatar's tools write into a subject folder; ``--overwrite`` replaces these and keeps the rest
SUBJECT_ENTRIES = ("image", "tracked_params.json", "manifest.json", "albedo", "gt", "overlay.mp4", ".work",
                   "head_model.safetensors")


def frame_name(i: int) -> str:
    """File stem of frame ``i``: ``00000``, ``00001``, ..."""
    return f"{i:05d}"


@dataclass
class SubjectParams:
    """Tracked head parameters and camera of a subject (numpy or torch arrays; stored as float).

    Attributes:
        shape: ``[S]`` identity coefficients of the head model.
        expression: ``[T,E]`` per-frame expression coefficients.
        pose: ``[T,5,3]`` (or ``[T,15]``) axis-angle, radians: global, neck, jaw, eye_l, eye_r.
        translation: ``[T,3]`` metres, added after skinning (head-model/world frame).
        viewmat: ``[4,4]`` or ``[T,4,4]`` OpenCV world-to-camera, metres.
        K: ``[3,3]`` pixel intrinsics (pixel centres at +0.5).
        image_size: ``(H, W)`` pixels.
        head_model: head model name the parameters belong to (``"open"``, ``"flame2020"``, ...).
        crop_boxes: optional ``[T,3]`` face crop ``(cx, cy, size)`` in pixels for the encoder; see
            :func:`crop_box_from_points`. When absent the reader derives one (head model or mask).
        expr_names: optional names of the E expression components.
        eyelids: optional ``[T,2]`` HRAvatar eyelid coefficients (kept for compatibility).
    """

    shape: Any
    expression: Any
    pose: Any
    translation: Any
    viewmat: Any
    K: Any
    image_size: tuple[int, int]
    head_model: str = "open"
    crop_boxes: Any = None
    expr_names: list[str] | None = None
    eyelids: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(_np(self.expression).shape[0])


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def crop_box_from_points(points: Any, scale: float = 1.4) -> np.ndarray:
    """Square crop box around 2D points (landmarks or projected face vertices).

    Args:
        points: ``[P,2]`` pixel coordinates (x right, y down).
        scale: side length = ``scale * max(width, height)`` of the points' bounding box
            (1.4 like HRAvatar's MediaPipe crop).
    Returns:
        ``[3]`` float64 ``(cx, cy, size)`` in pixels.
    """
    p = _np(points).reshape(-1, 2)
    lo, hi = p.min(0), p.max(0)
    c = (lo + hi) / 2
    return np.array([c[0], c[1], scale * float(max(hi - lo))])


def to_uint8(img: Any) -> np.ndarray:
    """``[H,W,C]`` float in [0,1] (numpy/torch) or uint8 -> uint8 numpy."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    return (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: Path, img: np.ndarray) -> None:
    """Write an RGB(A) or gray uint8/uint16 image as PNG (colour order RGB[A])."""
    import cv2

    if img.ndim == 3 and img.shape[2] == 3:
        img = img[..., ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise HRAvatarError(f"{path}: could not write PNG; check the disk and permissions")


def read_image(path: Path) -> np.ndarray:
    """Read an image as RGB[A]/gray numpy (uint8 or uint16, as stored)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise HRAvatarError(f"{path}: cannot read image; the subject folder is damaged, re-run preprocessing")
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[..., ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def _rgba_u8(frame: Any) -> np.ndarray:
    a = to_uint8(frame)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"frames must be [H,W,4] RGBA (or [H,W,3] RGB), got {a.shape}")
    if a.shape[2] == 3:
        a = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], -1)
    else:
        a = a.copy()
        a[a[..., 3] == 0, :3] = 0
    return a


def tracked_params_dict(params: SubjectParams, names: list[str]) -> dict[str, Any]:
    """The ``tracked_params.json`` content for ``params`` (see the module docstring)."""
    T = len(names)
    H, W = params.image_size
    K = _np(params.K).reshape(3, 3)
    expr = _np(params.expression).reshape(T, -1)
    pose = _np(params.pose).reshape(T, 15)
    trans = _np(params.translation).reshape(T, 3)
    vm = _np(params.viewmat)
    vm = np.broadcast_to(vm.reshape(-1, 4, 4), (T, 4, 4)) if vm.size in (16, T * 16) else None
    if vm is None:
        raise ValueError("viewmat must be [4,4] or [T,4,4]")
    boxes = None if params.crop_boxes is None else _np(params.crop_boxes).reshape(T, 3)
    eyel = None if params.eyelids is None else _np(params.eyelids).reshape(T, -1)
    shape = _np(params.shape).reshape(-1)
    out: dict[str, Any] = {
        "intrinsics": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])],
        "shapecode": [shape.tolist()],
    }
    for i, n in enumerate(names):
        wm = vm[i].copy()
        wm[:3, 3] *= HRAVATAR_FLAME_SCALE
        wm = FLIP_YZ @ wm
        e: dict[str, Any] = {
            "expcode": [expr[i].tolist()],
            "fullposecode": [pose[i].tolist()],
            "translation": [trans[i].tolist()],
            "world_mat": wm.tolist(),
        }
        if boxes is not None:
            e["crop_box"] = boxes[i].tolist()
        if eyel is not None:
            e["eyelids"] = [eyel[i].tolist()]
        out[n] = e
    out["hravatar"] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "head_model": params.head_model,
        "image_size": [int(H), int(W)],
        "K": K.tolist(),
        "num_shape": int(shape.shape[0]),
        "num_expr": int(expr.shape[1]),
        "flame_scale": HRAVATAR_FLAME_SCALE,
        "frames": list(names),
        **({"expr_names": list(params.expr_names)} if params.expr_names else {}),
        **({"extra": params.extra} if params.extra else {}),
    }
    return out


def _write_maps(root: Path, sub: str, maps: Iterable[Any], names: list[str], kind: str) -> int:
    d = root / sub
    d.mkdir(parents=True, exist_ok=True)
    n = 0
    for name, m in zip(names, maps, strict=False):
        if kind == "normal":
            a = m.detach().cpu().numpy() if hasattr(m, "detach") else np.asarray(m)
            a = np.clip((a.astype(np.float64) + 1) / 2, 0, 1)
            img = (a * 65535 + 0.5).astype(np.uint16)
        else:
            img = to_uint8(m)
            if img.ndim == 3 and img.shape[2] == 1:
                img = img[..., 0]
        write_png(d / f"{name}.png", img)
        n += 1
    return n


def write_subject(
    path: str | Path,
    frames: Iterable[Any],
    params: SubjectParams,
    manifest: Mapping[str, Any] | None = None,
    *,
    albedos: Iterable[Any] | None = None,
    gt: Mapping[str, Iterable[Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a subject folder atomically (into ``.NAME.tmp-*`` next to it, then renamed).

    Args:
        path: the subject folder to create.
        frames: iterable (streamed: a generator is fine) of T images ``[H,W,4]`` RGBA (uint8 or float
            in [0,1], numpy or torch; alpha = matte). ``[H,W,3]`` means alpha = 1. Colour where alpha
            is 0 is set to black.
        params: :class:`SubjectParams` for the same T frames.
        manifest: free-form JSON-safe dict (e.g. ``{"source": "clip.mp4", "settings": {...},
            "quality": [{"frame": 0, "landmark_error_px": 1.2}, ...]}``); ``format``, ``version``,
            ``num_frames``, ``created`` and ``complete`` are added.
        albedos: optional T pseudo albedos ``[H,W,3]`` -> ``albedo/`` (HRAvatar's folder).
        gt: optional synthetic ground truth, key -> T maps: ``"albedo"`` ``[H,W,3]``, ``"normal"``
            ``[H,W,3]`` unit vectors in the OpenCV camera frame, ``"mask"`` ``[H,W(,1)]``, and
            ``"relit/<name>"`` ``[H,W,3]``.
        overwrite: replace an existing folder (only after the new one is complete): the entries a
            subject consists of (:data:`SUBJECT_ENTRIES`) are replaced, any other file in it is kept.
    Returns:
        ``path``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise HRAvatarError(f"{path}: already exists; pass overwrite=True (or --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        T = params.num_frames
        names = [frame_name(i) for i in range(T)]
        (tmp / "image").mkdir()
        n = 0
        H, W = params.image_size
        for i, f in enumerate(frames):
            if i >= T:
                raise ValueError(f"more frames than parameter rows ({T})")
            a = _rgba_u8(f)
            if a.shape[:2] != (H, W):
                raise ValueError(f"frame {i} is {a.shape[:2]}, params say image_size {(H, W)}")
            write_png(tmp / "image" / f"{names[i]}.png", a)
            n += 1
        if n != T:
            raise ValueError(f"got {n} frames for {T} parameter rows")
        (tmp / "tracked_params.json").write_text(json.dumps(tracked_params_dict(params, names)))
        if albedos is not None:
            _write_maps(tmp, "albedo", albedos, names, "rgb")
        for key, maps in (gt or {}).items():
            kind = "normal" if key == "normal" else "rgb"
            _write_maps(tmp, f"gt/{key}", maps, names, kind)
        man = dict(manifest or {})
        man.update(format=FORMAT_NAME, version=FORMAT_VERSION, num_frames=T,
                   image_size=[int(H), int(W)], head_model=params.head_model,
                   created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), complete=True)
        (tmp / "manifest.json").write_text(json.dumps(man, indent=1, default=_json_default))
        if path.exists():
            if not path.is_dir():
                raise HRAvatarError(f"{path}: exists and is not a folder; choose another output folder")
            # files that are not part of a subject (the user's own) move into the new folder
            for entry in path.iterdir():
                if entry.name not in SUBJECT_ENTRIES:
                    os.replace(entry, tmp / entry.name)
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def default_test_count(num_frames: int) -> int:
    """Size of the default test split (the last frames of the video).

    500 for long videos (> 3000 frames), 350 for INSTA-length ones (>= 2000), otherwise the last 15%
    (rounded, at least 1; 0 for a single frame).
    """
    if num_frames > 3000:
        return 500
    if num_frames >= 2000:
        return 350
    if num_frames < 2:
        return 0
    return max(1, round(0.15 * num_frames))
