"""Preview images of head models (``hravatar head export``'s PNG), drawn with the package's mesh
renderer (:mod:`hravatar.render.mesh`) from a distant, nearly orthographic camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

#: Region colours (linear RGB in [0,1]) used when a region mask is given.
REGION_COLORS: dict[str, tuple[float, float, float]] = {
    "face": (0.85, 0.68, 0.58), "scalp": (0.60, 0.48, 0.40), "neck": (0.75, 0.60, 0.52),
    "eyes": (0.92, 0.92, 0.95), "lips": (0.80, 0.38, 0.38), "teeth": (0.97, 0.95, 0.85),
    "mouth_interior": (0.45, 0.12, 0.14),
}


def render_preview(
    verts: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    size: int = 512,
    yaw_deg: float = 0.0,
    light_dir: tuple[float, float, float] = (0.3, 0.4, 1.0),
    background: float = 1.0,
) -> np.ndarray:
    """Lambert render of a mesh seen from +z (the head model's front), framed to fill 90% of the image.

    Args:
        verts: ``[V,3]`` vertices (head-model frame: +y up, +z towards the viewer).
        faces: ``[F,3]`` triangles (counter-clockwise seen from outside).
        colors: ``[V,3]`` albedo in [0,1] (default light grey).
        size: image width and height in pixels.
        yaw_deg: turn the mesh about +y before rendering (e.g. 35 for a three-quarter view).
        light_dir: direction towards the light, head-model axes (x right, y up, z to the viewer).
        background: background grey level.
    Returns:
        ``[size,size,3]`` float32 image in [0,1] (row 0 at the top).
    """
    from hravatar.geometry.rotations import rotation_y
    from hravatar.render.mesh import render_mesh

    v = np.asarray(verts, dtype=np.float64) @ rotation_y(yaw_deg, dtype=torch.float64).numpy().T
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    centre = (lo + hi) / 2
    scale = 0.9 * size / max(hi - lo)  # pixels per metre at the mesh
    distance = 100.0 * float(max(hi - lo))  # far away: nearly orthographic
    viewmat = np.eye(4)
    viewmat[:3, :3] = np.diag([1.0, -1.0, -1.0])  # OpenCV camera on +z looking at -z, image up = +y
    viewmat[:3, 3] = [-centre[0], centre[1], distance + v[:, 2].max()]
    f = scale * (distance + v[:, 2].max() - (v[:, 2].max() + v[:, 2].min()) / 2)
    K = np.array([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    L = np.asarray(light_dir, dtype=np.float64) * np.array([1.0, -1.0, -1.0])
    img, _ = render_mesh(v, np.asarray(faces, np.int64), viewmat, K, size, size, colors, L[None], ambient=0.25,
                         background=background)
    return img


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

    views = [render_preview(verts, faces, colors, size=size, yaw_deg=y) for y in yaws]
    img = np.concatenate(views, axis=1)
    srgb = np.where(img <= 0.0031308, 12.92 * img, 1.055 * np.power(np.clip(img, 0, 1), 1 / 2.4) - 0.055)
    arr = (np.clip(srgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return path
