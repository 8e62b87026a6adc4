"""Differentiable Gaussian rasterization (CPU C++ kernel, CUDA via gsplat, dense reference) and
camera maths. Renders any Gaussians: it knows nothing about avatars.

Main entry points: :func:`rasterize`, :func:`select_backend`, and the camera helpers
:func:`look_at`, :func:`intrinsics`, :func:`orbit_cameras`, :func:`project_points`.
"""

import os

# The OpenMP runtime reads this once, when it starts (at `import torch`): effective only if
# hravatar is imported before torch. Spin-waiting threads make shared machines crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hravatar.geometry.cameras import (  # noqa: E402
    camera_centers,
    intrinsics,
    look_at,
    orbit_cameras,
    project_points,
)
from hravatar.render.rasterize import rasterize, select_backend  # noqa: E402

__all__ = [
    "rasterize",
    "select_backend",
    "look_at",
    "intrinsics",
    "orbit_cameras",
    "project_points",
    "camera_centers",
]
