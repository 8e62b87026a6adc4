"""A small z-buffered triangle-mesh renderer in numpy (no GPU, no extension).

The package's one mesh renderer: preprocessing renders the neutral head for the landmark embedding
and draws the tracked mesh in the overlay video with it, ``hravatar head export`` its PNG preview
(:mod:`hravatar.head.preview`), the tests their synthetic face videos. The Gaussian rasterizer
renders Gaussians, not meshes, hence this one. It is fully vectorised over (triangle, pixel) pairs, which is fast for
meshes whose triangles cover few pixels each (heads at <= 1024 px: tens of ms).

Conventions: OpenCV camera (``viewmat`` world-to-camera, +z forward, +y down), pixel ``K``, pixel
centres at +0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize_mesh` for an ``H x W`` image.

    Attributes:
        face: ``[H,W]`` int64 visible triangle index, ``-1`` where empty.
        bary: ``[H,W,3]`` float32 perspective-correct barycentric weights of the triangle's vertices.
        depth: ``[H,W]`` float32 camera-frame z (metres), ``inf`` where empty.
    """

    face: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.face >= 0


def project(verts: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[V,3]`` -> pixels ``[V,2]`` and camera-frame depth ``[V]``."""
    cam = verts @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    uv = cam[:, :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)[:, None]
    uv = uv @ K[:2, :2].T + K[:2, 2]
    return uv, z


def rasterize_mesh(
    uv: np.ndarray,
    z: np.ndarray,
    faces: np.ndarray,
    height: int,
    width: int,
    cull_backfaces: bool = True,
    chunk: int = 4_000_000,
) -> Fragments:
    """Z-buffer rasterization of projected triangles.

    Args:
        uv: ``[V,2]`` pixel positions of the vertices.
        z: ``[V]`` camera depth of the vertices (metres, > 0 in front of the camera).
        faces: ``[F,3]`` vertex indices.
        height, width: image size in pixels.
        cull_backfaces: drop triangles facing away (counter-clockwise-outside meshes seen from the
            camera appear clockwise in OpenCV pixel coordinates; those with the other winding are culled).
        chunk: maximum (triangle, pixel) pairs processed at once.
    Returns:
        :class:`Fragments`.
    """
    uv = np.asarray(uv, np.float64)
    z = np.asarray(z, np.float64)
    faces = np.asarray(faces, np.int64)
    tri = uv[faces]  # [F,3,2]
    tz = z[faces]
    keep = (tz > 1e-6).all(1)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep &= np.abs(area) > 1e-12
    if cull_backfaces:
        keep &= area < 0
    lo = np.floor(tri.min(1) - 0.5).astype(np.int64) + 1  # first pixel whose centre may be inside
    hi = np.floor(tri.max(1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi[:, 0] = np.minimum(hi[:, 0], width - 1)
    hi[:, 1] = np.minimum(hi[:, 1], height - 1)
    keep &= (hi >= lo).all(1)
    fid = np.nonzero(keep)[0]
    nx = hi[fid, 0] - lo[fid, 0] + 1
    ny = hi[fid, 1] - lo[fid, 1] + 1
    counts = nx * ny

    zbuf = np.full(height * width, np.inf)
    fbuf = np.full(height * width, -1, np.int64)
    bbuf = np.zeros((height * width, 3))
    start = 0
    while start < len(fid):
        cs = np.cumsum(counts[start:])
        stop = start + max(1, int(np.searchsorted(cs, chunk, side="right")))
        f = fid[start:stop]
        cnt = counts[start:stop]
        rep = np.repeat(np.arange(len(f)), cnt)
        offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        w_ = np.repeat(nx[start:stop], cnt)
        px = lo[f, 0][rep] + offs % w_
        py = lo[f, 1][rep] + offs // w_
        x, y = px + 0.5, py + 0.5
        A, B, C = a[f][rep], b[f][rep], c[f][rep]
        ar = area[f][rep]
        w0 = ((B[:, 0] - x) * (C[:, 1] - y) - (B[:, 1] - y) * (C[:, 0] - x)) / ar
        w1 = ((C[:, 0] - x) * (A[:, 1] - y) - (C[:, 1] - y) * (A[:, 0] - x)) / ar
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        if inside.any():
            rep, px, py = rep[inside], px[inside], py[inside]
            bw = np.stack([w0[inside], w1[inside], w2[inside]], 1)
            inv = bw / tz[f][rep]  # perspective-correct weights
            depth = 1.0 / inv.sum(1)
            bw = inv * depth[:, None]
            pix = py * width + px
            # z-test without sorting: the nearest depth per pixel, then the fragments that reach it
            # (on an exact tie the later triangle wins)
            before = zbuf.copy()
            np.minimum.at(zbuf, pix, depth)
            win = (depth == zbuf[pix]) & (depth < before[pix])
            pix = pix[win]
            fbuf[pix] = f[rep[win]]
            bbuf[pix] = bw[win]
        start = stop
    return Fragments(
        fbuf.reshape(height, width),
        bbuf.reshape(height, width, 3).astype(np.float32),
        zbuf.reshape(height, width).astype(np.float32),
    )


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``[V,3]`` of a mesh ``verts [V,3]``, ``faces [F,3]``."""
    v = verts[faces]
    fn = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    idx = faces.reshape(-1)
    fn3 = np.repeat(fn, 3, axis=0)  # the face normal once per corner, in faces.reshape(-1) order
    n = np.stack([np.bincount(idx, fn3[:, c], minlength=len(verts)) for c in range(3)], 1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def shade(
    frags: Fragments,
    normals_cam: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    light_dirs: np.ndarray | None = None,
    ambient: float = 0.3,
    background: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Lambert shading of rasterized fragments.

    Args:
        frags: from :func:`rasterize_mesh`.
        normals_cam: ``[V,3]`` unit vertex normals in the camera frame (OpenCV axes).
        faces: ``[F,3]``.
        colors: ``[V,3]`` linear albedo in [0,1] (default light grey).
        light_dirs: ``[L,3]`` unit directions *towards* the lights, camera frame (default one light
            above-left of the camera).
        ambient: ambient term.
        background: colour of empty pixels.
    Returns:
        ``[H,W,3]`` float32 image in [0,1].
    """
    H, W = frags.face.shape
    img = np.empty((H, W, 3), np.float32)
    img[:] = background
    m = frags.mask
    if not m.any():
        return img
    fi = frags.face[m]
    bw = frags.bary[m]
    vid = faces[fi]  # [P,3]
    n = (normals_cam[vid] * bw[..., None]).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    if light_dirs is None:
        light_dirs = np.array([[-0.4, -0.5, -0.77]])
    L = np.asarray(light_dirs, np.float64)
    L = L / np.linalg.norm(L, axis=1, keepdims=True)
    diffuse = np.clip(n @ L.T, 0, None).sum(1) / len(L)
    col = np.full((len(fi), 3), 0.8) if colors is None else (colors[vid] * bw[..., None]).sum(1)
    img[m] = np.clip(col * (ambient + (1 - ambient) * diffuse)[:, None], 0, 1)
    return img


def render_mesh(
    verts: np.ndarray,
    faces: np.ndarray,
    viewmat: np.ndarray,
    K: np.ndarray,
    height: int,
    width: int,
    colors: np.ndarray | None = None,
    light_dirs: np.ndarray | None = None,
    ambient: float = 0.3,
    background: float | np.ndarray = 0.0,
) -> tuple[np.ndarray, Fragments]:
    """Render a shaded mesh: world ``verts [V,3]`` -> ``([H,W,3] float32 image, fragments)``."""
    verts = np.asarray(verts, np.float64)
    faces = np.asarray(faces, np.int64)
    uv, z = project(verts, viewmat, K)
    frags = rasterize_mesh(uv, z, faces, height, width)
    n_cam = vertex_normals(verts, faces) @ np.asarray(viewmat, np.float64)[:3, :3].T
    return shade(frags, n_cam, faces, colors, light_dirs, ambient, background), frags


def head_colors(model: object, skin: tuple[float, float, float] = (0.80, 0.60, 0.50)) -> np.ndarray:
    """Plausible per-vertex albedo ``[V,3]`` for a :class:`~hravatar.head.HeadModel` (linear RGB).

    Skin everywhere, darker hair colour on the ``scalp`` region, white eyeballs with a dark iris
    and pupil (vertices of the ``eyes`` region looking forward from the eye joints), a dark mouth
    interior. Regions a model lacks are simply not coloured. Used to make renders that MediaPipe
    recognises as faces (landmark embedding, synthetic test videos).
    """
    v = np.asarray(model.v_template.detach().cpu(), np.float64)  # type: ignore[attr-defined]
    regions = {k: np.asarray(m.detach().cpu()) for k, m in getattr(model, "regions", {}).items()}
    cols = np.tile(np.asarray(skin, np.float64), (len(v), 1))
    if "scalp" in regions:
        cols[regions["scalp"]] = (0.22, 0.15, 0.10)
    if "mouth_interior" in regions:
        cols[regions["mouth_interior"]] = (0.30, 0.06, 0.06)
    if "teeth" in regions:
        cols[regions["teeth"]] = (0.9, 0.9, 0.85)
    eyes = regions.get("eyes")
    if eyes is not None and eyes.any():
        cols[eyes] = (0.92, 0.92, 0.92)
        import torch

        with torch.no_grad():
            joints = model.forward(batch_size=1).rest_joints[0].cpu().numpy()  # type: ignore[attr-defined]
        for j in (3, 4):
            d = v - joints[j]
            r = np.linalg.norm(d, axis=1)
            dn = d / np.maximum(r, 1e-9)[:, None]
            near = eyes & (r < 0.02)
            cols[near & (dn[:, 2] > 0.90)] = (0.25, 0.15, 0.08)
            cols[near & (dn[:, 2] > 0.975)] = (0.02, 0.02, 0.02)
    return cols
