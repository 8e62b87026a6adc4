"""Ground-truth rendering of the synthetic subject with the project's own renderer.

The ground truth is a :class:`~hravatar.gaussians.GaussianHead` initialised densely on the head
mesh whose materials are the procedural ones (:mod:`hravatar.synth.appearance`), nearly opaque,
deformed with the ground-truth parameters, rasterized into a G-buffer (albedo, roughness, F0,
world normal, depth, alpha) and shaded with split-sum environment lighting
(:func:`hravatar.shading.shade.shade`). The avatar being trained uses the same representation
and renderer, so the data is exactly representable: a perfect fit reaches zero error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hravatar.avatar.params import Camera, FrameParams
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
    skin: float | None = None,
    readable: bool = False,
) -> tuple[GaussianHead, Materials]:
    """A dense ground-truth avatar carrying the procedural materials.

    Args:
        head: the head model (with mouth interior / teeth if any).
        shape: ``[S]`` identity coefficients (used for the canonical positions of the materials).
        seed: seed of the barycentric sampling.
        points_per_face: samples per triangle (denser than training's 8 for a crisp surface).
        opacity: opacity of every point.
        appearance_seed: seed of the look (skin / hair / iris colours); default ``seed``.
        skin: skin tone in [0, 1], lightest to darkest (``None``: chosen by the appearance seed).
        readable: paint eyes, lash lines and brows for face trackers
            (:func:`~hravatar.synth.appearance.procedural_materials`).
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
    mats = point_materials(head, fi, bary, shape, appearance_seed if appearance_seed is not None else seed, skin,
                           readable)
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
class SurfaceMaps:
    """Per-pixel surface maps of a rendered G-buffer (averages, i.e. divided by alpha), all ``[C,H,W,*]``.

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


def surface_maps(avatar: GaussianHead, params: FrameParams, camera: Camera, backend: str = "auto") -> SurfaceMaps:
    """Deform ``avatar`` with ``params`` and rasterize its :class:`SurfaceMaps` from ``camera``
    (the runtime's :func:`~hravatar.avatar.render.rasterize_gbuffer`, divided by alpha)."""
    from hravatar.avatar.render import rasterize_gbuffer

    gb = rasterize_gbuffer(avatar, params, camera, "pbr", backend=backend)
    return SurfaceMaps(gb.average("albedo"), gb.average("roughness"), gb.average("f0"), gb.normal(), gb.depth,
                       gb.alpha)


def shade_maps(maps: SurfaceMaps, camera: Camera, lighting, min_alpha: float = 1e-4) -> dict[str, Tensor]:
    """Split-sum shading (:func:`hravatar.shading.shade.shade`) of :class:`SurfaceMaps`.

    Only pixels with ``alpha > min_alpha`` are shaded (the rest are black): the subject format
    stores straight colour and alpha, so the uncomposited radiance is what the frames keep.

    Returns:
        ``{"color": [C,H,W,3] uncomposited radiance, "image": [C,H,W,3] composited over black}``.
    """
    from hravatar.shading.shade import shade, view_directions

    C, H, W, _ = maps.alpha.shape
    v = view_directions(camera.viewmat[None], camera.K[None], H, W).to(maps.normal.dtype)
    m = maps.alpha[..., 0] > min_alpha  # [C,H,W]
    sel = {k: t[m][None] for k, t in maps.as_dict().items() if k != "depth"}
    out = shade(sel, v[m][None], lighting)
    color = maps.albedo.new_zeros(C, H, W, 3)
    color[m] = out["color"][0]
    return {"color": color, "image": color * maps.alpha}


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
