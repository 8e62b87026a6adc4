"""An optional clothed torso for the synthetic subject (``hravatar synth --torso``).

Real clips show the shoulders and clothes under the head; the head-only matte of preprocessing must
remove them. The synthetic torso gives that matte ground truth: a T-shirt-like surface (a
superellipse tube that starts as a collar around the neck rim and widens into shoulders) in a
solid, seed-chosen colour with a soft stripe pattern, rendered with the numpy mesh renderer and
composited *under* the head (the head's Gaussians are drawn over it). The torso follows the head's
translation but not its rotation (bodies do not turn with the head), so the head turns above a
still collar, as in a talking-head video.

Ground truth: the head's alpha stays ``gt/mask`` (head + neck + hair); ``gt/clothes`` is the torso
pixels not covered by the head; the frames' alpha is the person (head over torso).
"""

from __future__ import annotations

import math

import numpy as np

from hravatar.render.mesh import project, rasterize_mesh, shade, vertex_normals

#: clothes colours (sRGB 0..1), chosen by seed; none is skin-like
CLOTHES_COLOURS = ((0.12, 0.18, 0.40), (0.20, 0.20, 0.22), (0.55, 0.10, 0.12), (0.15, 0.35, 0.20),
                   (0.85, 0.85, 0.88))


def torso_mesh(rim: np.ndarray, rings: int = 24, segments: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A torso surface around a neck rim (head-model frame: metres, +y up, +z out of the face).

    Args:
        rim: ``[B,3]`` the shaped head's neck-rim vertices at rest.
        rings, segments: tessellation (rings from collar to waist, vertices per ring).
    Returns:
        ``(verts [rings*segments,3], faces [F,3])``; triangles counter-clockwise seen from outside.
    """
    cx, cz = float(rim[:, 0].mean()), float(rim[:, 2].mean())
    rx_n = 0.5 * float(np.ptp(rim[:, 0])) * 1.12 + 0.004
    rz_n = 0.5 * float(np.ptp(rim[:, 2])) * 1.12 + 0.004
    y_top = float(rim[:, 1].mean())  # the collar overlaps the lower neck: no gap under the head
    ys = y_top - np.concatenate([np.linspace(0.0, 0.09, rings // 2, endpoint=False),
                                 np.linspace(0.09, 0.40, rings - rings // 2)])
    t = np.clip((y_top - ys) / 0.09, 0.0, 1.0)
    ramp = t * t * (3 - 2 * t)
    rx = rx_n + (0.20 - rx_n) * ramp
    rz = rz_n + (0.11 - rz_n) * ramp
    zc = cz - 0.03 * ramp  # the chest sits a little behind the neck's front
    th = np.linspace(0, 2 * math.pi, segments, endpoint=False)
    c, s = np.cos(th), np.sin(th)
    p = 2.0 / 4.0  # superellipse exponent (boxy shoulders)
    ex = np.sign(c) * np.abs(c) ** p
    ez = np.sign(s) * np.abs(s) ** p
    verts = np.stack([
        cx + rx[:, None] * ex[None, :],
        np.repeat(ys[:, None], segments, 1),
        zc[:, None] + rz[:, None] * ez[None, :],
    ], -1).reshape(-1, 3)
    faces = []
    for r in range(rings - 1):
        for k in range(segments):
            a, b = r * segments + k, r * segments + (k + 1) % segments
            c_, d = a + segments, b + segments
            faces += [(a, c_, b), (b, c_, d)]
    f = np.asarray(faces, np.int64)
    # orient outward (normals away from the axis)
    tri = verts[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    radial = tri.mean(1) - np.array([cx, 0.0, cz])
    radial[:, 1] = 0
    if float((n * radial).sum(-1).mean()) < 0:
        f = f[:, [0, 2, 1]]
    return verts, f


def clothes_colour(seed: int) -> np.ndarray:
    """The torso's sRGB colour ``[3]`` for ``seed``."""
    return np.asarray(CLOTHES_COLOURS[seed % len(CLOTHES_COLOURS)], np.float64)


def render_torso(
    verts: np.ndarray, faces: np.ndarray, viewmat: np.ndarray, K: np.ndarray, size: int, colour: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Render the torso: ``verts [V,3]`` world -> (``[S,S,3]`` float32 sRGB in [0,1], ``[S,S]`` bool mask).

    Lambert shading (light above-left of the camera, ambient 0.35) of the colour modulated by soft
    horizontal stripes (so the clothes are not one flat colour); both sides of the surface render.
    """
    vm = np.asarray(viewmat, np.float64)
    Kd = np.asarray(K, np.float64)
    uv, z = project(verts, vm, Kd)
    fr = rasterize_mesh(uv, z, faces, size, size, cull_backfaces=False)
    n_cam = vertex_normals(verts, faces) @ vm[:3, :3].T
    stripes = 0.85 + 0.15 * np.cos(verts[:, 1] * 2 * math.pi / 0.04)
    lin = (colour ** 2.2)[None, :] * stripes[:, None]
    two_sided = np.where(n_cam[:, 2:3] > 0, -n_cam, n_cam)  # normals towards the camera
    img = shade(fr, two_sided, faces, lin, np.array([[-0.3, -0.4, -0.87]]), 0.35)
    return (np.clip(img, 0, 1) ** (1 / 2.2)).astype(np.float32), fr.mask
