"""Synthetic talking-head clips rendered from known head-model parameters (tests and benchmarks).

The open head model is posed with a smooth head rotation, jaw opening and a few expressions, and
rendered with :mod:`hravatar.render.mesh` (Lambert shading, skin/hair/eye colours) over a
grey background by a fixed camera, so MediaPipe finds the face. The ground truth returned lets tests
check what tracking recovers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SyntheticClip:
    """A rendered clip and its ground truth.

    Attributes:
        frames: ``[N,H,W,3]`` uint8 RGB.
        pose: ``[N,5,3]`` axis-angle used (global, neck, jaw, eye_l, eye_r).
        expression: ``[N,E]`` expression coefficients used.
        translation: ``[N,3]`` metres.
        viewmat: ``[4,4]`` OpenCV world-to-camera; ``K``: ``[3,3]`` pixel intrinsics.
        vertices: ``[N,V,3]`` posed vertices (world).
    """

    frames: np.ndarray
    pose: np.ndarray
    expression: np.ndarray
    translation: np.ndarray
    viewmat: np.ndarray
    K: np.ndarray
    vertices: np.ndarray


def synthetic_clip(
    model: object,
    num_frames: int = 12,
    size: int = 512,
    fov_deg: float = 20.0,
    max_yaw_deg: float = 20.0,
    max_pitch_deg: float = 8.0,
    max_jaw_rad: float = 0.25,
    head_fraction: float = 0.55,
    expressions: dict[str, float] | None = None,
    seed: int = 0,
) -> SyntheticClip:
    """Render ``num_frames`` of the neutral-identity head turning and opening its jaw.

    Args:
        model: :class:`~hravatar.head.HeadModel`.
        num_frames: clip length.
        size: square image side in pixels.
        fov_deg: camera field of view.
        max_yaw_deg, max_pitch_deg: head rotation amplitude (a smooth sweep).
        max_jaw_rad: jaw opening amplitude (radians).
        head_fraction: about how much of the image height the face (chin to brow) covers.
        expressions: name -> peak weight of extra expressions (sine over the clip).
        seed: for the phase of the motions.
    """
    from hravatar.render.mesh import head_colors, project, rasterize_mesh, shade, vertex_normals

    rng = np.random.default_rng(seed)
    N = num_frames
    t = np.linspace(0, 1, N)
    ph = rng.uniform(0, 2 * math.pi, 3)
    pose = np.zeros((N, 5, 3), np.float32)
    pose[:, 0, 1] = np.radians(max_yaw_deg) * np.sin(2 * math.pi * t + ph[0])
    pose[:, 0, 0] = np.radians(max_pitch_deg) * np.sin(2 * math.pi * t + ph[1])
    pose[:, 2, 0] = max_jaw_rad * 0.5 * (1 - np.cos(2 * math.pi * t))
    E = model.num_expr  # type: ignore[attr-defined]
    expr = np.zeros((N, E), np.float32)
    names = list(getattr(model, "expr_names", []))
    for n, wmax in (expressions or {}).items():
        if n in names:
            expr[:, names.index(n)] = wmax * np.clip(np.sin(math.pi * t + ph[2]), 0, None)
    trans = np.zeros((N, 3), np.float32)
    f = size / (2 * math.tan(math.radians(fov_deg) / 2))
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    with torch.no_grad():
        out = model.forward(  # type: ignore[attr-defined]
            expression=torch.as_tensor(expr), pose=torch.as_tensor(pose), translation=torch.as_tensor(trans)
        )
        rest = model.forward(batch_size=1)  # type: ignore[attr-defined]
    joints = rest.joints[0].numpy()
    eye_mid = (joints[3] + joints[4]) / 2
    target = eye_mid + np.array([0.0, -0.04, 0.0])
    dist = f * 0.2 / (head_fraction * size)
    vm = np.eye(4)
    vm[:3, :3] = np.diag([1.0, -1.0, -1.0])
    vm[:3, 3] = -vm[:3, :3] @ (target + np.array([0, 0, dist]))
    faces = model.faces.numpy()  # type: ignore[attr-defined]
    colors = head_colors(model)
    frames = np.zeros((N, size, size, 3), np.uint8)
    verts = out.vertices.numpy().astype(np.float64)
    for i in range(N):
        uv, z = project(verts[i], vm, K)
        fr = rasterize_mesh(uv, z, faces, size, size)
        n_cam = vertex_normals(verts[i], faces) @ vm[:3, :3].T
        img = shade(fr, n_cam, faces, colors, np.array([[-0.3, -0.4, -0.87]]), 0.35, 0.45)
        frames[i] = (np.clip(img, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)
    return SyntheticClip(
        frames, pose, expr, trans, vm.astype(np.float32), K.astype(np.float32), verts.astype(np.float32)
    )
