"""Rotations and pinhole cameras: the one geometry module of the package.

* :mod:`~hravatar.geometry.rotations`: axis-angle, quaternion (w, x, y, z) and matrix conversions.
* :mod:`~hravatar.geometry.cameras`: OpenCV/gsplat cameras (``look_at``, ``intrinsics``,
  ``orbit_cameras``, ``project_points``, ``camera_centers``, per-pixel rays ``pixel_rays``,
  ``ray_directions``, ``ray_directions_at``).
"""

from hravatar.geometry.cameras import (
    camera_centers,
    intrinsics,
    look_at,
    orbit_cameras,
    pixel_rays,
    project_points,
    ray_directions,
    ray_directions_at,
)
from hravatar.geometry.rotations import (
    axis_angle_to_matrix,
    compose_axis_angle,
    euler_to_axis_angle,
    matrix_to_axis_angle,
    matrix_to_quat,
    normalize_quat,
    quat_multiply,
    quat_to_matrix,
    rotation_y,
)

__all__ = [
    "axis_angle_to_matrix",
    "camera_centers",
    "compose_axis_angle",
    "euler_to_axis_angle",
    "intrinsics",
    "look_at",
    "matrix_to_axis_angle",
    "matrix_to_quat",
    "normalize_quat",
    "orbit_cameras",
    "pixel_rays",
    "project_points",
    "quat_multiply",
    "quat_to_matrix",
    "ray_directions",
    "ray_directions_at",
    "rotation_y",
]
