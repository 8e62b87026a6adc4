"""What one rendered frame of an avatar needs: head-model parameters and a camera.

:func:`frame_params` is *the* rule that turns a subject frame (tracked parameters and the face
crop) and an optional expression encoder into the avatar's inputs: the encoder's expression and
jaw replace the tracked ones; shape, the other joints and the translation stay tracked. The
trainer, the apps and both evaluations use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

JAW = 2
"""Index of the jaw joint in ``pose [B,5,3]`` (global, neck, jaw, eye_l, eye_r)."""


@dataclass
class FrameParams:
    """Head-model parameters of one rendered frame (batch of one, on the avatar's device).

    shape ``[1,S]``, expression ``[1,E]``, pose ``[1,5,3]`` axis-angle radians (global, neck, jaw,
    eye_l, eye_r), translation ``[1,3]`` metres.
    """

    shape: Tensor
    expression: Tensor
    pose: Tensor
    translation: Tensor

    def clone(self) -> FrameParams:
        return FrameParams(*(t.clone() for t in (self.shape, self.expression, self.pose, self.translation)))


@dataclass
class Camera:
    """One pinhole camera: ``viewmat [4,4]`` OpenCV world-to-camera, ``K [3,3]`` pixels, image size."""

    viewmat: Tensor
    K: Tensor
    width: int
    height: int

    def resized(self, size: int) -> Camera:
        """The same view with the longer image side ``size`` pixels (0: unchanged)."""
        if not size or size == max(self.width, self.height):
            return self
        s = size / max(self.width, self.height)
        w, h = max(1, int(round(self.width * s))), max(1, int(round(self.height * s)))
        K = self.K.clone()
        K[0] = K[0] * (w / self.width)
        K[1] = K[1] * (h / self.height)
        K[2, 2] = 1.0
        return Camera(self.viewmat, K, w, h)

    def with_viewmat(self, viewmat: Tensor) -> Camera:
        """The same intrinsics and size from another pose (``viewmat [4,4]``)."""
        return Camera(viewmat.to(self.K), self.K, self.width, self.height)

    @classmethod
    def of_frame(cls, fr: Any) -> Camera:
        """The tracked camera of a subject frame (:class:`~hravatar.data.FrameSample`) at its image size."""
        H, W = fr.image.shape[:2]
        return cls(fr.viewmat, fr.K, int(W), int(H))


def pad_expression(x: Tensor, n: int) -> Tensor:
    """``[...,E']`` coefficients zero-padded or cut to ``[...,n]``."""
    return F.pad(x, (0, max(0, n - x.shape[-1])))[..., :n]


def with_encoder_expression(p: FrameParams, expression: Tensor, jaw: Tensor) -> FrameParams:
    """``p`` with the encoder's ``expression [1,E]`` and ``jaw [1,3]`` in place of the tracked ones
    (differentiable in both; ``p`` is not modified)."""
    pose = torch.cat([p.pose[:, :JAW], jaw[:, None], p.pose[:, JAW + 1:]], 1)
    return FrameParams(p.shape, expression, pose, p.translation)


def tracked_params(fr: Any, num_expr: int) -> FrameParams:
    """The tracked parameters of a subject frame (expression padded to ``num_expr``), batch of one."""
    return FrameParams(fr.shape[None], pad_expression(fr.expression[None], num_expr), fr.pose[None].clone(),
                       fr.translation[None])


def frame_params(fr: Any, num_expr: int, encoder: Any = None) -> tuple[FrameParams, Tensor | None]:
    """The avatar's inputs for one subject frame: ``(params, predicted jaw [1,3] or None)``.

    Args:
        fr: a :class:`~hravatar.data.FrameSample` on the avatar's device (``face_crop [S,S,3]``,
            ``shape``, ``expression``, ``pose [5,3]``, ``translation``).
        num_expr: the avatar's expression count E.
        encoder: an :class:`~hravatar.encoder.ExpressionEncoder` (its train/eval mode and the
            autograd mode are the caller's), or ``None`` for the tracked expression and jaw.
    """
    p = tracked_params(fr, num_expr)
    if encoder is None:
        return p, None
    expr, jaw = encoder(fr.face_crop[None])
    return with_encoder_expression(p, pad_expression(expr, num_expr), jaw), jaw


__all__ = ["JAW", "Camera", "FrameParams", "frame_params", "pad_expression", "tracked_params",
           "with_encoder_expression"]
