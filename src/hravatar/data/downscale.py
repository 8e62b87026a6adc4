"""Integer area downscaling of subject frames (images and intrinsics together)."""

from __future__ import annotations

import dataclasses

import torch.nn.functional as F
from torch import Tensor

from hravatar.data.dataset import FrameSample


def downscale_image(x: Tensor | None, d: int) -> Tensor | None:
    """Area-downscale an image ``[H,W,C]`` by an integer factor ``d`` (cropping to multiples of d)."""
    if x is None or d <= 1:
        return x
    H, W = x.shape[0] // d * d, x.shape[1] // d * d
    y = x[:H, :W].permute(2, 0, 1)[None]
    return F.avg_pool2d(y, d)[0].permute(1, 2, 0).contiguous()


def downscale_frame(fr: FrameSample, d: int) -> FrameSample:
    """Area-downscale images and scale the intrinsics by an integer factor ``d``."""
    if d <= 1:
        return fr
    K = fr.K.clone()
    K[:2] = K[:2] / d
    return dataclasses.replace(fr, image=downscale_image(fr.image, d), mask=downscale_image(fr.mask, d),
                               albedo=downscale_image(fr.albedo, d), K=K)


__all__ = ["downscale_frame", "downscale_image"]
