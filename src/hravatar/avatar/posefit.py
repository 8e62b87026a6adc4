"""Per-frame global head-pose corrections: offsets learnt in training, and a test-time refit.

The tracked global head rotation and translation of a real clip are off by about a degree and a few
millimetres per frame (README.md, "Quality on a real clip"). Two remedies share the rule
:func:`apply_pose_offset`, which adds a 6-vector ``[rx, ry, rz, tx, ty, tz]`` (axis-angle radians
added to the global joint's axis-angle ``pose[:, 0]``, metres added to ``translation``) to a
:class:`~hravatar.avatar.params.FrameParams`; the expression, jaw, neck and eyes stay as they are:

* :class:`PoseOffsets`: one learnable offset per training frame, updated by the trainer with its own
  per-row Adam (a frame's row moves only when that frame is drawn, so the other rows keep their
  state exactly: no momentum drift between visits); saved as ``AVATAR/pose_offsets.safetensors``.
* :func:`fit_global_pose`: analysis-by-synthesis of one frame with the avatar frozen (Adam on the
  6 numbers, L1 colour + L1 alpha against the frame's matte); ``hravatar evaluate --fit-pose STEPS``
  uses it on the test frames (it looks at the test image, so it is an explicit, recorded option).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hravatar.avatar.params import Camera, FrameParams

POSE_OFFSETS_FILE = "pose_offsets.safetensors"


def apply_pose_offset(p: FrameParams, offset: Tensor) -> FrameParams:
    """``p`` with ``offset [6]`` (or ``[1,6]``) added: ``[:3]`` to the global axis-angle ``pose[:, 0]``
    (radians), ``[3:]`` to ``translation`` (metres). Differentiable in both; ``p`` is not modified."""
    o = offset.reshape(1, 6).to(p.pose)
    pose = torch.cat([(p.pose[:, 0] + o[:, :3])[:, None], p.pose[:, 1:]], 1)
    return FrameParams(p.shape, p.expression, pose, p.translation + o[:, 3:])


def offset_stats(offsets: Tensor) -> dict[str, float]:
    """Summary of ``offsets [N,6]``: mean / max rotation (degrees) and translation (millimetres)."""
    if offsets.numel() == 0:
        return {"rotation_mean_deg": 0.0, "rotation_max_deg": 0.0, "translation_mean_mm": 0.0,
                "translation_max_mm": 0.0}
    r = offsets[:, :3].detach().norm(dim=1) * (180.0 / math.pi)
    t = offsets[:, 3:].detach().norm(dim=1) * 1000.0
    return {"rotation_mean_deg": round(float(r.mean()), 4), "rotation_max_deg": round(float(r.max()), 4),
            "translation_mean_mm": round(float(t.mean()), 4), "translation_max_mm": round(float(t.max()), 4)}


class PoseOffsets:
    """Learnable global-pose offsets of ``n`` training frames with a per-row Adam.

    ``offsets [n,6]`` (radians, metres) start at zero. In a step, :meth:`row` gives frame ``i``'s
    offset with autograd; after ``backward`` :meth:`step` moves that row (Adam with the step sizes
    ``lr_rotation`` radians and ``lr_translation`` metres, bias correction per row) and then, with
    ``centre`` (default), subtracts the mean offset from all rows: a common offset of every frame
    is the same as moving the avatar (a gauge freedom), and left free the avatar and the offsets
    drift together (measured on a synthetic subject with exact tracking: 13 mm in 150 iterations,
    -2.5 dB on held-out frames, which are rendered with the tracked pose). Zero-mean offsets keep the
    avatar registered to the average tracked pose, as the held-out frames need.
    """

    def __init__(self, n: int, lr_rotation: float, lr_translation: float, device: torch.device | str = "cpu",
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-15, centre: bool = True) -> None:
        self.offsets = torch.zeros(n, 6, device=device, requires_grad=True)
        self.m = torch.zeros(n, 6, device=device)
        self.v = torch.zeros(n, 6, device=device)
        self.steps = torch.zeros(n, dtype=torch.long)
        self.lr = torch.tensor([lr_rotation] * 3 + [lr_translation] * 3, device=device)
        self.betas, self.eps, self.centre = betas, eps, centre

    def row(self, i: int) -> Tensor:
        """Frame ``i``'s offset ``[6]`` (a view into the graph of :attr:`offsets`)."""
        return self.offsets[i]

    def zero_grad(self) -> None:
        self.offsets.grad = None

    def grad_finite(self) -> bool:
        g = self.offsets.grad
        return g is None or bool(torch.isfinite(g).all())

    @torch.no_grad()
    def step(self, i: int) -> None:
        """One Adam step of row ``i`` with its gradient (nothing without one)."""
        g = self.offsets.grad
        if g is None:
            return
        b1, b2 = self.betas
        self.steps[i] += 1
        t = int(self.steps[i])
        self.m[i] = b1 * self.m[i] + (1 - b1) * g[i]
        self.v[i] = b2 * self.v[i] + (1 - b2) * g[i] * g[i]
        mh = self.m[i] / (1 - b1 ** t)
        vh = self.v[i] / (1 - b2 ** t)
        self.offsets[i] -= self.lr * mh / (vh.sqrt() + self.eps)
        if self.centre:
            self.offsets -= self.offsets.mean(0, keepdim=True)

    def state_dict(self) -> dict[str, Tensor]:
        return {"offsets": self.offsets.detach().cpu().clone(), "m": self.m.cpu().clone(),
                "v": self.v.cpu().clone(), "steps": self.steps.clone()}

    def load_state_dict(self, st: dict[str, Tensor]) -> None:
        dev = self.offsets.device
        if st["offsets"].shape != self.offsets.shape:
            raise ValueError(f"pose offsets of {tuple(st['offsets'].shape)} for {tuple(self.offsets.shape)}")
        with torch.no_grad():
            self.offsets.copy_(st["offsets"].to(dev))
        self.m, self.v, self.steps = st["m"].to(dev).clone(), st["v"].to(dev).clone(), st["steps"].clone()

    def save(self, path: Path, frame_indices: Tensor | list[int]) -> None:
        """Write ``offsets [n,6]`` and the subject ``frame_indices [n]`` they belong to (atomically)."""
        from safetensors.torch import save_file

        from hravatar.io.atomic import atomic_path

        idx = torch.as_tensor(list(map(int, frame_indices)), dtype=torch.long)
        with atomic_path(Path(path)) as tmp:
            save_file({"offsets": self.offsets.detach().cpu().contiguous(), "frame_indices": idx}, str(tmp),
                      metadata={"units": "axis-angle radians (global joint), metres (translation)"})


def load_pose_offsets(path: Path) -> dict[int, Tensor] | None:
    """``{subject frame index: offset [6]}`` from ``AVATAR/pose_offsets.safetensors`` (None if absent)."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        return None
    d = load_file(str(path))
    return {int(i): o for i, o in zip(d["frame_indices"].tolist(), d["offsets"], strict=True)}


def fit_global_pose(gaussians: Any, lighting: Any, p: FrameParams, camera: Camera, image: Tensor, mask: Tensor,
                    mode: str = "pbr", steps: int = 40, lr: float = 5e-4, eps2d: float | None = None,
                    backend: str = "auto") -> tuple[FrameParams, Tensor, list[float]]:
    """Refit ``p``'s global rotation and translation to one image with everything else frozen.

    Args:
        gaussians, lighting: the avatar (their parameters get no gradient and are not changed).
        p: the starting parameters (tracked pose, the encoder's expression).
        camera: the frame's camera at the image's size; image ``[H,W,3]`` over black, mask ``[H,W,1]``.
        steps: Adam steps; lr: Adam step size (radians and metres alike).
        eps2d: screen-space low-pass (pixels^2), ``None``: the renderer's default.

    Returns:
        ``(params with the fitted offset, offset [6], loss per step)``; loss = mean |colour - image|
        + mean |alpha - mask|.
    """
    from hravatar.avatar.render import EPS2D, render

    req = [q.requires_grad for q in gaussians.parameters()] + [q.requires_grad for q in lighting.parameters()]
    gaussians.requires_grad_(False)
    lighting.requires_grad_(False)
    p0 = FrameParams(*(t.detach() for t in (p.shape, p.expression, p.pose, p.translation)))
    off = torch.zeros(6, device=p.pose.device, requires_grad=True)
    opt = torch.optim.Adam([off], lr=lr)
    losses: list[float] = []
    try:
        with torch.enable_grad():
            for _ in range(max(0, steps)):
                out = render(gaussians, lighting, apply_pose_offset(p0, off), camera, mode, backend=backend,
                             eps2d=EPS2D if eps2d is None else eps2d)
                loss = (out.image[0] - image).abs().mean() + (out.alpha[0] - mask).abs().mean()
                opt.zero_grad()
                loss.backward()
                if not bool(torch.isfinite(off.grad).all()):
                    break
                opt.step()
                losses.append(float(loss.detach()))
    finally:
        for q, r in zip(list(gaussians.parameters()) + list(lighting.parameters()), req, strict=True):
            q.requires_grad_(r)
    off = off.detach()
    return apply_pose_offset(p0, off), off, losses


__all__ = ["POSE_OFFSETS_FILE", "PoseOffsets", "apply_pose_offset", "fit_global_pose", "load_pose_offsets",
           "offset_stats"]
