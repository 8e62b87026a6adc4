"""Albedo / light colour priors (issue 18): each loss is 0 where it should be, and a few gradient
steps on a learnable light (or albedo) move it the way the prior says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hravatar import light_priors as lp
from hravatar.losses import LossWeights
from hravatar.shading.lighting import LearnableLighting


def _tinted_light(tint: tuple[float, float, float], level: float = 0.0) -> LearnableLighting:
    light = LearnableLighting(diffuse_res=4, specular_res=8, max_mip_level=2)
    with torch.no_grad():
        light.diffuse_map.copy_(level + torch.tensor(tint).expand_as(light.diffuse_map))
    return light


def _descend(params: list[torch.Tensor], loss_fn, steps: int = 60, lr: float = 0.05) -> None:
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()


def test_log_chroma_and_angle():
    assert lp.log_chroma(torch.tensor([0.3, 0.3, 0.3])).abs().max() < 1e-6
    assert lp.log_chroma(torch.tensor([0.6, 0.3, 0.15])).tolist() == pytest.approx([math.log(2), math.log(0.5)],
                                                                                   abs=1e-5)
    assert lp.chromaticity_angle_deg(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])) < 1e-3
    assert lp.chromaticity_angle_deg(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])) == pytest.approx(90)


def test_front_directions_face_the_camera():
    d = lp.front_directions(128)
    assert d.shape == (128, 3)
    assert bool((d[:, 2] > 0.2).all())
    assert torch.allclose(d.norm(dim=-1), torch.ones(128), atol=1e-5)


def test_exposure_prior_sets_the_light_level():
    light = _tinted_light((0.0, 0.0, 0.0), level=-1.5)  # sigmoid(-1.5) = 0.18: far too dark
    e0 = lp.mean_front_irradiance(light).detach()
    assert float(lp.exposure_loss(e0)) > 0.5
    _descend([light.diffuse_map], lambda: lp.exposure_loss(lp.mean_front_irradiance(light)), steps=200, lr=0.1)
    lum = float(lp.luminance(lp.mean_front_irradiance(light).detach()))
    assert lum == pytest.approx(lp.FRONT_IRRADIANCE, rel=0.03)
    assert float(lp.exposure_loss(torch.tensor([0.85, 0.85, 0.85]))) == pytest.approx(0.0, abs=1e-10)


def test_neutral_prior_greys_the_light():
    light = _tinted_light((1.0, 0.0, -1.0))  # warm
    c0 = float(lp.neutral_light_loss(lp.mean_front_irradiance(light).detach()))
    assert c0 > 0.3
    _descend([light.diffuse_map], lambda: lp.neutral_light_loss(lp.mean_front_irradiance(light)))
    e = lp.mean_front_irradiance(light).detach()
    assert lp.chromaticity_angle_deg(e, torch.ones(3)) < 1.0
    # no force on a grey light
    grey = _tinted_light((0.3, 0.3, 0.3))
    lp.neutral_light_loss(lp.mean_front_irradiance(grey)).backward()
    assert grey.diffuse_map.grad.abs().max() < 1e-6


def test_specular_white_balance_follows_the_highlights():
    light = _tinted_light((0.0, 0.0, 0.0))  # grey diffuse light
    with torch.no_grad():
        light.specular_map.copy_(torch.tensor([0.8, 0.2, -0.6]).expand_as(light.specular_map))  # warm highlights
    s = lp.mean_front_specular(light).detach()
    assert lp.chromaticity_angle_deg(lp.mean_front_irradiance(light).detach(), s) > 5

    def loss():
        return lp.specular_white_balance_loss(lp.mean_front_irradiance(light), lp.mean_front_specular(light))

    loss().backward()
    assert light.specular_map.grad is None or light.specular_map.grad.abs().max() == 0  # highlights: measurement
    light.zero_grad()
    _descend([light.diffuse_map], loss)
    assert lp.chromaticity_angle_deg(lp.mean_front_irradiance(light).detach(), s) < 1.0


def test_specular_colour_prior_gives_the_highlights_the_light_colour():
    light = _tinted_light((0.6, 0.0, -0.6))  # a warm diffuse light
    with torch.no_grad():
        light.specular_map.copy_(torch.tensor([-0.4, 0.0, 0.5]).expand_as(light.specular_map))  # bluish highlights
    e = lp.mean_front_irradiance(light).detach()
    assert lp.chromaticity_angle_deg(lp.mean_front_specular(light).detach(), e) > 5

    def loss():
        return lp.specular_colour_loss(lp.mean_front_specular(light), lp.mean_front_irradiance(light))

    loss().backward()
    assert light.diffuse_map.grad is None or light.diffuse_map.grad.abs().max() == 0  # the diffuse light is fixed
    light.zero_grad()
    _descend([light.specular_map], loss)
    assert lp.chromaticity_angle_deg(lp.mean_front_specular(light).detach(), e) < 1.0
    assert float(loss().detach()) < 1e-3
    # with a tolerance: nothing inside it, pulled back to its edge from outside
    close = lp.mean_front_irradiance(light).detach() * torch.tensor([1.03, 1.0, 0.98])
    assert float(lp.specular_colour_loss(close, lp.mean_front_irradiance(light), tolerance=0.1)) == 0.0
    with torch.no_grad():
        light.specular_map.copy_(torch.tensor([-0.4, 0.0, 0.5]).expand_as(light.specular_map))
    _descend([light.specular_map], lambda: lp.specular_colour_loss(lp.mean_front_specular(light),
                                                                    lp.mean_front_irradiance(light), 10.0, 0.1))
    d = (lp.log_chroma(lp.mean_front_specular(light).detach()) - lp.log_chroma(e)).norm()
    assert 0.08 < float(d) < 0.115


def test_skin_prior_hinge():
    inside = torch.tensor([0.5, 0.28, 0.18])  # g/r 0.56, b/r 0.36, luminance 0.32
    assert float(lp.skin_albedo_loss(inside)) == 0.0
    blue = torch.tensor([0.3, 0.3, 0.35])  # a pale, blue-shifted albedo: outside
    assert float(lp.skin_albedo_loss(blue)) > 0.1
    x = torch.log(torch.tensor([0.3, 0.3, 0.35])).requires_grad_(True)
    _descend([x], lambda: lp.skin_albedo_loss(torch.exp(x)), steps=100)
    a = torch.exp(x).detach()
    assert float(lp.skin_albedo_loss(a)) < 1e-3
    assert a[0] > a[1] > a[2]  # red-dominant, blue lowest


def test_mean_albedo_unpremultiplies():
    a = torch.tensor([0.4, 0.2, 0.1]).expand(1, 4, 4, 3).clone()
    alpha = torch.full((1, 4, 4, 1), 0.5)
    m = torch.ones(1, 4, 4, 1)
    m[0, 0] = 0
    assert lp.mean_albedo(a * alpha, m, alpha).tolist() == pytest.approx([0.4, 0.2, 0.1], rel=1e-5)


def test_train_terms_are_switchable():
    from types import SimpleNamespace

    from hravatar.train import colour_prior_terms

    light = _tinted_light((0.5, 0.0, -0.5))
    out = SimpleNamespace(albedo=torch.rand(1, 8, 8, 3) * 0.5, alpha=torch.ones(1, 8, 8, 1))
    mask = torch.ones(8, 8, 1)
    assert set(colour_prior_terms(LossWeights(), light, out, mask, "pbr")) == {"spec_colour"}  # default
    assert LossWeights().light_cast_transfer == 1.0 and LossWeights().light_specular_until == 0.5
    assert colour_prior_terms(LossWeights(light_specular_colour=0.0), light, out, mask, "pbr") == {}
    w = LossWeights(light_exposure=1.0, light_neutral=1.0, light_specular_wb=1.0, skin_albedo=1.0,
                    light_specular_colour=1.0)
    terms = colour_prior_terms(w, light, out, mask, "pbr")
    assert set(terms) == {"exposure", "neutral", "spec_wb", "spec_colour", "skin"}
    assert all(bool(torch.isfinite(v)) for v in terms.values())
    assert set(colour_prior_terms(w, light, out, mask, "albedo")) == {"skin"}  # no light in the warm-up


def test_synth_tints_and_skin_tones():
    from hravatar.synth.appearance import random_look
    from hravatar.synth.envmaps import front_irradiance, make_envmap, normalized_envmap, train_env_name

    assert train_env_name("neutral") == "studio"
    with pytest.raises(KeyError):
        train_env_name("purple")
    warm = make_envmap(train_env_name("warm"), 16)
    base = make_envmap("studio", 16)
    ratio = warm.reshape(-1, 3).sum(0) / base.reshape(-1, 3).sum(0)
    assert ratio.tolist() == pytest.approx([1.25, 1.0, 0.70], rel=1e-4)
    # normalisation keeps the luminance level whatever the colour
    assert front_irradiance(normalized_envmap(train_env_name("cool"), 16)) == pytest.approx(0.85, rel=1e-3)
    light, dark = random_look(0, skin=0.0).skin, random_look(0, skin=1.0).skin
    assert sum(light) > 2 * sum(dark)
    assert random_look(3, skin=0.5).skin == random_look(4, skin=0.5).skin
    assert random_look(3).hair == random_look(3, skin=0.2).hair  # the rest stays seeded
    with pytest.raises(ValueError):
        random_look(0, skin=1.5)
    assert np.isfinite(warm).all()


def test_synth_rejects_bad_light_and_skin(tmp_path):
    from hravatar.errors import HRAvatarError
    from hravatar.synth.subject import SynthConfig, synthesize

    with pytest.raises(HRAvatarError, match="--light"):
        synthesize(SynthConfig(out=tmp_path / "a", light="purple"))
    with pytest.raises(HRAvatarError, match="--skin"):
        synthesize(SynthConfig(out=tmp_path / "b", skin=1.5))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cast_transfer_moves_the_light_colour_into_the_albedo():
    light = _tinted_light((0.6, 0.0, -0.8))  # warm light
    logits = torch.logit(torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.2, 0.2]]))
    e0 = lp.mean_front_irradiance(light).detach()
    prod0 = torch.sigmoid(logits) * e0
    c = lp.transfer_light_cast(logits, light, 1.0)
    e1 = lp.mean_front_irradiance(light).detach()
    assert lp.chromaticity_angle_deg(e1, torch.ones(3)) < 0.5  # the light is grey now
    assert float(lp.luminance(e1)) == pytest.approx(float(lp.luminance(e0)), rel=1e-3)
    assert torch.allclose(torch.sigmoid(logits) * e1, prod0, rtol=1e-3)  # the product is kept
    assert c[0] > 1 > c[2]
    half = _tinted_light((0.6, 0.0, -0.8))
    lp.transfer_light_cast(torch.zeros(1, 3), half, 0.5)
    a_half = lp.chromaticity_angle_deg(lp.mean_front_irradiance(half).detach(), torch.ones(3))
    assert 0.5 < a_half < lp.chromaticity_angle_deg(e0, torch.ones(3))


def _warm_specular_light() -> LearnableLighting:
    light = _tinted_light((0.0, 0.0, 0.0))  # grey diffuse light
    with torch.no_grad():
        light.specular_map.copy_(torch.tensor([0.8, 0.1, -0.9]).expand_as(light.specular_map))  # warm highlights
    return light


def test_cast_transfer_to_the_specular_colour_moves_the_highlight_colour_out_of_the_albedo():
    light = _warm_specular_light()
    spec = lp.specular_cast(light).detach()
    assert lp.chromaticity_angle_deg(spec, torch.ones(3)) > 10  # the highlights are warm
    logits = torch.logit(torch.tensor([[0.6, 0.4, 0.3], [0.3, 0.3, 0.3]]))
    e0 = lp.mean_front_irradiance(light).detach()
    prod0 = torch.sigmoid(logits) * e0
    a0 = torch.sigmoid(logits).clone()
    c = lp.transfer_light_cast(logits, light, 1.0, reference=spec)
    e1 = lp.mean_front_irradiance(light).detach()
    assert lp.chromaticity_angle_deg(e1, spec) < 0.5  # the diffuse light has the highlights' colour
    assert float(lp.luminance(e1)) == pytest.approx(float(lp.luminance(e0)), rel=1e-3)
    assert torch.allclose(torch.sigmoid(logits) * e1, prod0, rtol=1e-3)  # the image is kept
    assert c[0] < 1 < c[2]  # the albedo loses the warm cast: bluer than before
    assert float((torch.sigmoid(logits)[:, 2] / torch.sigmoid(logits)[:, 0] - a0[:, 2] / a0[:, 0]).min()) > 0.05
    assert lp.chromaticity_angle_deg(lp.specular_cast(light).detach(), spec) < 1e-3  # highlights untouched
    half = _warm_specular_light()  # reference ** 0.5: half the way in log
    lp.transfer_light_cast(torch.zeros(1, 3), half, 1.0, reference=spec ** 0.5)
    lc = lp.log_chroma(lp.mean_front_irradiance(half).detach())
    assert torch.allclose(lc, 0.5 * lp.log_chroma(spec), atol=1e-2)


def test_skin_locus_passes_through_the_published_patches_and_darker_is_redder():
    patches = lp.srgb_decode(torch.tensor(lp.SKIN_PATCHES_SRGB8) / 255.0)
    for p in patches:
        c = lp.skin_locus_colour(lp.luminance(p))
        assert torch.allclose(c, p, atol=1e-3)
    lums = [0.5, 0.3, 0.15, 0.06]
    cols = [lp.skin_locus_colour(x) for x in lums]
    for x, c in zip(lums, cols, strict=True):
        assert float(lp.luminance(c)) == pytest.approx(x, rel=1e-4)
        assert c[0] > c[1] > c[2]  # red > green > blue
    br = [float(c[2] / c[0]) for c in cols]
    assert br == sorted(br, reverse=True)  # darker skin: less blue relative to red
    x = torch.rand(50, 3)
    assert torch.allclose(lp.srgb_decode(lp.srgb_encode(x)), x, atol=1e-5)


@pytest.mark.parametrize("srgb_frames", [False, True])
def test_skin_locus_gauge_puts_the_face_on_the_locus_and_keeps_the_image(srgb_frames):
    light = _tinted_light((0.0, 0.0, 0.0))
    skin = lp.skin_locus_colour(0.25) * torch.tensor([0.8, 1.0, 1.5])  # skin under a warm light's cast, seen as bluer
    skin = skin / lp.luminance(skin) * 0.25
    other = torch.tensor([0.1, 0.08, 0.05])  # hair
    rows = [skin, skin * 1.1, other]
    if srgb_frames:
        rows = [lp.srgb_encode(r) for r in rows]
    logits = torch.logit(torch.stack(rows))
    face = torch.tensor([1.0, 1.0, 0.0])
    e0 = lp.mean_front_irradiance(light).detach()
    prod0 = torch.sigmoid(logits) * e0
    c = lp.transfer_skin_cast(logits, light, face, 1.0, srgb_frames=srgb_frames)
    e1 = lp.mean_front_irradiance(light).detach()
    assert torch.allclose(torch.sigmoid(logits) * e1, prod0, rtol=1e-3)  # the image is kept
    a = torch.sigmoid(logits)[:2].mean(0)
    a_lin = lp.srgb_decode(a) if srgb_frames else a
    assert lp.chromaticity_angle_deg(a_lin, lp.skin_locus_colour(lp.luminance(a_lin))) < 0.3  # on the locus
    assert c[2] < 1 < c[0]  # the blue cast left the albedo for the light
    assert lp.chromaticity_angle_deg(e1, torch.ones(3)) > 3  # the light took it
    again = lp.transfer_skin_cast(logits, light, face, 1.0, srgb_frames=srgb_frames)  # a projection
    assert torch.allclose(again, torch.ones(3), atol=2e-3)
    none = lp.transfer_skin_cast(logits.clone(), light, torch.zeros(3), 1.0)  # no face points: nothing
    assert torch.equal(none, torch.ones(3))


def test_training_with_the_skin_locus_gauge_puts_the_face_albedo_on_the_locus(tmp_path):
    from helpers.tiny_subject import make_tiny_subject
    from hravatar.avatar import load_avatar
    from hravatar.train import TrainConfig, face_region_grid, train

    subj = make_tiny_subject(tmp_path / "subj", size=32, frames=6, points_per_face=2, subdivisions=1)
    assert LossWeights().skin_locus == 0.5  # on by default, halfway (README, issue 18)
    angle = {}
    for name, f in (("off", 0.0), ("on", 1.0)):
        out = tmp_path / name
        assert train(TrainConfig(subject=subj, output=out, iterations=8, points_per_face=1, encoder="none",
                                 albedo_warmup=0, quiet=True, loss=LossWeights(skin_locus=f))) == 0
        av = load_avatar(out, None)
        g = av.gaussians
        grid, lo, hi = face_region_grid(av.head_model(), "cpu")
        ijk = ((g.params["means"].detach() - lo) / (hi - lo) * grid.shape[0]).long().clamp(0, grid.shape[0] - 1)
        sel = grid[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        assert 0.05 < float(sel.float().mean()) < 0.9  # a face region, not everything or nothing
        w = torch.sigmoid(g.params["opacities"].detach().reshape(-1)) * sel
        a = (torch.sigmoid(g.params["albedo"].detach()) * w[:, None]).sum(0) / w.sum()
        a_lin = lp.srgb_decode(a)  # the tiny subject is no synthetic subject: frames count as sRGB-encoded
        angle[name] = lp.chromaticity_angle_deg(a_lin, lp.skin_locus_colour(lp.luminance(a_lin)))
    assert angle["off"] > 3.0  # the test means something: without the gauge the face is off the locus
    assert angle["on"] < 1.0


def test_colour_move_past_the_sigmoid_ceiling_raises_the_gain_instead_of_flattening_the_light():
    light = _tinted_light((1.0, 1.0, 1.0))  # sigmoid mean about 0.7: red cannot double inside it
    with torch.no_grad():
        light.diffuse_map.add_(0.5 * torch.randn(light.diffuse_map.shape, generator=torch.Generator().manual_seed(0)))
    n = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0], [0.6, 0.0, 0.8], [0.0, 0.6, 0.8]]), dim=-1)
    logits = torch.logit(torch.tensor([[0.6, 0.5, 0.4], [0.3, 0.3, 0.3]]))
    e0 = lp.mean_front_irradiance(light).detach()
    prod0 = torch.sigmoid(logits) * e0
    spread0 = light.irradiance(n).detach().std(0)
    lp.move_colour_to_albedo(logits, light, torch.tensor([0.5, 1.0, 1.0]))
    e1 = lp.mean_front_irradiance(light).detach()
    assert torch.allclose(e1, e0 / torch.tensor([0.5, 1.0, 1.0]), rtol=2e-3)  # red irradiance doubled
    assert torch.allclose(torch.sigmoid(logits) * e1, prod0, rtol=2e-3)
    assert light.diffuse_gain > 1.0  # through the gain ...
    assert bool(torch.isfinite(light.diffuse_map).all()) and float(light.diffuse_map.detach().abs().max()) < 20
    assert float(light.irradiance(n).detach().std(0)[1]) > 0.3 * float(spread0[1])  # ... not a flat light


def test_skin_locus_colour_follows_the_device():
    """The published patches are created on the query's device (a CUDA run once failed here)."""
    from hravatar.light_priors import skin_locus_colour

    assert skin_locus_colour(torch.tensor(0.2, device="meta")).device.type == "meta"


def test_shared_light_colour_switches_off_at_its_fraction_of_the_run():
    from hravatar.train import colour_weights_at

    w = LossWeights(light_cast_specular=1.0, light_specular_colour=10.0, light_specular_until=0.5)
    assert colour_weights_at(w, 499, 1000) is w
    late = colour_weights_at(w, 500, 1000)
    assert late.light_cast_specular == 0.0 and late.light_specular_colour == 0.0
    assert late.light_cast_transfer == w.light_cast_transfer and late.skin_locus == w.skin_locus  # the rest stays
    never = LossWeights(light_cast_specular=1.0, light_specular_colour=10.0, light_specular_until=1.0)  # never switches
    assert colour_weights_at(never, 999, 1000) is never
