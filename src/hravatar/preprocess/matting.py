"""Person matting: a soft foreground alpha per frame, background set to black.

The default :class:`MediaPipeMatter` runs MediaPipe's selfie segmentation and refines the mask at
the edges with a colour guided filter (He et al. 2010) guided by the frame itself, so the alpha
follows hair and shoulder edges rather than the segmenter's coarse 256x256 output.

Any object with a ``matte(image) -> alpha`` method (see :class:`Matter`) can replace it, e.g. a
RobustVideoMatting wrapper the user installs (GPL-3.0, therefore never a default dependency):
``hravatar preprocess clip.mp4 -o subj --matter mypackage.rvm:RVMMatter``. Frames are passed in video
order, ``reset()`` is called before each video, so recurrent matters can keep state.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from hravatar.errors import HRAvatarError


@runtime_checkable
class Matter(Protocol):
    """Interface of a matting backend.

    ``matte(image)``: ``image`` uint8 ``[H,W,3]`` RGB (a crop, frames given in video order) ->
    ``[H,W]`` float32 alpha in [0,1] (1 = person). ``reset()`` starts a new video.
    """

    name: str

    def matte(self, image: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Colour guided filter (He, Sun, Tang 2010): edge-aware smoothing of ``src`` following ``guide``.

    Args:
        guide: ``[H,W,3]`` float32 image in [0,1].
        src: ``[H,W]`` float32 signal (here the coarse alpha).
        radius: window radius in pixels.
        eps: regulariser (larger = smoother, less edge-following).
    Returns:
        ``[H,W]`` float32 filtered signal.
    """
    I = guide.astype(np.float32)
    p = src.astype(np.float32)
    mI = _box(I, radius)
    mp_ = _box(p, radius)
    cov_Ip = _box(I * p[..., None], radius) - mI * mp_[..., None]

    # 3x3 covariance of the guide per pixel
    def cov(i: int, j: int) -> np.ndarray:
        return _box(I[..., i] * I[..., j], radius) - mI[..., i] * mI[..., j] + (eps if i == j else 0.0)

    rr, rg, rb, gg, gb, bb = cov(0, 0), cov(0, 1), cov(0, 2), cov(1, 1), cov(1, 2), cov(2, 2)
    # closed-form inverse of the symmetric 3x3 covariance (much faster than np.linalg.solve)
    i_rr, i_rg, i_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    i_gg, i_gb, i_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    det = rr * i_rr + rg * i_rg + rb * i_rb
    c0, c1, c2 = cov_Ip[..., 0], cov_Ip[..., 1], cov_Ip[..., 2]
    a = (
        np.stack(
            [
                i_rr * c0 + i_rg * c1 + i_rb * c2,
                i_rg * c0 + i_gg * c1 + i_gb * c2,
                i_rb * c0 + i_gb * c1 + i_bb * c2,
            ],
            -1,
        )
        / det[..., None]
    )  # [H,W,3]
    b = mp_ - (a * mI).sum(-1)
    return (_box(a, radius) * I).sum(-1) + _box(b, radius)


def guided_filter_gray(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter: ``guide [H,W]`` and ``src [H,W]`` float32 -> ``[H,W]`` float32."""
    mI, mp_ = _box(guide, radius), _box(src, radius)
    a = (_box(guide * src, radius) - mI * mp_) / (_box(guide * guide, radius) - mI * mI + eps)
    b = mp_ - a * mI
    return _box(a, radius) * guide + _box(b, radius)


class MediaPipeMatter:
    """MediaPipe selfie segmentation, refined at the edges with a colour guided filter.

    Args:
        radius: guided-filter radius as a fraction of the image side (0.016 = 8 px at 512).
        eps: guided-filter regulariser.
        sharpen: contrast applied to the refined alpha around 0.5 (1 = none).
    """

    name = "mediapipe-selfie+guided"

    def __init__(self, radius: float = 0.016, eps: float = 1e-4, sharpen: float = 1.5):
        from hravatar.preprocess.mediapipe_models import SelfieSegmenter

        self.seg = SelfieSegmenter()
        self.radius, self.eps, self.sharpen = radius, eps, sharpen

    def reset(self) -> None:
        pass

    def matte(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``[H,W,3]`` RGB -> alpha ``[H,W]`` float32 in [0,1]."""
        coarse = self.seg.segment(image)
        H, W = coarse.shape
        small = max(H, W) > 256
        # filter at <= 256 px for speed, then upsample the linear coefficients' result
        if small:
            s = 256 / max(H, W)
            g = cv2.resize(image, (round(W * s), round(H * s)), interpolation=cv2.INTER_AREA)
            c = cv2.resize(coarse, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_AREA)
        else:
            g, c = image, coarse
        r = max(1, round(self.radius * max(g.shape[:2])))
        gf = g.astype(np.float32) / 255.0
        refined = guided_filter(gf, c, r, self.eps)
        if small:
            refined = cv2.resize(refined, (W, H), interpolation=cv2.INTER_LINEAR)
            # a second, fine pass at full resolution (grey guide) follows the real edges
            refined = guided_filter_gray(
                cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0,
                refined,
                max(1, r // 2),
                self.eps,
            )
        alpha = (refined - 0.5) * self.sharpen + 0.5
        return np.clip(alpha, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        self.seg.close()


def load_matter(spec: str | None) -> Matter:
    """Build a matter from ``"module:Class"`` (constructed without arguments) or the default (``None``
    or ``"mediapipe"``). Raises a one-line HRAvatarError when the plug-in cannot be loaded."""
    if spec in (None, "", "mediapipe"):
        return MediaPipeMatter()
    if ":" not in spec:
        raise HRAvatarError(f"--matter {spec!r}: expected 'mediapipe' or 'package.module:ClassName'")
    mod, cls = spec.split(":", 1)
    try:
        obj = getattr(importlib.import_module(mod), cls)()
    except Exception as e:  # any import/constructor failure of a user plug-in
        raise HRAvatarError(f"--matter {spec!r}: cannot load it ({type(e).__name__}: {e})") from None
    if not callable(getattr(obj, "matte", None)):
        raise HRAvatarError(f"--matter {spec!r}: object has no matte(image) method")
    if not hasattr(obj, "reset"):
        obj.reset = lambda: None  # type: ignore[attr-defined]
    if not hasattr(obj, "name"):
        obj.name = spec  # type: ignore[attr-defined]
    return obj
