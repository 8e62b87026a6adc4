"""Canonical -> posed Gaussians: learnable blendshapes and learnable linear blend skinning.

The paper's deformation (HRAvatar section 3.2, DESIGN.md section 5), per Gaussian point with
canonical position ``X``, per-point bases ``S [N,3,S]``, ``E [N,3,E]``, ``P [N,3,36]`` and skinning
weights ``W [N,5+1]`` (five joints + one "static" column)::

    X_c = X + S beta
    X_e = X_c + E psi + P (R(theta) - I)            (pose feature of neck, jaw, eye_l, eye_r)
    X_p = sum_j w_j A_j(theta, J(beta)) [X_e; 1] + translation
    R_p = R_lbs R                                   (Gaussian rotation composed with skinning)

with ``w = relu(W) / (sum relu(W) + 1e-5)``. The "static" column maps to the identity transform
(the point does not follow any joint; translation is still added, it is the world offset of the
whole subject). The small deficit ``1 - sum w`` left by the ``1e-5`` is also given to the identity,
so a point whose weights all reach zero stays where it is instead of collapsing to the origin
(and at zero pose the skinning is exactly the identity).

Everything is batched over B parameter sets, differentiable, and device-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hravatar.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_quat,
    normalize_quat,
    quat_multiply,
)
from hravatar.head.lbs import kinematic_chain, pose_feature

#: Number of skinning joints (global, neck, jaw, eye_l, eye_r) and of weight columns (+ static).
NUM_JOINTS = 5
NUM_WEIGHT_COLUMNS = NUM_JOINTS + 1


# ---- result ------------------------------------------------------------------------------------
@dataclass
class DeformedGaussians:
    """Posed Gaussians for a batch of B parameter sets (world = head-model frame, metres).

    Attributes:
        means: ``[B,N,3]`` posed centres.
        quats: ``[B,N,4]`` unit quaternions (w, x, y, z) of the posed Gaussians.
        scales: ``[B,N,3]`` linear standard deviations along the Gaussian's local axes (metres).
        opacities: ``[B,N]`` in (0, 1).
        rotmats: ``[B,N,3,3]`` rotation matrices of ``quats`` (columns = the Gaussian's axes).
        lbs_transforms: ``[B,N,3,4]`` blended skinning transform ``[R_lbs | t]`` per point
            (translation included); ``None`` for triangle-rigged avatars.
        canonical_offsets: ``[B,N,3]`` ``X_e - X`` (blendshape displacement before skinning);
            ``None`` for triangle-rigged avatars.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    rotmats: Tensor
    lbs_transforms: Tensor | None = None
    canonical_offsets: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.means.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.means.shape[1])

    def normals(self, camera_centers: Tensor | None = None) -> Tensor:
        """Per-point normals ``[B,N,3]``: the shortest axis of each deformed Gaussian.

        Args:
            camera_centers: ``[B,3]`` or ``[3]`` camera centres in the world frame (metres). When
                given, each normal is flipped to face its camera (``n . (c - mean) >= 0``);
                otherwise the sign is the Gaussian's own (arbitrary) axis direction.
        """
        return gaussian_normals(self.rotmats, self.scales, self.means, camera_centers)

    def select(self, b: int) -> DeformedGaussians:
        """The ``b``-th element as a batch of one."""
        sl = slice(b, b + 1)
        return DeformedGaussians(
            self.means[sl],
            self.quats[sl],
            self.scales[sl],
            self.opacities[sl],
            self.rotmats[sl],
            None if self.lbs_transforms is None else self.lbs_transforms[sl],
            None if self.canonical_offsets is None else self.canonical_offsets[sl],
        )


def gaussian_normals(
    rotmats: Tensor, scales: Tensor, means: Tensor | None = None, camera_centers: Tensor | None = None
) -> Tensor:
    """Shortest-axis normals of Gaussians, optionally flipped toward a camera.

    Args:
        rotmats: ``[...,N,3,3]`` Gaussian rotations (columns are the local axes).
        scales: ``[...,N,3]`` linear scales.
        means: ``[...,N,3]`` centres (needed to flip toward the camera).
        camera_centers: ``[...,3]`` (one per leading batch element) or ``[3]``, world frame.
    Returns:
        ``[...,N,3]`` unit normals (world frame).
    """
    idx = scales.argmin(-1)  # [...,N]
    n = torch.gather(rotmats, -1, idx[..., None, None].expand(*idx.shape, 3, 1))[..., 0]
    if camera_centers is not None:
        if means is None:
            raise ValueError("means are needed to flip normals toward the camera")
        c = camera_centers.to(means)
        while c.dim() < means.dim():
            c = c.unsqueeze(-2)
        sign = torch.where(((c - means) * n).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        n = n * sign
    return n


# ---- skinning ----------------------------------------------------------------------------------
def normalized_weights(raw: Tensor) -> Tensor:
    """The paper's weight activation: ``raw [N,K]`` -> ``relu(raw) / (sum + 1e-5)`` ``[N,K]``."""
    w = torch.relu(raw)
    return w / (w.sum(-1, keepdim=True) + 1e-5)


def pad_coeffs(x: Tensor | None, n: int, batch: int, like: Tensor, what: str) -> Tensor:
    """``x [B,n']`` zero-padded to ``[B,n]`` (``None`` -> zeros); errors when ``n' > n``."""
    if x is None:
        return torch.zeros(batch, n, device=like.device, dtype=like.dtype)
    x = x.to(device=like.device, dtype=like.dtype)
    if x.dim() == 1:
        x = x[None].expand(batch, -1)
    if x.shape[-1] > n:
        raise ValueError(f"got {x.shape[-1]} {what} coefficients, the avatar has {n}")
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def batch_size_of(*xs: Tensor | None) -> int:
    """The leading dimension of the first given 2-D+ tensor (1 when none is given)."""
    for x in xs:
        if x is not None and x.dim() >= 2:
            return int(x.shape[0])
    return 1


def blend(basis: Tensor, coeffs: Tensor) -> Tensor:
    """Blendshape offsets ``basis [N,3,K]`` x ``coeffs [B,K]`` -> ``[B,N,3]``.

    Written as one matrix product over the flattened ``[N*3,K]`` basis so that its gradient comes
    out contiguous in the parameter's own layout (no copy in autograd's gradient accumulation).
    """
    N, K = basis.shape[0], basis.shape[-1]
    out = basis.reshape(N * 3, K) @ coeffs.T  # [N*3,B]
    return out.T.reshape(-1, N, 3)


def deform_points(
    means: Tensor,
    quats: Tensor,
    shapedirs: Tensor,
    exprdirs: Tensor,
    posedirs: Tensor,
    lbs_weights: Tensor,
    joint_template: Tensor,
    joint_shapedirs: Tensor,
    shape: Tensor | None = None,
    expression: Tensor | None = None,
    pose: Tensor | None = None,
    translation: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The blendshape + LBS deformation of points with orientations (see the module docstring).

    Args:
        means: ``[N,3]`` canonical positions ``X`` (head-model frame, metres).
        quats: ``[N,4]`` raw canonical rotations (w, x, y, z; normalised here).
        shapedirs: ``[N,3,S]``; exprdirs: ``[N,3,E]``; posedirs: ``[N,3,36]`` per-point bases.
        lbs_weights: ``[N,6]`` raw skinning weights (5 joints + static), activated here.
        joint_template: ``[5,3]`` rest joints of the template; joint_shapedirs: ``[5,3,S]`` their
            shape basis (``J(beta) = joint_template + joint_shapedirs beta``).
        shape: ``[B,S']``; expression: ``[B,E']`` (zero-padded); pose: ``[B,5,3]`` or ``[B,15]``
            axis-angle radians; translation: ``[B,3]`` metres. All optional (zeros).
    Returns:
        ``(posed_means [B,N,3], posed_quats [B,N,4] unit, lbs_transforms [B,N,3,4],
        offsets [B,N,3] = X_e - X, joint_transforms [B,5,4,4])``.
    """
    B = batch_size_of(shape, expression, pose, translation)
    S, E = shapedirs.shape[-1], exprdirs.shape[-1]
    beta = pad_coeffs(shape, S, B, means, "shape")
    psi = pad_coeffs(expression, E, B, means, "expression")
    if pose is None:
        pose = torch.zeros(B, NUM_JOINTS, 3, device=means.device, dtype=means.dtype)
    pose = pose.to(means).reshape(B, NUM_JOINTS, 3)
    rot = axis_angle_to_matrix(pose)  # [B,5,3,3]

    offsets = blend(shapedirs, beta) + blend(exprdirs, psi)
    if posedirs.shape[-1] > 0:
        offsets = offsets + blend(posedirs, pose_feature(rot[:, 1:]))
    x_e = means + offsets  # [B,N,3]

    joints = joint_template + torch.einsum(
        "jcs,bs->bjc", joint_shapedirs, beta[:, : joint_shapedirs.shape[-1]]
    )
    parents = torch.tensor([-1, 0, 1, 1, 1], device=means.device)
    A_full = kinematic_chain(rot, joints, parents)  # [B,5,4,4]
    A = A_full[..., :3, :]
    w = normalized_weights(lbs_weights)  # [N,6]
    eye = torch.eye(3, 4, device=means.device, dtype=means.dtype)
    T = torch.einsum("nj,bjxy->bnxy", w[:, :NUM_JOINTS], A)
    T = T + (1.0 - w[:, :NUM_JOINTS].sum(-1))[None, :, None, None] * eye  # static + deficit -> identity
    if translation is not None:
        T = T.clone()
        T[..., 3] = T[..., 3] + translation.to(means).reshape(B, 1, 3)
    posed = (T[..., :3] @ x_e[..., None])[..., 0] + T[..., 3]
    q_lbs = matrix_to_quat(T[..., :3])  # [B,N,4]
    q = quat_multiply(q_lbs, normalize_quat(quats)[None])
    return posed, normalize_quat(q), T, offsets, A_full
