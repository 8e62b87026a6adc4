"""A small z-buffer mesh renderer (numpy, Lambert shading) to look at head models.

Not a production renderer: a loop over triangles with vectorised pixel tests, about a second for a
10k-triangle head at 512x512. Used by ``hravatar head export`` for its PNG preview.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: Region colours (linear RGB in [0,1]) used when a region mask is given.
REGION_COLORS: dict[str, tuple[float, float, float]] = {
    "face": (0.85, 0.68, 0.58), "scalp": (0.60, 0.48, 0.40), "neck": (0.75, 0.60, 0.52),
    "eyes": (0.92, 0.92, 0.95), "lips": (0.80, 0.38, 0.38), "teeth": (0.97, 0.95, 0.85),
    "mouth_interior": (0.45, 0.12, 0.14),
}


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``[V,3]`` of ``verts [V,3]``, ``faces [F,3]`` (CCW outside)."""
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def rotation_y(deg: float) -> np.ndarray:
    """Rotation about +y (``[3,3]``); positive turns the face (+z) towards +x."""
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def render_mesh(
    verts: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    size: int = 512,
    yaw_deg: float = 0.0,
    light_dir: tuple[float, float, float] = (0.3, 0.4, 1.0),
    background: float = 1.0,
) -> np.ndarray:
    """Orthographic Lambert render of a mesh seen from +z (the head model's front).

    Args:
        verts: ``[V,3]`` vertices (head-model frame: +y up, +z towards the viewer).
        faces: ``[F,3]`` triangles.
        colors: ``[V,3]`` albedo in [0,1] (default light grey).
        size: image width and height in pixels.
        yaw_deg: turn the mesh about +y before rendering (e.g. 35 for a three-quarter view).
        light_dir: direction towards the light in camera coordinates.
        background: background grey level.
    Returns:
        ``[size,size,3]`` float32 image in [0,1] (row 0 at the top).
    """
    v = np.asarray(verts, dtype=np.float64) @ rotation_y(yaw_deg).T
    f = np.asarray(faces, dtype=np.int64)
    col = np.full((len(v), 3), 0.8) if colors is None else np.asarray(colors, dtype=np.float64)
    n = vertex_normals(v, f)
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    scale = 0.9 * size / max(hi - lo)
    centre = (lo + hi) / 2
    px = (v[:, 0] - centre[0]) * scale + size / 2
    py = size / 2 - (v[:, 1] - centre[1]) * scale
    pz = v[:, 2]
    L = np.asarray(light_dir, dtype=np.float64)
    L = L / np.linalg.norm(L)
    shade = 0.25 + 0.75 * np.clip(n @ L, 0, 1)
    vcol = col * shade[:, None]
    img = np.full((size, size, 3), background, dtype=np.float64)
    zbuf = np.full((size, size), -np.inf)
    for a, b, c in f:
        xa, xb, xc, ya, yb, yc = px[a], px[b], px[c], py[a], py[b], py[c]
        x0, x1 = max(math.floor(min(xa, xb, xc)), 0), min(math.ceil(max(xa, xb, xc)), size - 1)
        y0, y1 = max(math.floor(min(ya, yb, yc)), 0), min(math.ceil(max(ya, yb, yc)), size - 1)
        if x1 < x0 or y1 < y0:
            continue
        det = (py[b] - py[c]) * (px[a] - px[c]) + (px[c] - px[b]) * (py[a] - py[c])
        if abs(det) < 1e-12:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        w0 = ((py[b] - py[c]) * (xs - px[c]) + (px[c] - px[b]) * (ys - py[c])) / det
        w1 = ((py[c] - py[a]) * (xs - px[c]) + (px[a] - px[c]) * (ys - py[c])) / det
        w2 = 1 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        if not inside.any():
            continue
        z = w0 * pz[a] + w1 * pz[b] + w2 * pz[c]
        sub = zbuf[y0 : y1 + 1, x0 : x1 + 1]
        upd = inside & (z > sub)
        if not upd.any():
            continue
        sub[upd] = z[upd]
        rgb = w0[..., None] * vcol[a] + w1[..., None] * vcol[b] + w2[..., None] * vcol[c]
        img[y0 : y1 + 1, x0 : x1 + 1][upd] = rgb[upd]
    return img.astype(np.float32)


def region_colors(num_vertices: int, regions: dict) -> np.ndarray:
    """Per-vertex colours ``[V,3]`` from region masks (name -> ``[V]`` bool, numpy or torch)."""
    col = np.full((num_vertices, 3), 0.8)
    for name in ("scalp", "neck", "face", "lips", "eyes", "mouth_interior", "teeth"):
        if name in regions:
            r = regions[name]
            mask = np.asarray(r.cpu() if hasattr(r, "cpu") else r, dtype=bool)
            col[mask] = REGION_COLORS[name]
    return col


def preview_png(
    path: str | Path,
    verts: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    size: int = 384,
    yaws: tuple[float, ...] = (0.0, 35.0),
) -> Path:
    """Write a PNG with one view per yaw side by side (front and three-quarter by default)."""
    from PIL import Image

    from hravatar.io.atomic import atomic_path

    views = [render_mesh(verts, faces, colors, size=size, yaw_deg=y) for y in yaws]
    img = np.concatenate(views, axis=1)
    srgb = np.where(img <= 0.0031308, 12.92 * img, 1.055 * np.power(np.clip(img, 0, 1), 1 / 2.4) - 0.055)
    arr = (np.clip(srgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return path
