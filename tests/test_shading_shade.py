"""shade(): sphere under constant light, split-sum algebra, gradients, view directions, lighting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers.sphere_gbuffer import sphere_gbuffer
from hravatar.geometry import intrinsics, look_at
from hravatar.shading.brdf_lut import default_lut, fresnel_ks
from hravatar.shading.envmap_tools import PrefilteredEnvmap, prefilter_envmap
from hravatar.shading.lighting import EnvironmentLighting, LearnableLighting
from hravatar.shading.shade import shade, view_directions


def _cams(h: int = 48, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    vm = torch.stack([look_at((0.0, 0.0, 4.0)), look_at((2.5, 1.5, 2.5))])
    K = intrinsics(40, w, h).expand(2, 3, 3)
    return vm, K


def _constant_env(radiance: tuple[float, float, float]) -> EnvironmentLighting:
    eq = torch.tensor(radiance).expand(16, 32, 3).clone()
    return EnvironmentLighting(prefilter_envmap(eq, base_res=8, levels=3, irradiance_res=8, samples=64))


def test_sphere_constant_environment_diffuse_is_albedo_times_radiance() -> None:
    vm, K = _cams()
    gb = sphere_gbuffer(vm, K, 48, 48, albedo=(0.7, 0.4, 0.2), roughness=0.6, f0=0.08)
    rad = (1.5, 0.5, 2.0)
    out = shade(gb, (vm, K), _constant_env(rad))
    m = gb["alpha"][..., 0] > 0
    expect = gb["albedo"][m] * torch.tensor(rad)
    assert torch.allclose(out["diffuse"][m], expect, rtol=1e-4, atol=1e-5)
    # specular = L * (k_s A + B) exactly (the prefiltered map of a constant is that constant)
    c = out["n_dot_v"]
    fg = default_lut()(gb["roughness"], c)
    ks = fresnel_ks(gb["f0"], gb["roughness"], c)
    spec = torch.tensor(rad) * (ks * fg[..., :1] + fg[..., 1:])
    assert torch.allclose(out["specular"][m], spec[m], rtol=1e-4, atol=1e-6)
    # black background outside the sphere, image = color inside
    assert out["image"][~m].abs().max() == 0
    assert torch.allclose(out["image"][m], out["color"][m])


def test_view_directions_point_to_the_camera() -> None:
    vm, K = _cams(32, 40)
    v = view_directions(vm, K, 32, 40)
    assert v.shape == (2, 32, 40, 3)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2, 32, 40), atol=1e-5)
    gb = sphere_gbuffer(vm, K, 32, 40)
    # surface point + t * v reaches the camera centre
    eye = torch.stack([torch.tensor([0.0, 0.0, 4.0]), torch.tensor([2.5, 1.5, 2.5])])
    m = gb["alpha"][..., 0] > 0
    for c in range(2):
        p = gb["normal"][c][m[c]]  # unit sphere: surface point = normal
        to_cam = F.normalize(eye[c] - p, dim=-1)
        assert torch.allclose(v[c][m[c]], to_cam, atol=1e-4)
    # silhouette: N.V ~ 0 at the rim, 1 at the centre facing the camera
    nv = (gb["normal"] * v).sum(-1)[m]
    assert nv.max() > 0.99 and nv.min() > -1e-3


def test_background_compositing_and_premultiplied() -> None:
    vm, K = _cams(16, 16)
    gb = sphere_gbuffer(vm, K, 16, 16)
    gb["alpha"] = gb["alpha"] * 0.5
    bg = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    light = _constant_env((1.0, 1.0, 1.0))
    out = shade(gb, (vm, K), light, background=bg)
    assert torch.allclose(out["image"], out["color"] * gb["alpha"] + bg * (1 - gb["alpha"]))
    pm = dict(gb, albedo=gb["albedo"] * gb["alpha"], roughness=gb["roughness"] * gb["alpha"], f0=gb["f0"] * gb["alpha"])
    out2 = shade(pm, (vm, K), light, background=bg, premultiplied=True)
    assert torch.allclose(out2["image"], out["image"], atol=1e-5)


def test_learnable_lighting_init_and_gradients() -> None:
    vm, K = _cams(24, 24)
    gb = sphere_gbuffer(vm, K, 24, 24, roughness=0.7, f0=0.1)
    gb = {k: v.clone().requires_grad_(k in ("albedo", "roughness", "f0", "normal")) for k, v in gb.items()}
    light = LearnableLighting()
    assert light.diffuse_map.shape == (6, 16, 16, 3) and light.specular_map.shape == (6, 32, 32, 3)
    assert len(light.specular_levels()) == 4  # 32, 16, 8, 4
    out = shade(gb, (vm, K), light)
    m = gb["alpha"][..., 0] > 0
    # constant init 0.5 -> sigmoid(0.5) everywhere (convolution keeps constants)
    s = torch.sigmoid(torch.tensor(0.5))
    assert torch.allclose(out["irradiance"][m], s.expand(int(m.sum()), 3), atol=1e-5)
    assert torch.allclose(out["env_specular"][m], s.expand(int(m.sum()), 3), atol=1e-5)
    target = torch.rand_like(out["image"])
    ((out["image"] - target) ** 2).mean().backward()
    for p in (light.diffuse_map, light.specular_map):
        assert p.grad is not None and p.grad.abs().sum() > 0 and torch.isfinite(p.grad).all()
    for k in ("albedo", "roughness", "f0", "normal"):
        assert gb[k].grad is not None and gb[k].grad[m].abs().sum() > 0


def test_learnable_lighting_without_convolution_is_direct() -> None:
    light = LearnableLighting(convolve=False)
    with torch.no_grad():
        light.diffuse_map[4] = 3.0  # +z face
    n = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    e = light.irradiance(n)
    assert torch.allclose(e[0], torch.sigmoid(torch.tensor(3.0)).expand(3))
    assert torch.allclose(e[1], torch.sigmoid(torch.tensor(0.5)).expand(3))
    # with the official convolution the +z face light spreads to the sides but not behind
    light2 = LearnableLighting(convolve=True)
    with torch.no_grad():
        light2.diffuse_map[4] = 3.0
    e2 = light2.irradiance(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))
    assert e2[0, 0] > e2[1, 0] > e2[2, 0]


def test_environment_lighting_rotation_and_roughness_levels() -> None:
    # a single bright lobe toward +x; rotating the environment by 90 deg moves it to -z
    eq = torch.full((32, 64, 3), 0.1)
    from hravatar.shading.cubemap import equirect_directions

    d = equirect_directions(32, 64)
    eq = eq + 5.0 * torch.exp(20 * (d[..., 0:1] - 1))
    env = prefilter_envmap(eq, base_res=16, levels=5, irradiance_res=8, samples=128)
    light = EnvironmentLighting(env)
    px, mz = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    assert light.irradiance(px)[0, 0] > 3 * light.irradiance(mz)[0, 0]
    light.rotation = 90.0
    assert light.irradiance(mz)[0, 0] > 3 * light.irradiance(px)[0, 0]
    light.rotation = 0.0
    # roughness -> level: linear in the table, and blurrier = lower peak
    assert torch.allclose(light.roughness_to_level(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.0, 2.0, 4.0]))
    peaks = [light.specular(px, torch.tensor([[r]]))[0, 0].item() for r in (0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(peaks, peaks[1:], strict=False))
    light.exposure = 1.0
    assert light.specular(px, torch.tensor([[1.0]]))[0, 0].item() == pytest.approx(2 * peaks[-1], rel=1e-5)


def test_constant_env_prefiltered_object() -> None:
    # PrefilteredEnvmap built by hand (e.g. from another tool) works without an equirect
    cube = torch.full((6, 4, 4, 3), 2.0)
    env = PrefilteredEnvmap(cube, [cube, cube], torch.tensor([0.0, 1.0]))
    light = EnvironmentLighting(env)
    vm, K = _cams(8, 8)
    bg = light.background(vm, K, 8, 8)
    assert torch.allclose(bg, torch.full_like(bg, 2.0))
    assert light.mean_irradiance() == pytest.approx(2.0)
    assert math.isfinite(light.mean_irradiance())
