"""Give hair a start: Gaussians seeded where the subject's matte covers pixels the head mesh does not.

The head model is bald. Long hair covers image regions far from its mesh (beside the cheeks and the
neck, hanging to the shoulders) where mesh-initialised points are absent, and densification can
only grow points out of existing ones. This module seeds points there before training:

1. **Hair pixels.** On ``frames`` training frames spread over the clip, the tracked head mesh is
   rasterized (:func:`hravatar.render.mesh.rasterize_mesh`); hair pixels are matte pixels
   (alpha > 0.5) farther than ``dilate`` x image width from the mesh's silhouette.
2. **Lifting.** Each hair pixel is back-projected to the depth of the nearest mesh pixel plus a few
   hypotheses behind it (``depth_steps``: hair lies around and behind the head).
3. **Binding.** Hair grows on the scalp, so each 3D point is bound to the joint the skull follows
   (:func:`skull_column`: the neck joint of the open model and FLAME) and mapped to the canonical
   frame by the inverse of that joint's transform in its frame. It gets skinning weight 1 on that
   joint, the shape basis of the nearest "anchor" vertex (not following the jaw or the eyes, not in
   the mouth or eyes) and no expression or pose-corrective basis: it moves rigidly with the skull,
   not with the jaw. (The skinning weights stay learnable, as for every point.)
4. **Voting (a coarse visual hull).** Every candidate is re-posed into all the selected frames and
   projected; it survives when it lands inside the matte in at least ``vote`` of the frames where
   it is in view. Per pixel ray the front-most surviving hypothesis is kept.
5. **Thinning.** Survivors are merged on a ``voxel`` grid in the canonical frame (mean position and
   colour per cell), at most ``max_points`` of them.

New points are flat (like the mesh initialisation) with the shortest axis towards the camera of the
frame that saw them, size from nearest-neighbour distances, the configured initial opacity, and
the observed pixel colour as albedo. Densification then refines them like any other point.
A subject whose matte is the head mesh (the default synthetic subject) gets no hair points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hravatar.gaussians.head_avatar import GaussianHead
from hravatar.head.model import HeadModel

#: skinning columns: global, neck, jaw, eye_l, eye_r (+ static)
_JAW_EYES = slice(2, 5)
_NON_ANCHOR_REGIONS = ("teeth", "mouth_interior", "eyes", "lips")


@dataclass
class HairInitConfig:
    """Settings of the hair initialisation (``hravatar train --hair-init on``)."""

    frames: int = 8
    """training frames (spread evenly over the clip) that seed and vote"""
    dilate: float = 0.02
    """margin around the head mesh's silhouette that seeds nothing (fraction of the image width; at least 2 px)"""
    depth_steps: tuple[float, ...] = (0.0, 0.03, 0.06, 0.09)
    """depths behind the nearest mesh surface tried per hair pixel (metres)"""
    vote: float = 0.8
    """fraction of the frames (where a point is in view) whose matte must contain it"""
    voxel: float = 0.003
    """merge cell (metres, canonical frame)"""
    max_points: int = 30000
    """cap on the added points"""
    min_points: int = 50
    """add nothing when fewer survive (a subject without hair beyond the mesh)"""
    pixels_per_frame: int = 20000
    """cap on the hair pixels lifted per frame (a regular subsample beyond)"""


def anchor_vertices(head: HeadModel) -> Tensor:
    """``[A]`` indices of vertices that can carry hair: not following the jaw or the eyes, not in the
    mouth, teeth, lips or eyes regions."""
    w = head.lbs_weights
    ok = w[:, _JAW_EYES].sum(-1) < 0.02
    for r in _NON_ANCHOR_REGIONS:
        m = head.regions.get(r)
        if m is not None:
            ok &= ~m.to(ok.device)
    return torch.nonzero(ok)[:, 0]


def skull_column(head: HeadModel) -> int:
    """The skinning column the skull follows (the largest mean weight over the ``scalp`` region, or of
    the topmost vertex when the model has no such region); 1 (neck) for the open model and FLAME."""
    m = head.regions.get("scalp")
    top = head.v_template[:, 1].argmax()
    w = head.lbs_weights[m] if m is not None and bool(m.any()) else head.lbs_weights[top][None]
    return int(w.mean(0).argmax())


def _hair_pixels(matte: np.ndarray, mesh_mask: np.ndarray, margin: int) -> np.ndarray:
    """``[H,W]`` bool: matte > 0.5 and farther than ``margin`` pixels from the mesh silhouette."""
    from scipy.ndimage import distance_transform_edt

    if not mesh_mask.any():
        return matte > 0.5
    dist = distance_transform_edt(~mesh_mask)
    return (matte > 0.5) & (dist > margin)


@torch.no_grad()
def seed_hair_points(head: HeadModel, ds: Any, cfg: HairInitConfig | None = None) -> dict[str, Any]:
    """Canonical hair points of a subject (see the module docstring).

    Args:
        head: the subject's head model (any device; computed on CPU).
        ds: the training :class:`~hravatar.data.dataset.SubjectDataset` (tracked parameters, mattes).
        cfg: :class:`HairInitConfig`.
    Returns:
        dict with ``x_shaped [M,3]`` (canonical, shaped: ``X + S beta``), ``anchor [M]`` (vertex index),
        ``normal [M,3]`` (canonical unit normal towards the seeing camera), ``colour [M,3]`` (observed
        pixel colour in [0,1]) and ``stats`` (pixels, candidates, survivors, points, frames).
    """
    from hravatar.render.mesh import project, rasterize_mesh

    cfg = cfg or HairInitConfig()
    head = head.to("cpu")
    n = len(ds)
    idx = sorted({int(round(x)) for x in np.linspace(0, n - 1, max(1, min(cfg.frames, n)))})
    shape = ds.shape[None].expand(len(idx), -1).float()
    out = head(shape=shape[:, : head.num_shape], expression=ds.expression[idx][:, : head.num_expr].float(),
               pose=ds.pose[idx].float(), translation=ds.translation[idx].float())
    verts = out.vertices.double().numpy()  # [K,V,3]
    anchors = anchor_vertices(head).numpy()
    skull = skull_column(head)
    faces = head.faces.numpy()
    K = ds.K.double().numpy()
    Kinv = np.linalg.inv(K)
    mattes, images, vms = [], [], []
    cands: list[np.ndarray] = []  # rows: frame, pixel id, hypothesis, x, y, z (world)
    stats = {"frames": idx, "hair_pixels": 0}
    H = W = 0
    for k, i in enumerate(idx):
        s = ds[i]
        matte = s.mask[..., 0].numpy()
        H, W = matte.shape
        vm = s.viewmat.double().numpy()
        mattes.append(matte)
        images.append(s.image.numpy())
        vms.append(vm)
        uv, z = project(verts[k], vm, K)
        fr = rasterize_mesh(uv, z, faces, H, W, cull_backfaces=False)
        hair = _hair_pixels(matte, fr.mask, max(2, int(round(cfg.dilate * W))))
        ys, xs = np.nonzero(hair)
        stats["hair_pixels"] += len(ys)
        if len(ys) == 0 or not fr.mask.any():
            continue
        if len(ys) > cfg.pixels_per_frame:
            sel = np.linspace(0, len(ys) - 1, cfg.pixels_per_frame).round().astype(np.int64)
            ys, xs = ys[sel], xs[sel]
        from scipy.ndimage import distance_transform_edt

        _, (ny, nx) = distance_transform_edt(~fr.mask, return_indices=True)
        d0 = fr.depth[ny[ys, xs], nx[ys, xs]].astype(np.float64)
        rays = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=np.float64)], -1) @ Kinv.T  # z = 1
        Rinv, t = vm[:3, :3].T, vm[:3, 3]
        for h, step in enumerate(cfg.depth_steps):
            cam = rays * (d0 + step)[:, None]
            world = (cam - t) @ Rinv.T
            pid = ys * W + xs
            cands.append(np.column_stack([np.full(len(pid), k), pid, np.full(len(pid), h), world]))
    empty = {"x_shaped": torch.zeros(0, 3), "anchor": torch.zeros(0, dtype=torch.int64),
             "normal": torch.zeros(0, 3), "colour": torch.zeros(0, 3)}
    if not cands:
        return {**empty, "stats": {**stats, "candidates": 0, "survivors": 0, "points": 0}}
    C = np.concatenate(cands)
    fk, pid, hyp, P = C[:, 0].astype(np.int64), C[:, 1].astype(np.int64), C[:, 2].astype(np.int64), C[:, 3:]
    # canonical (shaped) position through the inverse of the skull joint's transform
    A = out.joint_transforms[:, skull].double().numpy()  # [K,4,4] rest -> posed, without translation
    A[:, :3, 3] += ds.translation[idx].double().numpy()
    Rt = np.transpose(A[fk, :3, :3], (0, 2, 1))
    x_c = np.einsum("mij,mj->mi", Rt, P - A[fk, :3, 3])
    # vote over the frames: inside the matte where in view
    inside = np.zeros(len(C))
    seen = np.zeros(len(C))
    for k in range(len(idx)):
        pk = x_c @ A[k, :3, :3].T + A[k, :3, 3]
        uv, z = project(pk, vms[k], K)
        u, v = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        ok = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        seen += ok
        inside[ok] += mattes[k][v[ok], u[ok]] > 0.5
    keep = (seen > 0) & (inside >= cfg.vote * np.maximum(seen, 1))
    # front-most surviving hypothesis per (frame, pixel)
    ray = fk * (H * W) + pid
    order = np.lexsort((hyp, ray))
    kept = order[keep[order]]
    first = np.ones(len(kept), bool)
    first[1:] = ray[kept][1:] != ray[kept][:-1]
    sel = kept[first]
    stats.update(candidates=int(len(C)), survivors=int(len(sel)))
    if len(sel) < cfg.min_points:
        return {**empty, "stats": {**stats, "points": 0}}
    # colour and normal (towards the seeing camera, canonical frame)
    col = np.stack([images[f].reshape(-1, 3)[p] for f, p in zip(fk[sel], pid[sel], strict=True)])
    cam_c = np.stack([-vms[f][:3, :3].T @ vms[f][:3, 3] for f in fk[sel]])
    nrm = np.einsum("mij,mj->mi", Rt[sel], cam_c - P[sel])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    # merge on a voxel grid (mean per cell)
    xs_ = x_c[sel]
    cell = np.floor(xs_ / cfg.voxel).astype(np.int64)
    _, inv, cnt = np.unique(cell, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    G = len(cnt)

    def mean(a: np.ndarray) -> np.ndarray:
        o = np.zeros((G, a.shape[1]))
        np.add.at(o, inv, a)
        return o / cnt[:, None]

    x_m, c_m, n_m = mean(xs_), mean(col), mean(nrm)
    n_m /= np.maximum(np.linalg.norm(n_m, axis=1, keepdims=True), 1e-12)
    if G > cfg.max_points:
        pick = np.sort(np.random.default_rng(0).choice(G, cfg.max_points, replace=False))
        x_m, c_m, n_m = x_m[pick], c_m[pick], n_m[pick]
    from scipy.spatial import cKDTree

    rest = head(shape=shape[:1, : head.num_shape]).vertices[0].double().numpy()
    _, j = cKDTree(rest[anchors]).query(x_m)
    a_m = anchors[np.asarray(j, np.int64)]
    stats["points"] = int(len(x_m))
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()  # noqa: E731
    return {"x_shaped": f32(x_m), "anchor": torch.from_numpy(a_m), "normal": f32(n_m), "colour": f32(c_m),
            "stats": stats}


def _frames_from_normals(n: Tensor) -> Tensor:
    """``[M,3,3]`` right-handed frames whose third column is the unit normal ``n [M,3]``."""
    ref = torch.where((n[:, 1:2].abs() < 0.9), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))
    t = torch.cross(ref, n, dim=-1)
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = torch.cross(n, t, dim=-1)
    return torch.stack([t, b, n], -1)


def add_hair_init(
    avatar: GaussianHead, head: HeadModel, ds: Any, cfg: HairInitConfig | None = None, shape: Tensor | None = None
) -> tuple[GaussianHead, dict[str, Any]]:
    """``avatar`` with hair points seeded from ``ds`` appended (see :func:`seed_hair_points`).

    Args:
        avatar: the freshly initialised :class:`GaussianHead` (blendshape or triangle rig).
        head: its head model; ds: the training dataset; cfg: :class:`HairInitConfig`.
        shape: ``[S]`` identity to un-shape with (default ``ds.shape``).
    Returns:
        ``(avatar with N + M points, stats)``; the input avatar itself when no hair was found.
    """
    from hravatar.gaussians.append import append_points
    from hravatar.gaussians.init import knn_scales
    from hravatar.geometry.rotations import matrix_to_quat

    seeds = seed_hair_points(head, ds, cfg)
    stats = seeds["stats"]
    M = int(seeds["x_shaped"].shape[0])
    if M == 0:
        return avatar, stats
    hc = head.to("cpu")
    like = avatar.params["means"]
    a = seeds["anchor"]
    beta = (ds.shape if shape is None else shape).float()
    S = min(int(beta.shape[0]), hc.num_shape)
    x_t = seeds["x_shaped"] - torch.einsum("mcs,s->mc", hc.shapedirs[a][..., :S].float(), beta[:S])
    R = _frames_from_normals(seeds["normal"])
    mesh_pts = avatar.params["means"].detach().cpu().float() if avatar.rig == "blendshape" else None
    ref = x_t if mesh_pts is None else torch.cat([mesh_pts, x_t])  # sizes relative to all points
    d = knn_scales(ref)[-M:]
    log_scales = torch.stack([d, d, d * avatar.config.normal_scale_ratio], -1).log()
    albedo = seeds["colour"].clamp(0.02, 0.98)
    lg = torch.log(albedo / (1 - albedo))
    p0 = avatar.config.init_opacity
    extra: dict[str, Tensor] = {
        "means": x_t,
        "quats": matrix_to_quat(R),
        "scales": log_scales,
        "opacities": torch.full((M,), float(np.log(p0 / (1 - p0)))),
        "albedo": lg,
        "colors": lg,
    }
    for k in ("roughness", "f0"):  # the mesh points' initial value
        extra[k] = avatar.params[k].detach()[:1].cpu().expand(M, -1).clone()
    if avatar.rig == "blendshape":
        w = torch.zeros(M, avatar.params["lbs_weights"].shape[1])
        w[:, skull_column(hc)] = 1.0
        extra["lbs_weights"] = w
        Sa = avatar.params["shapedirs"].shape[-1]
        sd = hc.shapedirs[a][..., :Sa].float()
        extra["shapedirs"] = torch.nn.functional.pad(sd, (0, Sa - sd.shape[-1]))
    else:
        from hravatar.gaussians.init import face_frames
        from hravatar.gaussians.rigged import to_local

        _, cen, _ = face_frames(hc.v_template.float(), hc.faces)
        from scipy.spatial import cKDTree

        _, fi = cKDTree(cen.numpy()).query(x_t.numpy())
        binding = torch.from_numpy(np.asarray(fi, np.int64))
        mu, r, s = to_local(hc.v_template.float(), hc.faces, binding, x_t, extra["quats"], log_scales)
        extra.update(means=mu, quats=r, scales=s, binding=binding)
    extra = {k: v.to(like.device) for k, v in extra.items()}
    return append_points(avatar, extra), stats
