"""The avatar runtime (hravatar.avatar): render path, frame -> inputs rule, loader."""

from __future__ import annotations

import pytest
import torch

from helpers.synthetic_head import synthetic_head
from helpers.tiny_subject import tiny_camera
from hravatar.avatar import Camera, FrameParams, render
from hravatar.gaussians import AvatarConfig, GaussianHead, save_gaussians
from hravatar.shading.lighting import LearnableLighting

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


def _dense_composition(av, light, p, cam, mode, background):
    """Deform -> G-buffer -> shade written out by hand with the dense reference rasterizer and
    full-image shading: the stages the runtime must compose, independently of its code."""
    from hravatar.render import rasterize
    from hravatar.shading.shade import shade

    g = av.deform(p.shape, p.expression, p.pose, p.translation)
    vm, K = cam.viewmat[None], cam.K[None]
    centre = -(cam.viewmat[:3, :3].T @ cam.viewmat[:3, 3])
    n = g.normals(centre[None])[0]
    feats = av.colors if mode == "color" else torch.cat([av.albedo, av.roughness, av.f0, n], -1)
    col, alpha, _ = rasterize(g.means[0], g.quats[0], g.scales[0], g.opacities[0], feats, vm, K, cam.width,
                              cam.height, render_mode="RGB+ED", backend="reference")
    bg = 0.0 if background is None else background
    if mode != "pbr":
        return col[..., :3] + (1 - alpha) * bg, alpha, col[..., -1:]
    gb = {"albedo": col[..., 0:3], "roughness": col[..., 3:4], "f0": col[..., 4:5], "normal": col[..., 5:8],
          "alpha": alpha}
    return shade(gb, (vm, K), light, background=background, premultiplied=True)["image"], alpha, col[..., -1:]


@pytest.mark.parametrize("mode", ["pbr", "albedo", "color"])
@pytest.mark.parametrize("bg", [None, "rgb", "image"])
def test_render_matches_dense_composition(mode, bg):
    av, light, p, cam = _scene(1)
    background = {None: None, "rgb": torch.tensor([0.2, 0.4, 0.9]),
                  "image": torch.rand(1, cam.height, cam.width, 3)}[bg]
    with torch.no_grad():
        want, alpha, depth = _dense_composition(av, light, p, cam, mode, background)
        got = render(av, light, p, cam, mode, background, backend="reference")
        cpu = render(av, light, p, cam, mode, background, backend="cpu")
    assert float(alpha.amax()) > 0.5 and float((alpha == 0).float().mean()) > 0.1  # covered and uncovered pixels
    torch.testing.assert_close(got.image, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.alpha, alpha, rtol=0, atol=0)
    torch.testing.assert_close(got.depth, depth, rtol=0, atol=0)
    # the C++ kernel agrees with the dense oracle to the rasterizer tests' tolerance
    torch.testing.assert_close(cpu.image, want, rtol=1e-4, atol=1e-4)
    if mode != "color":
        assert got.albedo is not None and got.normal is not None
        n = got.normal[alpha[..., 0] > 0.1]
        torch.testing.assert_close(n.norm(dim=-1), torch.ones(len(n)), rtol=0, atol=1e-5)


def test_shading_maps_and_material_overrides():
    av, light, p, cam = _scene(2)
    with torch.no_grad():
        fast = render(av, light, p, cam, backend="cpu")
        full = render(av, light, p, cam, backend="cpu", shading_maps=True)
        torch.testing.assert_close(fast.image, full.image, rtol=1e-5, atol=1e-6)
        assert full.shading is not None and fast.shading is None
        # an override equal to the avatar's own material changes nothing; another one changes the image
        same = render(av, light, p, cam, materials={"f0": av.f0}, backend="cpu")
        torch.testing.assert_close(same.image, fast.image, rtol=0, atol=0)
        shiny = render(av, light, p, cam, materials={"f0": torch.full_like(av.f0, 0.9)}, backend="cpu")
        assert float((shiny.image - fast.image).abs().mean()) > 1e-3
        torch.testing.assert_close(shiny.roughness, fast.roughness)
    with pytest.raises(ValueError, match="unknown material"):
        render(av, light, p, cam, materials={"metal": av.f0})


def test_frame_params_rule():
    """The encoder's expression and jaw replace the tracked ones; everything else stays tracked."""
    from types import SimpleNamespace

    from hravatar.avatar import frame_params

    g = torch.Generator().manual_seed(5)
    fr = SimpleNamespace(shape=torch.randn(4, generator=g), expression=torch.randn(3, generator=g),
                         pose=torch.randn(5, 3, generator=g), translation=torch.randn(3, generator=g),
                         face_crop=torch.rand(8, 8, 3, generator=g))
    p, jaw = frame_params(fr, 6)
    assert jaw is None and p.expression.shape == (1, 6)
    assert torch.equal(p.expression[0, :3], fr.expression) and float(p.expression[0, 3:].abs().sum()) == 0
    torch.testing.assert_close(p.pose[0], fr.pose, rtol=0, atol=0)
    e_enc, j_enc = torch.randn(1, 6, generator=g), torch.randn(1, 3, generator=g)
    seen = []

    def encoder(crops):
        seen.append(crops.shape)
        return e_enc, j_enc

    p2, jaw2 = frame_params(fr, 6, encoder)
    assert seen == [(1, 8, 8, 3)] and jaw2 is j_enc
    assert torch.equal(p2.expression, e_enc) and torch.equal(p2.pose[0, 2], j_enc[0])
    for j in (0, 1, 3, 4):
        assert torch.equal(p2.pose[0, j], fr.pose[j])
    assert torch.equal(p2.shape[0], fr.shape) and torch.equal(p2.translation[0], fr.translation)
    assert torch.equal(p.pose[0, 2], fr.pose[2])  # the tracked params were not modified


def _avatar_folder(path):
    av, light, _, _ = _scene(3)
    path.mkdir()
    save_gaussians(av, path / "avatar.safetensors")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in light.state_dict().items()}, str(path / "lighting.safetensors"))
    (path / "train_config.yaml").write_text("# TrainConfig\nsubject: /nowhere\ndownscale: 2\nno_pbr: false\n")
    return av, light


def test_load_avatar_and_render(tmp_path):
    from hravatar.avatar import load_avatar

    av, light = _avatar_folder(tmp_path / "av")
    la = load_avatar(tmp_path / "av", "cpu")
    assert la.mode == "pbr" and la.settings.downscale == 2 and la.encoder is None
    assert not any(p.requires_grad for p in la.gaussians.parameters())
    _, _, p, cam = _scene(3)
    want = render(av, light, p, cam, backend="cpu")
    got = la.render(p, cam, backend="cpu")  # no autograd: the C++ inference kernels (round-off apart)
    torch.testing.assert_close(got.image, want.image, rtol=0, atol=1e-5)
    with torch.no_grad():
        exact = render(la.gaussians, la.lighting, p, cam, backend="cpu", fast=False)
    torch.testing.assert_close(exact.image, want.image, rtol=0, atol=0)


def test_load_avatar_names_file_and_tensor(tmp_path):
    from safetensors.torch import save_file

    from hravatar.avatar import load_avatar
    from hravatar.errors import HRAvatarError

    _, light = _avatar_folder(tmp_path / "av")
    st = {k: v.contiguous() for k, v in light.state_dict().items()}
    name = sorted(st)[0]
    st[name] = torch.zeros(2, 2)
    save_file(st, str(tmp_path / "av" / "lighting.safetensors"))
    with pytest.raises(HRAvatarError, match=rf"lighting\.safetensors: tensor '?{name}'? has shape \[2, 2\]"):
        load_avatar(tmp_path / "av", "cpu")
    (tmp_path / "av" / "lighting.safetensors").unlink()
    with pytest.raises(HRAvatarError, match="incomplete avatar folder"):
        load_avatar(tmp_path / "av", "cpu")
