"""A tiny synthetic subject for tests and benchmarks (rendered with this package's own renderer).

:func:`make_tiny_subject` builds a small head model (:func:`helpers.synthetic_head.synthetic_head`),
a ground-truth Gaussian avatar on it with a smooth colour pattern and a fixed, non-uniform
environment, animates expression / jaw / head rotation over a few frames, renders them, and
writes a subject folder with :func:`hravatar.data.write_subject` (plus ``head_model.safetensors``
so training uses the same head model).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hravatar.data import SubjectParams, crop_box_from_points, write_subject


def tiny_camera(size: int, distance: float = 0.55, focal_ratio: float = 1.9) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera on +z looking at the origin: OpenCV ``viewmat [4,4]`` and ``K [3,3]`` for ``size`` px."""
    vm = torch.eye(4)
    # camera x = world x (the subject's left appears on the image's right), y down, looking down -z
    vm[:3, :3] = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    vm[2, 3] = distance
    f = focal_ratio * size
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return vm, K


def make_tiny_subject(
    path: str | Path,
    size: int = 64,
    frames: int = 12,
    points_per_face: int = 4,
    subdivisions: int = 2,
    seed: int = 0,
    pbr: bool = True,
    backend: str = "auto",
    with_gt: bool = False,
) -> Path:
    """Render and write a tiny subject folder; returns its path.

    Args:
        path: subject folder to create (replaced if it exists).
        size: image side in pixels.
        frames: number of frames (the last 15% form the default test split).
        points_per_face: Gaussians per triangle of the ground-truth avatar.
        subdivisions: icosphere level of the head model (2: 320 triangles).
        seed: seeds the colours and the animation.
        pbr: shade the ground truth (else plain colours).
        with_gt: also write ``gt/albedo``, ``gt/normal`` (OpenCV camera frame) and ``gt/mask``.
    """
    from helpers.synthetic_head import synthetic_head
    from hravatar.avatar import Camera, FrameParams, render
    from hravatar.gaussians import AvatarConfig, GaussianHead
    from hravatar.shading.lighting import LearnableLighting

    path = Path(path)
    g = torch.Generator().manual_seed(seed)
    head = synthetic_head(subdivisions=subdivisions, seed=seed)
    gt = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=points_per_face, seed=seed + 1,
                                                         init_opacity=0.9))
    with torch.no_grad():
        m = gt.params["means"]
        phase = torch.rand(3, generator=g) * 6.28
        pattern = torch.stack([torch.sin(40 * m[:, 1] + phase[0]), torch.cos(35 * m[:, 0] + phase[1]),
                               torch.sin(30 * (m[:, 2] + m[:, 0]) + phase[2])], -1)
        gt.params["albedo"].copy_(1.2 * pattern)
        gt.params["colors"].copy_(1.2 * pattern)
        light = LearnableLighting(convolve=False)
        d = torch.linspace(-1.5, 1.5, light.diffuse_map.shape[1])
        light.diffuse_map.copy_(0.3 + 0.8 * d[None, :, None, None].expand_as(light.diffuse_map))
        light.specular_map.fill_(0.0)
    vm, K = tiny_camera(size)
    E = head.num_expr
    t = torch.arange(frames, dtype=torch.float32)
    expr = 1.5 * torch.sin(t[:, None] * 0.7 + torch.arange(E)[None] * 1.3)
    pose = torch.zeros(frames, 5, 3)
    pose[:, 0, 1] = 0.25 * torch.sin(t * 0.5)
    pose[:, 0, 0] = 0.1 * torch.cos(t * 0.4)
    pose[:, 2, 0] = 0.15 * (1 + torch.sin(t * 0.9))
    trans = torch.zeros(frames, 3)
    shape = torch.zeros(1, head.num_shape)
    imgs, boxes, albs, nors, masks = [], [], [], [], []
    with torch.no_grad():
        for i in range(frames):
            out = render(gt, light, FrameParams(shape, expr[i:i + 1], pose[i:i + 1], trans[i:i + 1]),
                         Camera(vm, K, size, size), "pbr" if pbr else "color", backend=backend)
            rgb = out.image[0].clamp(0, 1)
            a = out.alpha[0]
            straight = torch.where(a > 1e-4, rgb / a.clamp_min(1e-4), torch.zeros_like(rgb)).clamp(0, 1)
            imgs.append(torch.cat([straight, a], -1).numpy())
            if with_gt and out.albedo is not None:
                albs.append((out.albedo[0] / a.clamp_min(1e-4)).clamp(0, 1) * (a > 0.5))
                nors.append(torch.einsum("ij,hwj->hwi", vm[:3, :3], out.normal[0]) * (a > 0.5))
                masks.append((a > 0.5).float())
            v = head.forward(expression=expr[i:i + 1], pose=pose[i:i + 1]).vertices[0]
            face = v[head.regions["face"]]
            pc = face @ vm[:3, :3].T + vm[:3, 3]
            uv = (pc @ K.T)[:, :2] / (pc @ K.T)[:, 2:]
            boxes.append(crop_box_from_points(uv, 1.3))
    params = SubjectParams(shape=shape[0], expression=expr, pose=pose, translation=trans, viewmat=vm, K=K,
                           image_size=(size, size), head_model=head.name, crop_boxes=torch.tensor(
                               [list(b) for b in boxes]), expr_names=list(head.expr_names))
    gt_maps = {"albedo": albs, "normal": nors, "mask": masks} if albs else None
    write_subject(path, imgs, params, {"source": "helpers.tiny_subject.make_tiny_subject", "seed": seed,
                                        "synthetic": True}, gt=gt_maps, overwrite=True)
    head.save(path / "head_model.safetensors")
    return path


__all__ = ["make_tiny_subject", "tiny_camera"]


def train_tiny_avatar(subject: Path, output: Path, iterations: int, warmup_steps: int = 2,
                      points_per_face: int = 1) -> Path:
    """Train a small avatar on ``subject`` for tests (narrow encoder at 32 px, quiet); returns
    ``output``. Fails the calling test if training does not finish."""
    from hravatar.train import TrainConfig, train

    status = train(TrainConfig(subject=subject, output=output, iterations=iterations,
                               points_per_face=points_per_face, encoder_width=0.25, encoder_input_size=32,
                               encoder_warmup_steps=warmup_steps, quiet=True))
    assert status == 0, f"training the test avatar failed with status {status}"
    return output
