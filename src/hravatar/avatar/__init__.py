"""The trained avatar at run time: load it, turn frames into its inputs, render it.

Used alike by the trainer (differentiable :func:`render`), the apps, both evaluations and the
viewer::

    from hravatar.avatar import Camera, FrameParams, load_avatar, render
    av = load_avatar("AVATAR")                       # Avatar (one-line HRAvatarError if unusable)
    p = av.frame_params(av.frame(av.subject("test"), 0))   # encoder's expression + jaw, tracked rest
    out = av.render(p, av.camera(512))               # RenderOutput: image, alpha, depth, albedo, ...
    out = render(av.gaussians, env, p, cam, materials={"f0": f0})   # the same, differentiable

Modules: :mod:`~hravatar.avatar.params` (:class:`FrameParams`, :class:`Camera`, the frame ->
inputs rule :func:`frame_params`), :mod:`~hravatar.avatar.render` (deform -> G-buffer -> shade,
the G-buffer layout), :mod:`~hravatar.avatar.load` (the avatar folder),
:mod:`~hravatar.avatar.posefit` (per-frame global pose offsets and the test-time pose fit).
"""

from hravatar.avatar.load import (
    DEFAULT_FPS,
    REFERENCE_FILE,
    Avatar,
    Reference,
    TrainingSettings,
    load_avatar,
    subject_fps,
)
from hravatar.avatar.params import Camera, FrameParams, frame_params, pad_expression, with_encoder_expression
from hravatar.avatar.render import GBUFFER_LAYOUT, GBuffer, RenderOutput, rasterize_gbuffer, render

__all__ = [
    "DEFAULT_FPS",
    "GBUFFER_LAYOUT",
    "REFERENCE_FILE",
    "Avatar",
    "Camera",
    "FrameParams",
    "GBuffer",
    "Reference",
    "RenderOutput",
    "TrainingSettings",
    "frame_params",
    "load_avatar",
    "pad_expression",
    "rasterize_gbuffer",
    "render",
    "subject_fps",
    "with_encoder_expression",
]
