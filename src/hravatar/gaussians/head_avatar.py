"""The Gaussian head avatar: per-point parameters, deformation, materials, learning rates.

:class:`GaussianHead` keeps every per-point tensor (first dimension N) in one
``torch.nn.ParameterDict`` :attr:`GaussianHead.params` (gsplat-strategy style), so the
densification strategy can carry all of them (and the optimizer state) along uniformly. Names
and storage (raw, pre-activation values):

=============  ==========  =============================================================
name           shape       meaning (activation)
=============  ==========  =============================================================
means          [N,3]       canonical centres X (metres, head-model frame); local triangle
                           coordinates for ``rig="triangle"``
quats          [N,4]       canonical rotation, w,x,y,z (normalised when used)
scales         [N,3]       log of the standard deviations (``exp``)
opacities      [N]         logit (``sigmoid``)
albedo         [N,3]       ``sigmoid`` -> [0,1] linear RGB
roughness      [N,1]       ``lo + (hi-lo) sigmoid``, default range [0.5, 1.0]
f0             [N,1]       ``0.04 + (f0_max-0.04) sigmoid``, f0_max 0.15 by default (0.8 for harsh light)
colors         [N,3]       ``sigmoid`` RGB, used only by the no-PBR ablation
shapedirs      [N,3,S]     per-point identity basis        (``rig="blendshape"`` only)
exprdirs       [N,3,E]     per-point expression basis      (``rig="blendshape"`` only)
posedirs       [N,3,36]    per-point pose-corrective basis (``rig="blendshape"`` only)
lbs_weights    [N,6]       skinning weights, 5 joints + static (``relu(W)/(sum+1e-5)``)
binding        [N] int64   triangle index (``rig="triangle"`` only, never trained)
=============  ==========  =============================================================

Non-per-point buffers: ``joint_template [5,3]`` and ``joint_shapedirs [5,3,S]`` (the head
model's joint regressor applied to its template and shape basis, so ``J(beta)`` is exact), and
for ``rig="triangle"`` the head model itself (``mesh_*`` buffers).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hravatar.gaussians.deform import (
    NUM_JOINTS,
    DeformedGaussians,
    batch_size_of,
    deform_points,
    pad_coeffs,
)
from hravatar.gaussians.init import init_from_mesh
from hravatar.geometry.rotations import quat_to_matrix
from hravatar.head.model import HeadModel

#: Per-point attributes that are blendshape bases (learning rate ``bases``).
BASIS_NAMES = ("shapedirs", "exprdirs", "posedirs")
#: Head-model fields kept as buffers by triangle-rigged avatars.
MESH_FIELDS = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "j_regressor", "lbs_weights")


@dataclass
class AvatarConfig:
    """How a :class:`GaussianHead` is built (saved with the avatar)."""

    points_per_face: int = 8
    """points sampled per mesh triangle at initialisation (the paper: 8)"""
    seed: int = 0
    """seed of the barycentric sampling"""
    rig: Literal["blendshape", "triangle"] = "blendshape"
    """'blendshape': the paper's learnable per-point bases + LBS; 'triangle': ablation, each point
    rigidly bound to a mesh triangle (GaussianAvatars style)"""
    learn_bases: bool = True
    """train the per-point shape/expression/pose bases (False: ablation, frozen at their init)"""
    learn_weights: bool = True
    """train the per-point skinning weights (False: ablation, frozen at their init)"""
    roughness_min: float = 0.5
    """lower bound of roughness"""
    roughness_max: float = 1.0
    """upper bound of roughness"""
    f0_min: float = 0.04
    """lower bound of Fresnel F0"""
    f0_max: float = 0.15
    """upper bound of Fresnel F0 (the paper uses 0.8 for harsh lighting)"""
    init_opacity: float = 0.1
    """initial opacity"""
    init_albedo: float = 0.5
    """initial albedo (grey)"""
    init_roughness: float = 0.75
    """initial roughness (middle of the range)"""
    init_f0: float = 0.095
    """initial F0 (middle of the default range)"""
    normal_scale_ratio: float = 0.2
    """initial scale along the surface normal relative to the in-plane (nearest-neighbour) scale"""
    shape_dims: int | None = None
    """keep only the first shape components per point (None: all of the head model's)"""


@dataclass
class LearningRates:
    """Per-attribute Adam learning rates (the paper's); ``means`` is multiplied by the scene scale."""

    means: float = 5e-4
    means_final: float = 5e-6
    opacities: float = 0.05
    scales: float = 5e-3
    quats: float = 1e-3
    albedo: float = 5e-3
    roughness: float = 5e-3
    f0: float = 5e-3
    colors: float = 2.5e-3
    bases: float = 1e-6
    lbs_weights: float = 1e-4


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def position_lr(
    step: int, max_steps: int, lrs: LearningRates | None = None, scene_scale: float = 1.0
) -> float:
    """Log-linear decay of the position learning rate ``means`` -> ``means_final`` (x scene scale)."""
    lrs = lrs or LearningRates()
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return scene_scale * math.exp((1 - t) * math.log(lrs.means) + t * math.log(lrs.means_final))


class GaussianHead(nn.Module):
    """A Gaussian head avatar (see the module docstring for its tensors).

    Build one with :meth:`from_head_model`; load one with :meth:`load`.
    """

    def __init__(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        config: AvatarConfig | None = None,
        head_name: str = "unknown",
        expr_names: list[str] | None = None,
        meta: dict[str, Any] | None = None,
        frozen: tuple[str, ...] | None = None,
    ) -> None:
        """Wrap existing tensors (no copy). ``frozen``: parameter names that get ``requires_grad=False``
        (default: from ``config``; ``binding`` is always frozen)."""
        super().__init__()
        self.config = config or AvatarConfig()
        self.head_name = head_name
        self.expr_names = list(expr_names or [])
        self.meta = dict(meta or {})
        if frozen is None:
            frozen = tuple(BASIS_NAMES if not self.config.learn_bases else ()) + (
                ("lbs_weights",) if not self.config.learn_weights else ()
            )
        frozen = (*frozen, "binding")
        self.params = nn.ParameterDict(
            {
                k: nn.Parameter(v, requires_grad=(k not in frozen) and v.is_floating_point())
                for k, v in params.items()
            }
        )
        for k, v in buffers.items():
            self.register_buffer(k, v)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_head_model(cls, head: HeadModel, config: AvatarConfig | None = None) -> GaussianHead:
        """Initialise on ``head``'s mesh (barycentric sampling; see :mod:`hravatar.gaussians.init`).

        Args:
            head: any :class:`HeadModel` (open, FLAME, synthetic); its device/dtype are used.
            config: :class:`AvatarConfig` (points per face, seed, rig, ablations, material ranges).
        Returns:
            A :class:`GaussianHead` with ``N = F * points_per_face`` points.
        """
        cfg = config or AvatarConfig()
        gen = torch.Generator().manual_seed(cfg.seed)
        init = init_from_mesh(head, cfg.points_per_face, gen, cfg.normal_scale_ratio, cfg.shape_dims)
        N = init["means"].shape[0]
        like = init["means"]

        def const(v: float, d: int) -> Tensor:
            return torch.full((N, d), v, dtype=like.dtype, device=like.device)

        rough = (cfg.init_roughness - cfg.roughness_min) / (cfg.roughness_max - cfg.roughness_min)
        f0 = (cfg.init_f0 - cfg.f0_min) / (cfg.f0_max - cfg.f0_min)
        params: dict[str, Tensor] = {
            "means": init["means"],
            "quats": init["quats"],
            "scales": init["log_scales"],
            "opacities": const(_logit(cfg.init_opacity), 1)[:, 0],
            "albedo": const(_logit(cfg.init_albedo), 3),
            "roughness": const(_logit(rough), 1),
            "f0": const(_logit(f0), 1),
            "colors": const(_logit(cfg.init_albedo), 3),
        }
        S = init["shapedirs"].shape[-1]
        jv = head.j_regressor.to(like)
        buffers = {
            "joint_template": jv @ head.v_template.to(like),
            "joint_shapedirs": torch.einsum("jv,vcs->jcs", jv, head.shapedirs[..., :S].to(like)),
        }
        if cfg.rig == "blendshape":
            for k in (*BASIS_NAMES, "lbs_weights"):
                params[k] = init[k]
        elif cfg.rig == "triangle":
            from hravatar.gaussians.rigged import to_local

            binding = init["face_index"]
            mu, r, s = to_local(
                head.v_template, head.faces, binding, init["means"], init["quats"], init["log_scales"]
            )
            params.update(means=mu, quats=r, scales=s, binding=binding)
            for k in MESH_FIELDS:
                buffers[f"mesh_{k}"] = getattr(head, k)
        else:
            raise ValueError(f"unknown rig {cfg.rig!r}; use 'blendshape' or 'triangle'")
        meta = {"head_meta": head.meta, "num_faces": int(head.faces.shape[0])}
        return cls(
            {k: v.contiguous() for k, v in params.items()}, buffers, cfg, head.name, head.expr_names, meta
        )

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def num_points(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.joint_shapedirs.shape[-1])

    @property
    def num_expr(self) -> int:
        if "exprdirs" in self.params:
            return int(self.params["exprdirs"].shape[-1])
        return int(self.mesh_exprdirs.shape[-1])

    @property
    def rig(self) -> str:
        return self.config.rig

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    # ---- activations -------------------------------------------------------------------------
    @property
    def opacities(self) -> Tensor:
        """``[N]`` opacities in (0, 1)."""
        return torch.sigmoid(self.params["opacities"])

    @property
    def albedo(self) -> Tensor:
        """``[N,3]`` linear albedo in [0, 1]."""
        return torch.sigmoid(self.params["albedo"])

    @property
    def roughness(self) -> Tensor:
        """``[N,1]`` roughness in [roughness_min, roughness_max] (default [0.5, 1])."""
        c = self.config
        return c.roughness_min + (c.roughness_max - c.roughness_min) * torch.sigmoid(self.params["roughness"])

    @property
    def f0(self) -> Tensor:
        """``[N,1]`` Fresnel F0 in [f0_min, f0_max] (default [0.04, 0.15])."""
        c = self.config
        return c.f0_min + (c.f0_max - c.f0_min) * torch.sigmoid(self.params["f0"])

    @property
    def colors(self) -> Tensor:
        """``[N,3]`` RGB in [0, 1] for the no-PBR ablation."""
        return torch.sigmoid(self.params["colors"])

    def materials(self) -> dict[str, Tensor]:
        """``{"albedo": [N,3], "roughness": [N,1], "f0": [N,1]}`` activated materials."""
        return {"albedo": self.albedo, "roughness": self.roughness, "f0": self.f0}

    def head_model(self) -> HeadModel:
        """The head model of a triangle-rigged avatar (built from its ``mesh_*`` buffers)."""
        if self.rig != "triangle":
            raise ValueError("only triangle-rigged avatars keep their head model")
        kw = {k: getattr(self, f"mesh_{k}") for k in MESH_FIELDS}
        return HeadModel(name=self.head_name, expr_names=self.expr_names, **kw)

    def canonical_world_scales(self) -> Tensor:
        """``[N,3]`` linear canonical scales in metres (for size thresholds in densification)."""
        s = self.params["scales"].detach().exp()
        if self.rig == "triangle":
            from hravatar.gaussians.rigged import triangle_frames

            _, _, k = triangle_frames(self.mesh_v_template, self.mesh_faces)
            s = s * k[self.params["binding"]][:, None]
        return s

    # ---- deformation -------------------------------------------------------------------------
    def deform(
        self,
        shape: Tensor | None = None,
        expression: Tensor | None = None,
        pose: Tensor | None = None,
        translation: Tensor | None = None,
    ) -> DeformedGaussians:
        """Canonical -> posed Gaussians for a batch of B parameter sets (differentiable).

        Args:
            shape: ``[B,S']`` identity coefficients (``S' <= S``; zero-padded; ``None`` = 0).
            expression: ``[B,E']`` expression coefficients (``E' <= E``).
            pose: ``[B,5,3]`` or ``[B,15]`` axis-angle radians for global, neck, jaw, eye_l, eye_r.
            translation: ``[B,3]`` metres, added last.
        Returns:
            :class:`DeformedGaussians` (means, unit quats, linear scales, opacities, rotmats, and for
            the blendshape rig the per-point skinning transforms and blendshape offsets).
        """
        p = self.params
        B = batch_size_of(shape, expression, pose, translation)
        if self.rig == "triangle":
            from hravatar.gaussians.rigged import rigged_deform

            head = self.head_model()
            sh = None if shape is None else pad_coeffs(shape, head.num_shape, B, p["means"], "shape")
            out = head.forward(sh, expression, pose, translation, batch_size=B)
            means, quats, scales = rigged_deform(
                out.vertices, head.faces, p["binding"], p["means"], p["quats"], p["scales"]
            )
            T = off = None
        else:
            means, quats, T, off, _ = deform_points(
                p["means"],
                p["quats"],
                p["shapedirs"],
                p["exprdirs"],
                p["posedirs"],
                p["lbs_weights"],
                self.joint_template,
                self.joint_shapedirs,
                shape,
                expression,
                pose,
                translation,
            )
            scales = p["scales"].exp()[None].expand(B, -1, -1)
        opac = self.opacities[None].expand(B, -1)
        return DeformedGaussians(means, quats, scales, opac, quat_to_matrix(quats), T, off)

    def canonical(self) -> DeformedGaussians:
        """The avatar at zero shape, expression, pose and translation (a batch of one)."""
        return self.deform()

    def skinning_weights(self) -> Tensor:
        """``[N,6]`` activated skinning weights (blendshape rig)."""
        from hravatar.gaussians.deform import normalized_weights

        return normalized_weights(self.params["lbs_weights"])

    # ---- optimisation ------------------------------------------------------------------------
    def lr_table(self, lrs: LearningRates | None = None, scene_scale: float = 1.0) -> dict[str, float]:
        """Learning rate of every trainable per-point parameter name (means x ``scene_scale``)."""
        lrs = lrs or LearningRates()
        table = {
            "means": lrs.means * scene_scale,
            "quats": lrs.quats,
            "scales": lrs.scales,
            "opacities": lrs.opacities,
            "albedo": lrs.albedo,
            "roughness": lrs.roughness,
            "f0": lrs.f0,
            "colors": lrs.colors,
            "shapedirs": lrs.bases,
            "exprdirs": lrs.bases,
            "posedirs": lrs.bases,
            "lbs_weights": lrs.lbs_weights,
        }
        return {k: v for k, v in table.items() if k in self.params and self.params[k].requires_grad}

    def param_groups(
        self, lrs: LearningRates | None = None, scene_scale: float = 1.0, names: tuple[str, ...] | None = None
    ) -> list[dict[str, Any]]:
        """Adam parameter groups ``[{"params": [p], "lr": lr, "name": name}, ...]``, one per trainable
        attribute (frozen ones are left out). ``names`` restricts the set (e.g. drop ``colors``)."""
        table = self.lr_table(lrs, scene_scale)
        return [
            {"params": [self.params[k]], "lr": lr, "name": k}
            for k, lr in table.items()
            if names is None or k in names
        ]

    def make_optimizer(
        self, lrs: LearningRates | None = None, scene_scale: float = 1.0, names: tuple[str, ...] | None = None
    ) -> torch.optim.Adam:
        """``torch.optim.Adam`` over :meth:`param_groups` with the paper's ``eps=1e-15``.

        Uses the fused implementation when this torch supports it for the avatar's device (on CPU
        it is about 7x faster than the default for the ~45M basis entries of a full avatar)."""
        groups = self.param_groups(lrs, scene_scale, names)
        try:
            return torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.Adam(self.param_groups(lrs, scene_scale, names), lr=0.0, eps=1e-15)

    def extra_repr(self) -> str:
        return f"head={self.head_name!r}, N={self.num_points}, rig={self.rig!r}"

    def config_dict(self) -> dict[str, Any]:
        """The config as a JSON-safe dict."""
        return dataclasses.asdict(self.config)


__all__ = ["AvatarConfig", "GaussianHead", "LearningRates", "NUM_JOINTS", "position_lr"]
