"""The avatar runtime (hravatar.avatar): render path, frame -> inputs rule, loader."""

from __future__ import annotations

import pytest
import torch

from hravatar.avatar import Camera, FrameParams, render
from hravatar.gaussians import AvatarConfig, GaussianHead
from hravatar.gaussians.testing import synthetic_head
from hravatar.shading.lighting import LearnableLighting
from hravatar.train_testing import tiny_camera

pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(seed: int = 0, size: int = 40):
    g = torch.Generator().manual_seed(seed)
    head = synthetic_head(subdivisions=1, seed=seed)
    av = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=3, seed=seed, init_opacity=0.8))
    with torch.no_grad():
        for k in ("albedo", "roughness", "f0", "colors"):
            av.params[k].copy_(torch.randn(av.params[k].shape, generator=g))
    light = LearnableLighting()
    with torch.no_grad():
        light.diffuse_map.copy_(torch.rand(light.diffuse_map.shape, generator=g) + 0.2)
        light.specular_map.copy_(torch.rand(light.specular_map.shape, generator=g))
    vm, K = tiny_camera(size)
    pose = 0.2 * torch.randn(1, 5, 3, generator=g)
    p = FrameParams(torch.randn(1, head.num_shape, generator=g), torch.randn(1, head.num_expr, generator=g), pose,
                    0.01 * torch.randn(1, 3, generator=g))
    return av, light, p, Camera(vm, K, size, size - 8)


@pytest.mark.parametrize("mode", ["pbr", "albedo", "color"])
@pytest.mark.parametrize("bg", [None, "image"])
def test_render_equals_old_train_path(mode, bg):
    """The runtime renders exactly what train.render_frame rendered (removed with the old path)."""
    from hravatar.train import render_frame

    av, light, p, cam = _scene()
    background = None if bg is None else torch.rand(1, cam.height, cam.width, 3)
    with torch.no_grad():
        old = render_frame(av, light, p.shape, p.expression, p.pose, p.translation, cam.viewmat, cam.K, cam.width,
                           cam.height, mode, "cpu", background)
        new = render(av, light, p, cam, mode, background, backend="cpu")
    assert float(new.alpha.amax()) > 0.5
    for k in ("image", "alpha", "depth", "albedo", "roughness", "f0", "normal"):
        if k in old:
            torch.testing.assert_close(getattr(new, k), old[k], rtol=0, atol=0)
