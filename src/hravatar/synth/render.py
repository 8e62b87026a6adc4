"""Ground-truth rendering of the synthetic subject with the project's own renderer.

The ground truth is a :class:`~hravatar.gaussians.GaussianHead` initialised densely on the head
mesh whose materials are the procedural ones (:mod:`hravatar.synth.appearance`), nearly opaque,
deformed with the ground-truth parameters, rasterized into a G-buffer (albedo, roughness, F0,
world normal, depth, alpha) and shaded with split-sum environment lighting
(:func:`hravatar.shading.shade.shade`). The avatar being trained uses the same representation
and renderer, so the data is exactly representable: a perfect fit reaches zero error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hravatar.gaussians.head_avatar import AvatarConfig, GaussianHead
from hravatar.head.model import HeadModel
from hravatar.synth.appearance import Materials, point_materials


def _logit(p: Tensor, eps: float = 1e-4) -> Tensor:
    p = p.clamp(eps, 1 - eps)
    return torch.log(p / (1 - p))


def build_gt_avatar(
    head: HeadModel,
    shape: Tensor,
    seed: int = 0,
    points_per_face: int = 16,
    opacity: float = 0.98,
    appearance_seed: int | None = None,
) -> tuple[GaussianHead, Materials]:
    """A dense ground-truth avatar carrying the procedural materials.

    Args:
        head: the head model (with mouth interior / teeth if any).
        shape: ``[S]`` identity coefficients (used for the canonical positions of the materials).
        seed: seed of the barycentric sampling.
        points_per_face: samples per triangle (denser than training's 8 for a crisp surface).
        opacity: opacity of every point.
        appearance_seed: seed of the look (skin / hair / iris colours); default ``seed``.
    Returns:
        ``(avatar, materials)``: the :class:`GaussianHead` (blendshape rig, the head model's bases,
        materials set) and the :class:`~hravatar.synth.appearance.Materials` per point.
    """
    from hravatar.gaussians.init import interpolate, sample_barycentric

    cfg = AvatarConfig(points_per_face=points_per_face, seed=seed, init_opacity=opacity)
    avatar = GaussianHead.from_head_model(head, cfg)
    # the same draw as init_from_mesh (first use of a generator seeded with cfg.seed)
    fi, bary = sample_barycentric(
        int(head.faces.shape[0]), points_per_face, torch.Generator().manual_seed(seed)
    )
    fi, bary = fi.to(head.faces.device), bary.to(head.v_template)
    means = interpolate(head.v_template, head.faces, fi, bary)
    if not torch.allclose(means, avatar.params["means"].detach(), atol=1e-6):
        raise RuntimeError("ground-truth avatar: barycentric samples do not match the avatar's points")
    mats = point_materials(head, fi, bary, shape, appearance_seed if appearance_seed is not None else seed)
    c = avatar.config
    with torch.no_grad():
        avatar.params["albedo"].copy_(_logit(mats.albedo))
        avatar.params["roughness"].copy_(
            _logit((mats.roughness - c.roughness_min) / (c.roughness_max - c.roughness_min))
        )
        avatar.params["f0"].copy_(_logit((mats.f0 - c.f0_min) / (c.f0_max - c.f0_min)))
    avatar.requires_grad_(False)
    return avatar, mats


@dataclass
class GBuffer:
    """A rendered G-buffer (per-pixel averages, i.e. divided by alpha), all ``[C,H,W,*]``.

    Attributes:
        albedo: ``[C,H,W,3]``. roughness, f0: ``[C,H,W,1]``. normal: ``[C,H,W,3]`` unit, world frame.
        depth: ``[C,H,W,1]`` expected camera z (metres). alpha: ``[C,H,W,1]``.
    """

    albedo: Tensor
    roughness: Tensor
    f0: Tensor
    normal: Tensor
    depth: Tensor
    alpha: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        return {
            "albedo": self.albedo,
            "roughness": self.roughness,
            "f0": self.f0,
            "normal": self.normal,
            "alpha": self.alpha,
            "depth": self.depth,
        }


def render_gbuffer(
    avatar: GaussianHead,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    shape: Tensor | None = None,
    expression: Tensor | None = None,
    pose: Tensor | None = None,
    translation: Tensor | None = None,
    backend: str = "auto",
) -> GBuffer:
    """Deform ``avatar`` with B parameter sets and rasterize one camera per set.

    Args:
        avatar: a :class:`GaussianHead`.
        viewmats: ``[B,4,4]`` world-to-camera (OpenCV). Ks: ``[B,3,3]`` pixels.
        width, height: image size.
        shape ``[B,S]``, expression ``[B,E]``, pose ``[B,5,3]``, translation ``[B,3]``: parameters.
        backend: rasterizer backend.
    Returns:
        :class:`GBuffer` with ``C = B``.
    """
    from hravatar.render import camera_centers, rasterize

    d = avatar.deform(shape, expression, pose, translation)
    mats = avatar.materials()
    cams = camera_centers(viewmats)
    normals = d.normals(cams)  # [B,N,3] world, facing each camera
    outs = []
    for b in range(d.batch_size):
        feats = torch.cat([mats["albedo"], mats["roughness"], mats["f0"], normals[b]], -1)
        col, alpha, _ = rasterize(
            d.means[b],
            d.quats[b],
            d.scales[b],
            d.opacities[b],
            feats,
            viewmats[b : b + 1],
            Ks[b : b + 1],
            width,
            height,
            render_mode="RGB+ED",
            backend=backend,
        )
        outs.append((col, alpha))
    col = torch.cat([o[0] for o in outs])
    alpha = torch.cat([o[1] for o in outs])
    a = alpha.clamp_min(1e-6)
    n = torch.nn.functional.normalize(col[..., 5:8], dim=-1, eps=1e-8)
    return GBuffer(col[..., 0:3] / a, col[..., 3:4] / a, col[..., 4:5] / a, n, col[..., 8:9], alpha)


def shade_gbuffer(
    gb: GBuffer, viewmats: Tensor, Ks: Tensor, lighting, min_alpha: float = 1e-4
) -> dict[str, Tensor]:
    """Split-sum shading of a :class:`GBuffer` (see :func:`hravatar.shading.shade.shade`).

    Only pixels with ``alpha > min_alpha`` are shaded (the rest are black), which is exact for a
    black background and several times faster for a head that covers part of the image.

    Returns:
        ``{"color": [C,H,W,3] uncomposited radiance, "image": [C,H,W,3] composited over black}``.
    """
    from hravatar.shading.shade import shade, view_directions

    C, H, W, _ = gb.alpha.shape
    v = view_directions(viewmats, Ks, H, W).to(gb.normal.dtype)
    m = gb.alpha[..., 0] > min_alpha  # [C,H,W]
    sel = {k: t[m][None] for k, t in gb.as_dict().items() if k != "depth"}
    out = shade(sel, v[m][None], lighting)
    color = gb.albedo.new_zeros(C, H, W, 3)
    color[m] = out["color"][0]
    return {"color": color, "image": color * gb.alpha}


def world_to_camera_normals(normal: Tensor, viewmats: Tensor) -> Tensor:
    """World-frame normals ``[C,H,W,3]`` -> OpenCV camera frame using ``viewmats [C,4,4]``."""
    R = viewmats[:, :3, :3]
    return torch.einsum("cij,chwj->chwi", R, normal)


def default_camera(
    size: int,
    distance: float = 1.0,
    head_height: float = 0.28,
    target: tuple[float, float, float] = (0.0, 0.03, 0.03),
) -> tuple[Tensor, Tensor]:
    """The synthetic video's fixed camera: in front of the face (+z), looking at ``target``.

    Args:
        size: image width = height in pixels.
        distance: metres from ``target``.
        head_height: metres of the scene that fit in the image height at the target's depth.
    Returns:
        ``(viewmat [4,4], K [3,3])``.
    """
    from hravatar.render import intrinsics, look_at

    eye = (target[0], target[1], target[2] + distance)
    vm = look_at(eye, target)
    f = size * distance / head_height
    K = intrinsics(focal=f, width=size, height=size)
    return vm, K


def fov_degrees(K: Tensor, size: int) -> float:
    """Horizontal field of view of ``K`` for an image ``size`` pixels wide."""
    return math.degrees(2 * math.atan(size / 2 / float(K[0, 0])))
