"""Physically based deferred shading of G-buffers with environment lighting (split-sum GGX).

Knows nothing of Gaussians: it shades G-buffers ``[C, H, W, *]`` (albedo, roughness, F0, normal,
alpha) given cameras and a lighting module. See the shading section of README.md.

Main entry points::

    from hravatar.shading import shade, view_directions, LearnableLighting, EnvironmentLighting
    out = shade(gbuffer, (viewmats, Ks), lighting, background)   # dict: image, diffuse, specular, ...
"""

from hravatar.shading.brdf_lut import BrdfLut, brdf_lut_table, compute_brdf_lut, default_lut, fresnel_ks
from hravatar.shading.envmap_tools import (
    PrefilteredEnvmap,
    apply_exposure,
    background_image,
    irradiance_cube,
    load_prefiltered,
    prefilter_envmap,
    prefilter_specular,
    read_envmap,
    rotate_equirect,
    save_prefiltered,
)
from hravatar.shading.lighting import EnvironmentLighting, LearnableLighting, Lighting
from hravatar.shading.materials import edit_material, edit_materials
from hravatar.shading.normals import depth_to_points, normals_from_depth
from hravatar.shading.shade import shade, shade_foreground, unpremultiply, view_directions

__all__ = [
    "BrdfLut",
    "EnvironmentLighting",
    "LearnableLighting",
    "Lighting",
    "PrefilteredEnvmap",
    "apply_exposure",
    "background_image",
    "brdf_lut_table",
    "compute_brdf_lut",
    "default_lut",
    "depth_to_points",
    "edit_material",
    "edit_materials",
    "fresnel_ks",
    "irradiance_cube",
    "load_prefiltered",
    "normals_from_depth",
    "prefilter_envmap",
    "prefilter_specular",
    "read_envmap",
    "rotate_equirect",
    "save_prefiltered",
    "shade",
    "shade_foreground",
    "unpremultiply",
    "view_directions",
]
