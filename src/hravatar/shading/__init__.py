"""Physically based deferred shading of G-buffers with environment lighting (split-sum GGX).

Knows nothing of Gaussians: it shades G-buffers ``[C, H, W, *]`` (albedo, roughness, F0, normal,
alpha) given cameras and a lighting module. See ``docs/readme/shading.md``.
"""
