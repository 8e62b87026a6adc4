"""The :class:`HeadModel` interface shared by the open model, FLAME and the avatar.

A FLAME-like parametric head: template mesh, linear shape / expression / pose-corrective bases,
joints regressed from the shaped template, and linear blend skinning over five joints
(global, neck, jaw, eye_l, eye_r; FLAME's order and kinematic tree). Units are metres; the
head-model frame is FLAME's: +x to the subject's left, +y up, +z out of the face.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor

from hravatar.errors import HRAvatarError
from hravatar.geometry.rotations import axis_angle_to_matrix
from hravatar.head.lbs import blend_transforms, kinematic_chain, pose_feature

#: Joint order of every head model (FLAME's): pose vectors are ``[B,5,3]`` axis-angle in this order.
JOINT_NAMES: tuple[str, ...] = ("global", "neck", "jaw", "eye_l", "eye_r")
#: Kinematic parents of :data:`JOINT_NAMES` (``-1`` for the root).
PARENTS: tuple[int, ...] = (-1, 0, 1, 1, 1)
#: Region names a model may define in :attr:`HeadModel.regions`.
REGION_NAMES: tuple[str, ...] = ("face", "scalp", "neck", "eyes", "lips", "teeth", "mouth_interior")


@dataclass
class HeadOutput:
    """Result of :meth:`HeadModel.forward` for a batch of B parameter sets.

    Attributes:
        vertices: ``[B,V,3]`` posed vertices (metres, head-model/world frame, translation added).
        joints: ``[B,5,3]`` posed joint locations.
        rest_joints: ``[B,5,3]`` joints of the shaped, unposed template.
        joint_transforms: ``[B,5,4,4]`` rest -> posed transforms of each joint (without translation).
        vertex_transforms: ``[B,V,4,4]`` blended per-vertex transforms (translation included), i.e.
            ``vertices = T[..., :3, :3] @ v_expr + T[..., :3, 3]`` where ``v_expr`` is the
            template with shape, expression and pose-corrective offsets.
        v_expr: ``[B,V,3]`` unposed vertices with all blendshape offsets applied.
    """

    vertices: Tensor
    joints: Tensor
    rest_joints: Tensor
    joint_transforms: Tensor
    vertex_transforms: Tensor
    v_expr: Tensor


@dataclass
class HeadModel:
    """Tensors and metadata of a parametric head model (float32 unless stated).

    Attributes:
        name: e.g. ``"open"``, ``"flame2020"``, ``"flame2023"``.
        v_template: ``[V,3]`` template vertices, metres.
        faces: ``[F,3]`` int64 triangle vertex indices (counter-clockwise seen from outside).
        shapedirs: ``[V,3,S]`` identity basis (unit-variance coefficients).
        exprdirs: ``[V,3,E]`` expression basis.
        expr_names: E names (ARKit names for the open model, ``"exp_i"`` for FLAME).
        posedirs: ``[V,3,36]`` pose-corrective basis over (R - I) of neck, jaw, eye_l, eye_r
            (may be zero).
        j_regressor: ``[5,V]`` joints = ``j_regressor @ (v_template + shape offsets)``.
        lbs_weights: ``[V,5]`` skinning weights over :data:`JOINT_NAMES`, rows sum to 1.
        regions: region name -> ``[V]`` bool mask (see :data:`REGION_NAMES`).
        units: always ``"m"``.
        meta: free-form JSON-safe metadata (source, version, licence, ...).
    """

    name: str
    v_template: Tensor
    faces: Tensor
    shapedirs: Tensor
    exprdirs: Tensor
    expr_names: list[str]
    posedirs: Tensor
    j_regressor: Tensor
    lbs_weights: Tensor
    regions: dict[str, Tensor] = field(default_factory=dict)
    units: str = "m"
    meta: dict = field(default_factory=dict)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def num_expr(self) -> int:
        return int(self.exprdirs.shape[-1])

    @property
    def parents(self) -> Tensor:
        return torch.tensor(PARENTS, dtype=torch.long, device=self.v_template.device)

    # ---- maths -------------------------------------------------------------------------------
    def rest_joints(self, shape: Tensor) -> Tensor:
        """Joints of the shaped template: ``shape [B,S]`` -> ``[B,5,3]``."""
        v_shaped = self.v_template + torch.einsum("vcs,bs->bvc", self.shapedirs, shape)
        return torch.einsum("jv,bvc->bjc", self.j_regressor, v_shaped)

    def forward(
        self,
        shape: Tensor | None = None,
        expression: Tensor | None = None,
        pose: Tensor | None = None,
        translation: Tensor | None = None,
        batch_size: int | None = None,
    ) -> HeadOutput:
        """Posed mesh for a batch of parameters (all optional, zeros by default).

        Args:
            shape: ``[B,S']`` identity coefficients, ``S' <= S`` (missing ones are zero).
            expression: ``[B,E']`` expression coefficients, ``E' <= E``.
            pose: ``[B,5,3]`` or ``[B,15]`` axis-angle (radians) for global, neck, jaw, eye_l, eye_r.
                The global rotation turns the head about the root joint.
            translation: ``[B,3]`` metres, added last.
            batch_size: B when every parameter is omitted.
        Returns:
            :class:`HeadOutput`.
        """
        ref = next((t for t in (shape, expression, pose, translation) if t is not None), None)
        B = ref.shape[0] if ref is not None else (batch_size or 1)
        dev, dt = self.v_template.device, self.v_template.dtype

        def pad(x: Tensor | None, n: int) -> Tensor:
            if x is None:
                return torch.zeros(B, n, device=dev, dtype=dt)
            if x.shape[-1] > n:
                raise ValueError(f"got {x.shape[-1]} coefficients, model has {n}")
            return torch.nn.functional.pad(x.to(dt), (0, n - x.shape[-1]))

        shape = pad(shape, self.num_shape)
        expression = pad(expression, self.num_expr)
        pose = torch.zeros(B, 5, 3, device=dev, dtype=dt) if pose is None else pose.reshape(B, 5, 3).to(dt)
        translation = torch.zeros(B, 3, device=dev, dtype=dt) if translation is None else translation.to(dt)

        v_shaped = self.v_template + torch.einsum("vcs,bs->bvc", self.shapedirs, shape)
        joints = torch.einsum("jv,bvc->bjc", self.j_regressor, v_shaped)
        rot = axis_angle_to_matrix(pose)  # [B,5,3,3]
        v_expr = (
            v_shaped
            + torch.einsum("vce,be->bvc", self.exprdirs, expression)
            + torch.einsum("vcp,bp->bvc", self.posedirs, pose_feature(rot[:, 1:]))
        )
        A = kinematic_chain(rot, joints, self.parents)  # [B,5,4,4]
        T = blend_transforms(self.lbs_weights, A)  # [B,V,4,4]
        T = T.clone()
        T[..., :3, 3] = T[..., :3, 3] + translation[:, None]
        verts = (T[..., :3, :3] @ v_expr[..., None])[..., 0] + T[..., :3, 3]
        posed_joints = (A[..., :3, :3] @ joints[..., None])[..., 0] + A[..., :3, 3] + translation[:, None]
        return HeadOutput(verts, posed_joints, joints, A, T, v_expr)

    __call__ = forward

    # ---- housekeeping ------------------------------------------------------------------------
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> HeadModel:
        """A copy with float tensors moved/cast (``faces`` stays int64, regions stay bool)."""
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            elif f.name == "regions":
                v = {k: m.to(device) for k, m in v.items()}
            kw[f.name] = v
        return HeadModel(**kw)

    def tensors(self) -> dict[str, Tensor]:
        """All tensors, flat (regions as ``region.<name>``), for safetensors."""
        out = {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), Tensor)}
        out.update({f"region.{k}": v.to(torch.uint8) for k, v in self.regions.items()})
        return {k: v.contiguous().cpu() for k, v in out.items()}

    def save(self, path: str | Path) -> None:
        """Write the model as one safetensors file (atomically)."""
        from safetensors.torch import save_file

        from hravatar.io.atomic import atomic_path

        meta = {"name": self.name, "expr_names": json.dumps(self.expr_names), "units": self.units,
                "meta": json.dumps(self.meta)}
        with atomic_path(path) as tmp:
            save_file(self.tensors(), str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> HeadModel:
        """Read a model written by :meth:`save`."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                md = f.metadata() or {}
                t = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several types
            raise HRAvatarError(f"{path}: not a hravatar head-model file ({e})") from None
        regions = {k.split(".", 1)[1]: v.bool() for k, v in t.items() if k.startswith("region.")}
        try:
            return cls(
                name=md["name"], v_template=t["v_template"], faces=t["faces"].long(),
                shapedirs=t["shapedirs"], exprdirs=t["exprdirs"], expr_names=json.loads(md["expr_names"]),
                posedirs=t["posedirs"],
                j_regressor=t["j_regressor"], lbs_weights=t["lbs_weights"], regions=regions,
                units=md.get("units", "m"), meta=json.loads(md.get("meta", "{}")),
            )
        except KeyError as e:
            raise HRAvatarError(f"{path}: head-model file lacks {e}; rebuild it") from None
