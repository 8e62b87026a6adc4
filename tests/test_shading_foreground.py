"""shade_foreground(): shading only the covered pixels equals shade() on the whole image."""

from __future__ import annotations

import pytest
import torch

from hravatar.geometry import intrinsics, look_at
from hravatar.shading.lighting import LearnableLighting
from hravatar.shading.shade import shade, shade_foreground

#: a packed G-buffer layout with an extra (ignored) last channel, like the rasterizer's depth
LAYOUT = {"albedo": slice(0, 3), "roughness": slice(3, 4), "f0": slice(4, 5), "normal": slice(5, 8)}


def _scene(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    C, H, W = 2, 24, 32
    vm = look_at((0.0, 0.0, 0.55))
    K = intrinsics(30, 32, 32)
    vms = torch.stack([vm, vm.clone()])
    vms[1, :3, 3] += torch.tensor([0.01, -0.02, 0.0])
    Ks = torch.stack([K, K])
    Ks[:, 1, 2] -= 4.0  # non-square image: centre the principal point
    alphas = torch.rand(C, H, W, 1, generator=g)
    alphas[:, :5] = 0  # uncovered rows and columns
    alphas[:, :, -6:] = 0
    colors = torch.rand(C, H, W, 9, generator=g) * alphas
    light = LearnableLighting()
    with torch.no_grad():
        light.diffuse_map.copy_(torch.randn(light.diffuse_map.shape, generator=g))
        light.specular_map.copy_(torch.randn(light.specular_map.shape, generator=g))
    return colors.requires_grad_(), alphas.requires_grad_(), vms, Ks, light


@pytest.mark.parametrize("bg", ["none", "scalar", "rgb", "image"])
def test_shade_foreground_matches_full_shading(bg):
    colors, alphas, vms, Ks, light = _scene()
    C, H, W = alphas.shape[:3]
    background = {"none": None, "scalar": 0.3, "rgb": torch.tensor([0.1, 0.5, 0.9]),
                  "image": torch.rand(C, H, W, 3, generator=torch.Generator().manual_seed(3))}[bg]
    gb = {k: colors[..., sl] for k, sl in LAYOUT.items()} | {"alpha": alphas}
    ref = shade(gb, (vms, Ks), light, background=background, premultiplied=True)["image"]
    new = shade_foreground(colors, alphas, LAYOUT, vms, Ks, light, background)
    assert new.shape == ref.shape
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-6)
    w = torch.rand(ref.shape, generator=torch.Generator().manual_seed(4))
    params = [colors, alphas, light.diffuse_map, light.specular_map]
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    g_new = torch.autograd.grad((new * w).sum(), params)
    covered = alphas.detach() > 0
    # the alpha gradient differs only where alpha = 0 (no Gaussian contributes there, so the
    # rasterizer passes nothing on from those pixels); everything else is equal up to round-off
    g_ref = (g_ref[0], g_ref[1] * covered, *g_ref[2:])
    for a, b in zip(g_ref, g_new, strict=True):
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max()) + 1e-7
    assert float((g_new[1] * ~covered).abs().max()) == 0.0


def test_shade_foreground_empty_image():
    colors, alphas, vms, Ks, light = _scene()
    img = shade_foreground(colors * 0, alphas * 0, LAYOUT, vms, Ks, light, 0.25)
    assert torch.equal(img, torch.full_like(img, 0.25))
