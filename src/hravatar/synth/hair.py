"""Long hair for the synthetic subject (``hravatar synth --hair long``).

The head model is bald; real subjects with long hair show large matte regions far from its mesh
(hair beside the cheeks and neck, hanging to the shoulders). This module grows ground-truth hair:
strands of flat, elongated Gaussians that start at the crown, follow the skull a few millimetres
above the mesh and, at the sides and the back, hang straight down about 20 cm (out of the default
frame's bottom, like shoulder-length hair). Over the face the strands stop at the forehead's
hairline (a short fringe), so the face stays visible.

The hair is rigid with the head: every hair point is skinned to the neck joint only (the joint the
skull's vertices follow; the global rotation turns it too) and has no expression or pose-corrective
basis, so it moves with the head but not with the jaw. Its canonical positions are placed on the
*shaped* head (the subject's identity), with zero shape basis.

Geometry (head-model frame: metres, +y up, +z out of the face): directions ``d(theta, phi)`` from a
centre above the eyes, azimuth ``theta`` (0 = the face) and polar angle ``phi`` (0 = straight up);
the skull radius along ``d`` is the largest mesh-vertex distance within a 12 degree cone, and the
hair lies ``offset`` further out. Colour: the look's hair colour (:func:`hravatar.synth.appearance.random_look`),
varied per strand and darker towards the roots.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from hravatar.gaussians.head_avatar import GaussianHead
from hravatar.geometry.rotations import matrix_to_quat
from hravatar.head.model import HeadModel

#: --hair choices
HAIR_STYLES = ("none", "long")
#: skinning column of the neck joint (global, neck, jaw, eye_l, eye_r, static)
NECK_COLUMN = 1


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _skull_radius(verts: np.ndarray, centre: np.ndarray, dirs: np.ndarray, cone_deg: float = 12.0) -> np.ndarray:
    """``[M]`` largest distance from ``centre`` of the vertices within a cone around each of ``dirs [M,3]``."""
    rel = verts - centre
    r = np.linalg.norm(rel, axis=1)
    u = rel / np.maximum(r, 1e-9)[:, None]
    cos_c = math.cos(math.radians(cone_deg))
    out = np.zeros(len(dirs))
    for i in range(0, len(dirs), 512):
        c = dirs[i : i + 512] @ u.T  # [m,V]
        out[i : i + 512] = np.where(c >= cos_c, r[None, :], 0.0).max(1)
    return out


def hair_strands(
    verts: np.ndarray,
    num_strands: int = 300,
    spacing: float = 0.0025,
    length: float = 0.20,
    offset: float = 0.006,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Sample points along long-hair strands around a head mesh.

    Args:
        verts: ``[V,3]`` the shaped head's rest vertices (metres).
        num_strands: strands around the head (azimuth samples).
        spacing: distance between samples along a strand (metres).
        length: how far the side and back strands hang below the skull's equator (metres).
        offset: height of the hair above the skull (metres; a little more towards the ends).
        seed: seed of the strand jitter and colour variation.
    Returns:
        dict of float64 arrays: ``points [M,3]``, ``tangent [M,3]`` (unit, along the strand),
        ``normal [M,3]`` (unit, outward), ``strand [M]`` (int strand index), ``t [M]`` (arclength
        from the root, metres).
    """
    rng = np.random.default_rng(seed + 4242)
    top = verts[:, 1].max()
    centre = np.array([0.0, top - 0.115, float(np.median(verts[:, 2]))])
    thetas = np.linspace(-math.pi, math.pi, num_strands, endpoint=False) + rng.uniform(-0.3, 0.3, num_strands) * (
        2 * math.pi / num_strands
    )
    a = np.abs(thetas)
    # polar angle where the strand leaves the skull: the hairline over the face, the equator elsewhere
    phi_end = np.radians(48.0) + np.radians(47.0) * _smoothstep(math.radians(50), math.radians(85), a)
    hang = length * _smoothstep(math.radians(70), math.radians(100), a) * (1 + 0.08 * rng.standard_normal(num_strands))
    pts, tan, nor, sid, arc = [], [], [], [], []
    for k, th in enumerate(thetas):
        # cap: along the meridian, dense enough for the spacing
        phis = np.linspace(0.02, phi_end[k], 120)
        d = np.stack([np.sin(phis) * math.sin(th), np.cos(phis), np.sin(phis) * math.cos(th)], -1)
        r = _skull_radius(verts, centre, d)
        p = centre + d * (r + offset)[:, None]
        if hang[k] > spacing:
            end = p[-1]
            ys = np.linspace(0.0, hang[k], 100)[1:]
            flare = 1.0 + 0.10 * (ys / length)
            xz = (end - centre)[[0, 2]]
            curtain = np.stack([centre[0] + xz[0] * flare, end[1] - ys, centre[2] + xz[1] * flare], -1)
            p = np.concatenate([p, curtain], 0)
        seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        n = max(2, int(s[-1] / spacing))
        t_s = np.linspace(0.0, s[-1], n) + rng.uniform(0, spacing)
        t_s = t_s[t_s <= s[-1]]
        q = np.stack([np.interp(t_s, s, p[:, j]) for j in range(3)], -1)
        g = np.stack([np.interp(t_s + 1e-3, s, p[:, j]) - np.interp(t_s - 1e-3, s, p[:, j]) for j in range(3)], -1)
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        out = q - centre
        out[:, 1] = np.where(t_s > s[len(phis) - 1], 0.0, out[:, 1])  # hanging part: horizontal outward
        out -= (out * g).sum(1, keepdims=True) * g
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        # thin the crown, where the meridians converge (keep ~ proportional to sin(phi))
        keep = rng.uniform(0, 1, len(q)) < np.clip(np.linalg.norm((q - centre)[:, [0, 2]], axis=1) / 0.06, 0.15, 1.0)
        pts.append(q[keep])
        tan.append(g[keep])
        nor.append(out[keep])
        sid.append(np.full(int(keep.sum()), k))
        arc.append(t_s[keep])
    return {
        "points": np.concatenate(pts),
        "tangent": np.concatenate(tan),
        "normal": np.concatenate(nor),
        "strand": np.concatenate(sid),
        "t": np.concatenate(arc),
    }


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


def hair_gaussians(
    head: HeadModel,
    shape: Tensor,
    avatar: GaussianHead,
    seed: int = 0,
    style: str = "long",
    opacity: float = 0.98,
) -> dict[str, Tensor]:
    """Raw per-point tensors of ground-truth hair, ready for :func:`hravatar.gaussians.append.append_points`.

    Args:
        head: the head model; shape: ``[S]`` the subject's identity (the hair is grown on the shaped head).
        avatar: the ground-truth avatar the hair joins (for its material ranges and dtype).
        seed: the subject's seed (hair colour from its look, strand jitter).
        style: one of :data:`HAIR_STYLES` other than ``"none"``.
        opacity: opacity of every hair point.
    Returns:
        dict with ``means [M,3]``, ``quats [M,4]``, ``scales [M,3]`` (log), ``opacities [M]``,
        ``albedo``, ``roughness``, ``f0``, ``colors`` (logits), ``lbs_weights [M,6]`` (neck joint only).
    """
    from hravatar.synth.appearance import random_look, srgb_to_linear

    if style != "long":
        raise ValueError(f"unknown hair style {style!r}; choose one of {', '.join(HAIR_STYLES)}")
    rest = head(shape=shape[None]).vertices[0].detach().cpu().double().numpy()
    h = hair_strands(rest, seed=seed)
    like = avatar.params["means"]
    dt, dev = like.dtype, like.device
    P = torch.tensor(h["points"], dtype=dt, device=dev)
    t = torch.tensor(h["tangent"], dtype=dt, device=dev)
    n = torch.tensor(h["normal"], dtype=dt, device=dev)
    b = torch.cross(n, t, dim=-1)
    R = torch.stack([t, b, n], -1)  # columns: the Gaussian's x (along the strand), y, z (normal)
    M = P.shape[0]
    scales = torch.tensor([0.0030, 0.0016, 0.0004], dtype=dt, device=dev).log().expand(M, 3).clone()
    g = torch.Generator().manual_seed(int(seed) + 977)
    strand = torch.as_tensor(h["strand"])
    per_strand = torch.exp(0.18 * torch.randn(int(strand.max()) + 1, generator=g))[strand].to(dt)
    root = 0.75 + 0.25 * torch.tensor(np.clip(h["t"] / 0.06, 0, 1), dtype=dt)
    base = srgb_to_linear(torch.tensor(random_look(seed).hair, dtype=dt))
    albedo = (base[None] * (per_strand * root)[:, None]).clamp(0.005, 0.95).to(dev)
    c = avatar.config
    rough = torch.full((M, 1), 0.62, dtype=dt, device=dev)
    f0 = torch.full((M, 1), min(0.08, c.f0_max - 1e-3), dtype=dt, device=dev)
    w = torch.zeros(M, avatar.params["lbs_weights"].shape[1], dtype=dt, device=dev)
    w[:, NECK_COLUMN] = 1.0
    return {
        "means": P,
        "quats": matrix_to_quat(R),
        "scales": scales,
        "opacities": torch.full((M,), math.log(opacity / (1 - opacity)), dtype=dt, device=dev),
        "albedo": _logit(albedo),
        "colors": _logit(albedo),
        "roughness": _logit((rough - c.roughness_min) / (c.roughness_max - c.roughness_min)),
        "f0": _logit((f0 - c.f0_min) / (c.f0_max - c.f0_min)),
        "lbs_weights": w,
    }


def add_hair(avatar: GaussianHead, head: HeadModel, shape: Tensor, seed: int = 0, style: str = "none") -> GaussianHead:
    """``avatar`` with ground-truth hair of ``style`` appended (``"none"``: returned unchanged)."""
    if style == "none":
        return avatar
    from hravatar.gaussians.append import append_points

    out = append_points(avatar, hair_gaussians(head, shape, avatar, seed, style))
    out.requires_grad_(False)
    return out
