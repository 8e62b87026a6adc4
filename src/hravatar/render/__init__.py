"""Differentiable Gaussian rasterization (CPU C++ kernel, CUDA via gsplat, dense reference) and
camera maths. Renders any Gaussians: it knows nothing about avatars.

Main entry points: :func:`rasterize`, :func:`select_backend`, and the camera helpers
:func:`look_at`, :func:`intrinsics`, :func:`orbit_cameras`, :func:`project_points`.
"""

from hravatar.render.camera import camera_centers, intrinsics, look_at, orbit_cameras, project_points
from hravatar.render.rasterize import rasterize, select_backend

__all__ = [
    "rasterize",
    "select_backend",
    "look_at",
    "intrinsics",
    "orbit_cameras",
    "project_points",
    "camera_centers",
]
