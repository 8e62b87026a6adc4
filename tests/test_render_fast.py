"""The inference kernels (fused C++ deformation, projection + rasterization, shading) against their
PyTorch references: ``GaussianHead.deform`` + normals, ``rasterize(backend="cpu")``, ``shade``."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.synthetic_head import synthetic_head
from hravatar.avatar import Camera, FrameParams
from hravatar.avatar.render import render, use_fast_path
from hravatar.gaussians import AvatarConfig, GaussianHead
from hravatar.render import rasterize
from hravatar.render.fast import fast_available, fast_deform, fast_gbuffer, rasterize_fast
from hravatar.shading.fast import fast_shading_available, prepare_lighting, shade_foreground_fast
from hravatar.shading.lighting import EnvironmentLighting, LearnableLighting
from hravatar.shading.shade import shade

pytestmark = pytest.mark.skipif(not fast_available(), reason="no C++ compiler for the inference kernels")


def _camera(size: int, distance: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    vm = torch.eye(4)
    vm[:3, :3] = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    vm[2, 3] = distance
    K = torch.tensor([[2.0 * size, 0, size / 2], [0, 2.0 * size, size / 2], [0, 0, 1.0]])
    return vm, K


def _centre(vm: torch.Tensor) -> torch.Tensor:
    return -(vm[:3, :3].T @ vm[:3, 3])


@pytest.fixture(scope="module")
def avatar() -> GaussianHead:
    torch.manual_seed(0)
    av = GaussianHead.from_head_model(synthetic_head(2, num_shape=6, num_expr=5), AvatarConfig(points_per_face=6))
    with torch.no_grad():  # a trained-looking avatar: varied bases, weights, materials, opacities
        for k in ("shapedirs", "exprdirs", "posedirs"):
            av.params[k].add_(0.002 * torch.randn_like(av.params[k]))
        av.params["lbs_weights"].add_(0.3 * torch.randn_like(av.params["lbs_weights"]))
        av.params["lbs_weights"][:5] = -1.0  # all weights inactive: the identity transform
        av.params["quats"].copy_(torch.randn_like(av.params["quats"]))
        av.params["opacities"].copy_(2.0 * torch.randn_like(av.params["opacities"]))
        for k in ("albedo", "roughness", "f0"):
            av.params[k].copy_(torch.randn_like(av.params[k]))
    return av


CASES = [
    {},  # all zeros
    {"shape": 0.8, "expression": 1.0, "pose": 0.2, "translation": 0.02},
    {"expression": 2.0, "pose": 0.5},
]


def _params(avatar: GaussianHead, case: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    if "shape" in case:
        out["shape"] = case["shape"] * torch.randn(1, avatar.num_shape, generator=g)
    if "expression" in case:
        out["expression"] = case["expression"] * torch.randn(1, avatar.num_expr, generator=g)
    if "pose" in case:
        out["pose"] = case["pose"] * torch.randn(1, 5, 3, generator=g)
    if "translation" in case:
        out["translation"] = case["translation"] * torch.randn(1, 3, generator=g)
    return out


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_deform_matches_reference(avatar: GaussianHead, case: int) -> None:
    p = _params(avatar, CASES[case], case)
    vm, _ = _camera(64)
    c = _centre(vm)
    with torch.no_grad():
        ref = avatar.deform(p.get("shape"), p.get("expression"), p.get("pose"), p.get("translation"))
        n_ref = ref.normals(c[None])[0]
    fast = fast_deform(avatar, p.get("shape"), p.get("expression"), p.get("pose"), p.get("translation"), c)
    torch.testing.assert_close(fast.means, ref.means[0], atol=2e-6, rtol=0)
    torch.testing.assert_close(fast.scales, ref.scales[0], atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(fast.opacities, ref.opacities[0], atol=1e-7, rtol=1e-6)
    # q and -q are the same rotation: compare rotation matrices' action via |<q, q_ref>| = 1
    dot = (fast.quats * ref.quats[0]).sum(-1).abs()
    torch.testing.assert_close(dot, torch.ones_like(dot), atol=2e-6, rtol=0)
    torch.testing.assert_close(fast.normals, n_ref, atol=5e-6, rtol=0)
    # the static-weight points did not move beyond blendshapes + translation
    assert torch.isfinite(fast.means).all()
    # without a camera: the Gaussian's own axis sign
    own = fast_deform(avatar, p.get("shape"), p.get("expression"), p.get("pose"), p.get("translation"))
    torch.testing.assert_close(own.normals, ref.normals()[0], atol=5e-6, rtol=0)


def test_fast_deform_cached_shape_follows_edits(avatar: GaussianHead) -> None:
    p = _params(avatar, CASES[1], 7)
    a = fast_deform(avatar, p["shape"], p["expression"]).means.clone()
    b = fast_deform(avatar, 2 * p["shape"], p["expression"]).means  # new identity: not the cached one
    with torch.no_grad():
        ref = avatar.deform(2 * p["shape"], p["expression"]).means[0]
    torch.testing.assert_close(b, ref, atol=2e-6, rtol=0)
    assert (a - b).abs().max() > 1e-4
    with torch.no_grad():
        avatar.params["means"].add_(0.01)  # an in-place edit of the avatar invalidates the cache
    try:
        c = fast_deform(avatar, p["shape"], p["expression"]).means
        torch.testing.assert_close(c, a + 0.01, atol=2e-6, rtol=0)
    finally:
        with torch.no_grad():
            avatar.params["means"].sub_(0.01)


def test_fast_deform_rejects_triangle_rig() -> None:
    av = GaussianHead.from_head_model(synthetic_head(1, num_shape=2, num_expr=2),
                                      AvatarConfig(points_per_face=1, rig="triangle"))
    assert not fast_available(av)
    with pytest.raises(ValueError, match="blendshape"):
        fast_deform(av)


def _random_gaussians(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.08, 0.08, 0.1])
    if n >= 4:
        means[0] = torch.tensor([0.0, 0.0, 0.7])  # behind the camera (camera at z = 0.6 looking at -z)
        means[1] = torch.tensor([0.0, 0.0, 0.595])  # closer than the near plane
        means[2] = torch.tensor([5.0, 0.0, 0.0])  # off screen
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.rand(n, 3, generator=g) * 0.02 + 0.001,
        "opacities": torch.rand(n, generator=g) * torch.where(torch.arange(n) % 7 == 3, 0.002, 1.0),
        "colors": torch.rand(n, 8, generator=g),
    }


@pytest.mark.parametrize(("n", "size", "bg"), [(0, 32, False), (1, 32, True), (300, 48, False), (2000, 40, True)])
def test_rasterize_fast_matches_cpu_rasterizer(n: int, size: int, bg: bool) -> None:
    vm, K = _camera(size)
    x = _random_gaussians(n, n + size)
    background = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]) if bg else None
    with torch.no_grad():
        ref, ref_a, meta_ref = rasterize(x["means"], x["quats"], x["scales"], x["opacities"], x["colors"], vm[None],
                                         K[None], size, size, render_mode="RGB+ED", backend="cpu",
                                         backgrounds=None if background is None else background[None])
    out, a, meta = rasterize_fast(x["means"], x["quats"], x["scales"], x["opacities"], x["colors"], vm, K, size,
                                  size, background=background)
    assert out.shape == (1, size, size, 9) and a.shape == (1, size, size, 1)
    torch.testing.assert_close(a, ref_a, atol=2e-5, rtol=0)
    torch.testing.assert_close(out[..., :8], ref[..., :8], atol=2e-5, rtol=0)
    covered = ref_a[..., 0] > 1e-3  # expected depth is divided by alpha: compare where it is defined
    torch.testing.assert_close(out[..., 8][covered], ref[..., 8][covered], atol=1e-4, rtol=0)
    torch.testing.assert_close(meta["radii"], meta_ref["radii"], atol=1, rtol=0)
    assert torch.equal(meta["radii"] > 0, meta_ref["radii"] > 0)
    if n >= 4:
        assert (meta["radii"][0, :3] == 0).all()  # behind, too near, off screen: culled
    if n:
        assert out[..., :8].abs().sum() > 0


def test_rasterize_fast_depth_modes() -> None:
    vm, K = _camera(32)
    x = _random_gaussians(200, 3)
    acc, a, _ = rasterize_fast(x["means"], x["quats"], x["scales"], x["opacities"], x["colors"][:, :3], vm, K, 32, 32,
                               depth="accumulated")
    exp, _, _ = rasterize_fast(x["means"], x["quats"], x["scales"], x["opacities"], x["colors"][:, :3], vm, K, 32, 32)
    none, _, _ = rasterize_fast(x["means"], x["quats"], x["scales"], x["opacities"], x["colors"][:, :3], vm, K, 32, 32,
                                depth="none")
    assert none.shape[-1] == 3 and acc.shape[-1] == 4
    torch.testing.assert_close(acc[..., :3], none)
    torch.testing.assert_close(exp[..., 3], acc[..., 3] / a[..., 0].clamp_min(1e-10))
    with pytest.raises(ValueError, match="depth"):
        rasterize_fast(x["means"], x["quats"], x["scales"], x["opacities"], x["colors"], vm, K, 32, 32, depth="z")


def _learnable(seed: int) -> LearnableLighting:
    torch.manual_seed(seed)
    light = LearnableLighting()
    with torch.no_grad():
        light.diffuse_map.normal_(0.0, 1.0)
        light.specular_map.normal_(0.0, 2.0)
    return light


def _env(rotation: float, exposure: float) -> EnvironmentLighting:
    g = torch.Generator().manual_seed(5)
    eq = torch.rand(16, 32, 3, generator=g) * 4.0
    return EnvironmentLighting.from_equirect(eq, rotation=rotation, exposure=exposure, base_res=16, levels=4,
                                             min_res=4, irradiance_res=8)


def _gbuffer(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    alpha = torch.rand(1, size, size, 1, generator=g)
    alpha[:, : size // 3] = 0.0  # uncovered rows: background only
    alpha[:, -2:] = 1e-7  # barely covered
    feats = torch.rand(1, size, size, 9, generator=g)
    feats[..., 3:4] = feats[..., 3:4] * 1.2 - 0.1  # roughness beyond [0, 1] (clamped lookups)
    feats[..., 5:8] = torch.randn(1, size, size, 3, generator=g)
    feats[..., 5:8][:, :, :2] = 0.0  # zero normals
    return feats * alpha, alpha


@pytest.mark.parametrize("lighting", ["learnable", "env", "env-rotated"])
@pytest.mark.parametrize("background", ["none", "colour", "image"])
def test_shade_foreground_fast_matches_shade(lighting: str, background: str) -> None:
    size = 24
    feats, alpha = _gbuffer(size, 1)
    vm, K = _camera(size)
    light = {"learnable": lambda: _learnable(2), "env": lambda: _env(0.0, 0.0),
             "env-rotated": lambda: _env(37.0, 0.7)}[lighting]()
    assert fast_shading_available(light)
    bg = {"none": None, "colour": torch.tensor([0.3, 0.6, 0.9]),
          "image": torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(3))}[background]
    gb = {"albedo": feats[..., 0:3], "roughness": feats[..., 3:4], "f0": feats[..., 4:5], "normal": feats[..., 5:8],
          "alpha": alpha}
    with torch.no_grad():
        ref = shade(gb, (vm[None], K[None]), light, background=bg, premultiplied=True)["image"]
    ref = torch.where(alpha > 0, ref, torch.zeros_like(ref) if bg is None else bg.expand_as(ref))
    out = shade_foreground_fast(feats, alpha, vm[None], K[None], light, bg)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    assert out[:, size // 2:].std() > 1e-3  # not a constant image


def test_prepared_lighting_follows_parameter_updates() -> None:
    light = _learnable(4)
    a = prepare_lighting(light)
    assert prepare_lighting(light) is a
    with torch.no_grad():
        light.specular_map.add_(0.5)
    assert prepare_lighting(light) is not a
    assert not fast_shading_available(object())


@pytest.mark.parametrize("mode", ["pbr", "albedo", "color"])
def test_runtime_render_fast_equals_reference(avatar: GaussianHead, mode: str) -> None:
    """The runtime's render(): the C++ inference path equals the differentiable one (same image)."""
    size = 40
    vm, K = _camera(size, 0.5)
    p = _params(avatar, CASES[1], 11)
    fp = FrameParams(p["shape"], p["expression"], p["pose"], p["translation"])
    cam = Camera(vm, K, size, size)
    light = _learnable(6)
    bg = torch.tensor([0.2, 0.3, 0.4])
    with torch.no_grad():
        assert use_fast_path(avatar) and not use_fast_path(avatar, backend="reference")
        ref = render(avatar, light, fp, cam, mode, background=bg, fast=False)
        new = render(avatar, light, fp, cam, mode, background=bg)  # fast by default without autograd
    assert new.meta["backend"] == "cpu-fused" and ref.meta["backend"] == "cpu"
    assert not use_fast_path(avatar)  # autograd on: the differentiable path
    torch.testing.assert_close(new.alpha, ref.alpha, atol=5e-5, rtol=0)
    torch.testing.assert_close(new.image, ref.image, atol=2e-4, rtol=0)
    if mode != "color":
        torch.testing.assert_close(new.albedo, ref.albedo, atol=5e-5, rtol=0)
        covered = ref.alpha[..., 0] > 1e-2
        torch.testing.assert_close(new.normal[covered], ref.normal[covered], atol=2e-3, rtol=0)
    assert ref.alpha.max() > 0.5 and math.isfinite(float(new.image.sum()))
    # environment lighting goes through the C++ shading too
    env = _env(20.0, 0.3)
    with torch.no_grad():
        a = render(avatar, env, fp, cam, "pbr", fast=False).image
        b = render(avatar, env, fp, cam, "pbr").image
    torch.testing.assert_close(b, a, atol=5e-4, rtol=0)


def test_fast_gbuffer_materials_override(avatar: GaussianHead) -> None:
    vm, K = _camera(32, 0.5)
    red = torch.zeros(avatar.num_points, 3)
    red[:, 0] = 1.0
    feats, alpha, _ = fast_gbuffer(avatar, None, None, None, None, vm, K, 32, 32, materials={"albedo": red})
    covered = alpha[..., 0] > 0.1
    torch.testing.assert_close(feats[..., 0][covered], alpha[..., 0][covered], atol=1e-5, rtol=0)
    assert feats[..., 1:3].abs().max() < 1e-6


@pytest.mark.parametrize("n_cams", [1, 2])
def test_cpu_projection_and_its_backward_match_pytorch(n_cams: int) -> None:
    """The training projection in C++ (hand-written backward) against project_gaussians + autograd."""
    from hravatar.render.cpu import project_gaussians_cpu
    from hravatar.render.projection import project_gaussians

    size = 48
    vm, K = _camera(size)
    vms = torch.stack([vm] * n_cams)
    if n_cams > 1:
        vms[1, :3, 3] += torch.tensor([0.05, -0.02, 0.1])
    Ks = K.expand(n_cams, 3, 3).clone()
    x = _random_gaussians(500, 9)
    x["means"][3] = torch.tensor([0.21, 0.0, 0.0])  # beyond the field-of-view clamp of the Jacobian,
    x["scales"][3] = torch.tensor([0.08, 0.05, 0.06])  # but large enough to reach into the image
    x["opacities"][3] = 0.9
    x["quats"][4] *= 7.0  # unnormalised quaternion
    outs = []
    for fn in (project_gaussians, project_gaussians_cpu):
        ins = [x[k].clone().requires_grad_() for k in ("means", "quats", "scales")]
        p = fn(*ins, x["opacities"], vms, Ks, size, size)
        w = [torch.randn(t.shape, generator=torch.Generator().manual_seed(i)) for i, t in
             enumerate((p.means2d, p.conics, p.depths))]
        loss = (p.means2d * w[0]).sum() + (p.conics * w[1]).sum() * 0.01 + (p.depths * w[2]).sum()
        loss.backward()
        outs.append((p, [t.grad for t in ins]))
    (pr, gr), (pc, gc) = outs
    assert torch.equal(pr.radii, pc.radii)
    assert (pc.radii[0, :3] == 0).all() and (pc.radii[:, 3] > 0).all()
    torch.testing.assert_close(pc.means2d, pr.means2d, atol=2e-4, rtol=1e-6)
    torch.testing.assert_close(pc.conics, pr.conics, atol=1e-6, rtol=2e-5)
    torch.testing.assert_close(pc.depths, pr.depths, atol=1e-6, rtol=1e-6)
    for a, b, name in zip(gc, gr, ("means", "quats", "scales"), strict=True):
        assert b.abs().sum() > 0
        err = float((a - b).abs().max() / b.abs().max())
        assert err < 1e-4, f"{name}: relative error {err}"


def test_empty_avatar_and_empty_image(avatar: GaussianHead) -> None:
    empty = GaussianHead({k: v.detach()[:0].clone() for k, v in avatar.params.items()},
                         {"joint_template": avatar.joint_template, "joint_shapedirs": avatar.joint_shapedirs},
                         avatar.config)
    g = fast_deform(empty, expression=torch.ones(1, avatar.num_expr))
    assert g.means.shape == (0, 3) and g.quats.shape == (0, 4) and g.normals.shape == (0, 3)
    vm, K = _camera(16)
    feats, alpha, meta = fast_gbuffer(empty, None, None, None, None, vm, K, 16, 16)
    assert feats.shape == (1, 16, 16, 9) and float(alpha.abs().max()) == 0.0 and meta["n_isect"] == 0
    img = shade_foreground_fast(feats, alpha, vm[None], K[None], _learnable(1), torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(img, torch.tensor([0.1, 0.2, 0.3]).expand(1, 16, 16, 3))
