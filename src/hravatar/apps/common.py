"""What the avatar applications share besides the runtime (:mod:`hravatar.avatar`): writing frames,
environment maps, parsing ``NAME=VALUE`` edits of expressions and head rotation.

Public API::

    img = to_uint8(av.render(p, cam).image[0])
    write_frames("out.mp4", frames, fps=25, total=n)  # mp4 (H.264) or a single .png, atomically
    env = load_environment("MAP.hdr", av, rotation=0, exposure=0, auto_exposure=True)
    p = apply_assignments(av, p, parse_assignments(["jawOpen=0.5", "yaw=0.3"], av.expr_names))
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from hravatar.avatar import Avatar, Camera, FrameParams
from hravatar.avatar.load import DEFAULT_FPS
from hravatar.errors import HRAvatarError
from hravatar.geometry import compose_axis_angle, euler_to_axis_angle
from hravatar.light_priors import matched_exposure
from hravatar.progress import log


def to_uint8(img: Tensor | np.ndarray) -> np.ndarray:
    """``[H,W,3]`` image in [0,1] (clamped) -> uint8 numpy."""
    a = img.detach().float().cpu().numpy() if isinstance(img, Tensor) else np.asarray(img, np.float32)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def hstack(images: list[np.ndarray], gap: int = 2, height: int | None = None) -> np.ndarray:
    """uint8 images side by side, resized to ``height`` (default: the first one's)."""
    import cv2

    h = height or images[0].shape[0]
    out = []
    for i, im in enumerate(images):
        if im.shape[0] != h:
            im = cv2.resize(im, (max(1, round(im.shape[1] * h / im.shape[0])), h), interpolation=cv2.INTER_AREA)
        out.append(im)
        if gap and i < len(images) - 1:
            out.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(out, 1)


def write_frames(path: str | Path, frames: Iterable[np.ndarray], fps: float = DEFAULT_FPS,
                 total: int | None = None) -> Path:
    """Write uint8 ``[H,W,3]`` frames atomically: ``.mp4`` (H.264), or ``.png`` (the first frame only,
    the rest are still consumed). Returns ``path``."""
    path = Path(path)
    suf = path.suffix.lower()
    if suf == ".mp4":
        from hravatar.io.video import write_video

        return write_video(path, frames, fps=fps, total=total)
    if suf in (".png", ".jpg", ".jpeg"):
        from hravatar.io.image import write_image

        first = None
        for f in frames:
            if first is None:
                first = f
        if first is None:
            raise HRAvatarError(f"{path}: no frames to write")
        return write_image(path, first)
    raise HRAvatarError(f"{path}: unsupported output type; use .mp4 (video) or .png (one image)")


def check_output(path: str | Path, allowed: tuple[str, ...] = (".mp4", ".png", ".jpg")) -> Path:
    """Fail early (before rendering) on an output path of the wrong type."""
    path = Path(path)
    if path.suffix.lower() not in allowed:
        raise HRAvatarError(f"{path}: unsupported output type; use {' or '.join(allowed)}")
    from hravatar.io.atomic import check_writable

    return check_writable(path)


# ---- lighting ---------------------------------------------------------------------------------------
def load_environment(
    path: str | Path,
    la: Avatar,
    rotation: float = 0.0,
    exposure: float = 0.0,
    auto_exposure: bool = True,
) -> Any:
    """An :class:`~hravatar.shading.lighting.EnvironmentLighting` from ``.hdr``/``.exr`` (prefiltered now)
    or a prefiltered ``.safetensors`` (``hravatar envmap prefilter``).

    ``auto_exposure``: first scale the map so that its mean irradiance over front-facing normals
    equals the avatar's learned lighting's (:func:`hravatar.light_priors.matched_exposure`: the
    albedo was learned against that light level); ``exposure`` (stops) is then added.
    """
    from hravatar.shading.lighting import EnvironmentLighting

    path = Path(path)
    if path.suffix.lower() not in (".hdr", ".exr", ".safetensors"):
        raise HRAvatarError(f"{path}: unsupported environment map; use .hdr, .exr or a prefiltered .safetensors")
    if not path.is_file():
        raise HRAvatarError(f"{path}: environment map not found")
    if path.suffix.lower() != ".safetensors":
        log.info("environment %s: prefiltering (use `hravatar envmap prefilter` once to skip this) ...", path.name)
    env = EnvironmentLighting.from_file(path, rotation=rotation, exposure=0.0, device=la.device)
    auto = matched_exposure(env, la.lighting) if auto_exposure else 0.0
    env.exposure = auto + float(exposure)
    env.auto_exposure = auto  # type: ignore[attr-defined]
    return env


def env_background(env: Any, cam: Camera) -> Tensor:
    """``[1,H,W,3]`` what the camera sees of an environment map (rotation and exposure applied)."""
    return env.background(cam.viewmat[None], cam.K[None], cam.height, cam.width)


# ---- small parsing helpers ------------------------------------------------------------------------
def parse_assignments(items: Iterable[str], names: list[str], what: str = "expression") -> dict[str, float]:
    """``["jawOpen=0.5", "3=1.0"]`` -> ``{name: value}`` (names checked; an index selects by position)."""
    out: dict[str, float] = {}
    low = {n.lower(): n for n in names}
    for it in items:
        if "=" not in it:
            raise HRAvatarError(f"--{what} {it!r}: use NAME=VALUE (e.g. jawOpen=0.6)")
        k, v = it.split("=", 1)
        k = k.strip()
        from hravatar.validate import MAX_ANGLE, MAX_COEFF, number

        angle = k.lower() in ("jaw", "jaw_x", "jaw_y", "jaw_z", "yaw", "pitch", "roll")
        val = number(v, f"--{what} {k}", MAX_ANGLE if angle else MAX_COEFF)
        if k.isdigit() and int(k) < len(names):
            k = names[int(k)]
        elif k.lower() in low:
            k = low[k.lower()]
        elif k.lower() not in ("jaw", "jaw_x", "jaw_y", "jaw_z", "yaw", "pitch", "roll"):
            hint = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise HRAvatarError(f"--{what} {k!r}: unknown name; the avatar's expressions are {hint} "
                                "(or jaw, yaw, pitch, roll in radians)")
        out[k] = val
    return out


def apply_assignments(la: Avatar, p: FrameParams, values: dict[str, float]) -> FrameParams:
    """Set expressions (by name) and ``jaw`` (opening, radians about x; ``jaw_y``/``jaw_z`` too) and
    ``yaw``/``pitch``/``roll`` (head rotation, radians, applied after the current one) on a copy of ``p``."""
    p = p.clone()
    names = la.expr_names
    euler = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}
    for k, v in values.items():
        if k in names:
            p.expression[0, names.index(k)] = v
        elif k in ("jaw", "jaw_x", "jaw_y", "jaw_z"):
            p.pose[0, 2, {"jaw": 0, "jaw_x": 0, "jaw_y": 1, "jaw_z": 2}[k]] = v
        elif k in euler:
            euler[k] = v
    if any(euler.values()):
        r = euler_to_axis_angle(euler["yaw"], euler["pitch"], euler["roll"], like=p.pose)
        p.pose[0, 0] = compose_axis_angle(r, p.pose[0, 0])
    return p


def frame_indices(n: int, max_frames: int = 0) -> list[int]:
    """``range(n)``, or ``max_frames`` evenly spread indices of it."""
    if max_frames and n > max_frames:
        return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_frames)})
    return list(range(n))


__all__ = [
    "apply_assignments",
    "check_output",
    "env_background",
    "frame_indices",
    "hstack",
    "load_environment",
    "parse_assignments",
    "to_uint8",
    "write_frames",
]
