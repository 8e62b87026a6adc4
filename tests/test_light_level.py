"""The brightness gauge of issue 18: the learned irradiance's gain and :func:`set_light_level`.

The gauge must leave the image unchanged, reach the level it states (a constant, or the learned
specular light's), let the light's peaks exceed 1, survive saving / loading (and load files from
before the gain), and reach the fast shading kernel and the web bundle; ``hravatar synth
--light-level`` renders a training light at another level.
"""

from __future__ import annotations

import pytest
import torch

from helpers.tiny_subject import make_tiny_subject, tiny_camera
from hravatar import light_priors as lp
from hravatar.shading.lighting import LearnableLighting


def _light(seed: int = 0, spread: float = 1.5) -> LearnableLighting:
    g = torch.Generator().manual_seed(seed)
    light = LearnableLighting(diffuse_res=8, specular_res=8, max_mip_level=2)
    with torch.no_grad():
        light.diffuse_map.copy_(torch.randn(light.diffuse_map.shape, generator=g) * spread - 0.5)
        light.specular_map.copy_(torch.randn(light.specular_map.shape, generator=g) * spread + 0.3)
    return light


def _albedo_logits(n: int = 200, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.logit(0.02 + 0.2 * torch.rand(n, 3, generator=g))


def _normals(n: int = 200, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)


def _level(light: LearnableLighting) -> float:
    return float(lp.luminance(lp.mean_front_irradiance(light).detach()))


@pytest.mark.parametrize("level", [0.4, 0.85, 3.0])
def test_level_gauge_keeps_the_image_and_reaches_the_level(level: float) -> None:
    light, logits, n = _light(), _albedo_logits(), _normals()
    with torch.no_grad():
        diffuse0 = torch.sigmoid(logits) * light.irradiance(n)
        spec0 = light.specular(n, torch.full((n.shape[0], 1), 0.7))
    e0 = _level(light)
    s = lp.set_light_level(logits, light, level)
    assert s == pytest.approx(level / e0, rel=1e-5)
    assert _level(light) == pytest.approx(level, rel=1e-4)
    assert light.diffuse_gain == pytest.approx(s, rel=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(logits) * light.irradiance(n), diffuse0, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(light.specular(n, torch.full((n.shape[0], 1), 0.7)), spec0)  # untouched
    # a second application is a no-op (it is a projection)
    assert lp.set_light_level(logits, light, level) == pytest.approx(1.0, abs=1e-5)


def test_level_gauge_clamps_the_albedo_into_its_range() -> None:
    light, logits = _light(), _albedo_logits()
    lp.set_light_level(logits, light, _level(light) / 20)  # albedo x 20: beyond 1 for most points
    a = torch.sigmoid(logits)
    assert float(a.max()) == pytest.approx(1 - 1e-4, abs=1e-6)
    assert bool(torch.isfinite(logits).all())


def test_level_gauge_lets_peaks_exceed_one() -> None:
    light = _light(spread=3.0)
    assert float(light.irradiance(_normals(500)).detach().max()) < 1.0  # the sigmoid's ceiling
    lp.set_light_level(_albedo_logits(), light, 0.85)
    peak = float(light.irradiance(_normals(500)).detach().max())
    assert peak > 1.2
    assert _level(light) == pytest.approx(0.85, rel=1e-4)


def test_partial_gauge_and_cast_transfer_together() -> None:
    light, logits = _light(), _albedo_logits()
    e0 = _level(light)
    lp.set_light_level(logits, light, 4 * e0, fraction=0.5)  # half the way in log: 2x
    assert _level(light) == pytest.approx(2 * e0, rel=1e-4)
    # the colour-cast projection keeps the level set by the gain (it works in the sigmoid's units)
    lp.transfer_light_cast(logits, light, 1.0)
    assert _level(light) == pytest.approx(2 * e0, rel=2e-3)
    assert lp.chromaticity_angle_deg(lp.mean_front_irradiance(light).detach(), torch.ones(3)) < 0.5


def test_specular_level_gauge() -> None:
    light, logits = _light(), _albedo_logits()
    target = float(lp.specular_light_level(light).detach())
    assert abs(_level(light) - target) > 0.05  # not there by accident
    lp.set_light_level(logits, light, lp.specular_light_level(light))
    assert _level(light) == pytest.approx(target, rel=1e-4)


def test_specular_and_diffuse_levels_agree_for_a_real_environment() -> None:
    """The gauge's premise: for one environment the two levels are (nearly) the same number."""
    from hravatar.synth.envmaps import make_lighting

    for name in ("studio_warm", "cool"):
        _, env = make_lighting(name, 16)
        e = float(lp.luminance(lp.mean_front_irradiance(env)))
        assert float(lp.specular_light_level(env)) == pytest.approx(e, rel=0.05)


def test_gain_is_saved_and_old_files_load_with_gain_one(tmp_path) -> None:
    from safetensors.torch import save_file

    from hravatar.io.state import load_state_file

    light = _light()
    lp.set_light_level(_albedo_logits(), light, 2.0)
    save_file({k: v.contiguous() for k, v in light.state_dict().items()}, str(tmp_path / "new.safetensors"))
    old = {k: v.contiguous() for k, v in light.state_dict().items() if k != "diffuse_log_gain"}
    save_file(old, str(tmp_path / "old.safetensors"))
    a = LearnableLighting(diffuse_res=8, specular_res=8, max_mip_level=2)
    load_state_file(a, tmp_path / "new.safetensors")
    assert a.diffuse_gain == pytest.approx(light.diffuse_gain)
    b = LearnableLighting(diffuse_res=8, specular_res=8, max_mip_level=2)
    load_state_file(b, tmp_path / "old.safetensors")
    assert b.diffuse_gain == 1.0
    c = LearnableLighting(diffuse_res=8, specular_res=8, max_mip_level=2)
    c.load_state_dict(old)  # a training checkpoint from before the gain
    assert c.diffuse_gain == 1.0
    assert "diffuse_log_gain" not in dict(c.named_parameters())  # never optimised


def test_fast_shading_applies_the_gain() -> None:
    from hravatar.shading.fast import fast_shading_available, shade_foreground_fast
    from hravatar.shading.shade import shade

    size = 20
    g = torch.Generator().manual_seed(3)
    alpha = torch.rand(1, size, size, 1, generator=g)
    feats = torch.rand(1, size, size, 9, generator=g)
    feats[..., 5:8] = torch.randn(1, size, size, 3, generator=g)
    feats = feats * alpha
    vm, K = tiny_camera(size)
    light = _light()
    lp.set_light_level(_albedo_logits(), light, 2.5)
    if not fast_shading_available(light):
        pytest.skip("no C++ compiler for the fast kernel")
    gb = {"albedo": feats[..., 0:3], "roughness": feats[..., 3:4], "f0": feats[..., 4:5], "normal": feats[..., 5:8],
          "alpha": alpha}
    with torch.no_grad():
        ref = shade(gb, (vm[None], K[None]), light, premultiplied=True)["image"]
    ref = torch.where(alpha > 0, ref, torch.zeros_like(ref))
    out = shade_foreground_fast(feats, alpha, vm[None], K[None], light)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    assert float(feats[..., :3].max()) < 1.0  # the caller's G-buffer is not scaled in place


def test_web_bundle_carries_the_gain() -> None:
    from hravatar.apps.web_bundle import light_arrays

    light = _light()
    desc0, _ = light_arrays(light)
    assert desc0["activation"] == "sigmoid"
    lp.set_light_level(_albedo_logits(), light, 2.5)
    desc, tex = light_arrays(light)
    assert desc["activation"] == "none"
    assert len(desc["specular"]) == len(desc0["specular"])
    assert len(tex) > 0


def test_training_reaches_the_stated_level(tmp_path) -> None:
    from safetensors.torch import load_file

    from hravatar.losses import LossWeights
    from hravatar.train import TrainConfig, train

    subj = make_tiny_subject(tmp_path / "subj", size=32, frames=6, points_per_face=2, subdivisions=1)
    levels = {}
    assert LossWeights().light_level == pytest.approx(lp.FRONT_IRRADIANCE)  # on by default
    for name, w in (("off", LossWeights(light_level=0.0)), ("level", LossWeights(light_level=2.0)),
                    ("spec", LossWeights(light_level_specular=1.0))):
        out = tmp_path / name
        assert train(TrainConfig(subject=subj, output=out, iterations=8, points_per_face=1, encoder="none",
                                 albedo_warmup=0, quiet=True, loss=w)) == 0
        light = LearnableLighting()
        light.load_state_dict(load_file(str(out / "lighting.safetensors")))
        levels[name] = (_level(light), float(lp.specular_light_level(light).detach()), light.diffuse_gain)
    assert levels["off"][2] == 1.0
    assert levels["level"][0] == pytest.approx(2.0, rel=2e-2)  # the last step's optimiser update moves it a little
    assert levels["spec"][0] == pytest.approx(levels["spec"][1], rel=2e-2)
    assert abs(levels["off"][0] - 2.0) > 0.5


def test_synth_light_level_option(tmp_path) -> None:
    from hravatar.errors import HRAvatarError
    from hravatar.synth.envmaps import FRONT_IRRADIANCE, front_irradiance, make_lighting, split_level, train_env_name
    from hravatar.synth.subject import SynthConfig, synthesize

    assert train_env_name("warm") == "studio_warm"
    assert train_env_name("warm", 0.5) == "studio_warm_level0.5"
    assert split_level("studio_warm_level0.5") == ("studio_warm", 0.5)
    assert split_level("cool") == ("cool", 1.0)
    with pytest.raises(ValueError):
        train_env_name("warm", 0.0)
    env, _ = make_lighting(train_env_name("neutral", 2.0), 16)
    assert front_irradiance(env) == pytest.approx(2 * FRONT_IRRADIANCE, rel=1e-3)
    with pytest.raises(HRAvatarError, match="--light-level"):
        synthesize(SynthConfig(out=tmp_path / "a", light_level=0.0))
    assert not (tmp_path / "a").exists()


def test_matched_exposure_gives_an_environment_the_learned_front_level() -> None:
    """Auto exposure (``hravatar relight``'s default, the evaluation's auto-exposed relighting) uses
    the statistic the gauge fixes: after it, the environment's front level equals the avatar's."""
    from hravatar.synth.envmaps import FRONT_IRRADIANCE, make_lighting

    light = _light()
    lp.set_light_level(_albedo_logits(), light, 0.6)
    _, env = make_lighting("sunset", 16)
    assert float(lp.luminance(lp.mean_front_irradiance(env))) == pytest.approx(FRONT_IRRADIANCE, rel=1e-3)
    env.exposure = 3.0  # ignored: the result replaces it
    stops = lp.matched_exposure(env, light)
    assert env.exposure == 3.0
    env.exposure = stops
    assert float(lp.luminance(lp.mean_front_irradiance(env))) == pytest.approx(0.6, rel=1e-4)
    # the stops follow the reference's level: a light twice as bright needs one stop more
    lp.set_light_level(_albedo_logits(), light, 1.2)
    assert lp.matched_exposure(env, light) == pytest.approx(stops + 1.0, abs=1e-4)


def test_the_gauge_cycle_keeps_the_image_and_a_finite_light_over_a_long_run() -> None:
    """The training's gauge cycle (grey-world cast, skin locus halfway, level, tail renormalisation)
    under a warm light, repeated as 3000 training steps repeat it. Each cycle dims the light a
    little and the level gauge restores it through the gain, so the light sinks into the sigmoid's
    tail (session 7's full-budget runs: pre-activation -15 to -25 after 1500 steps, where the colour
    moves stalled and changed the image; 3000 steps would underflow). The image must be kept, the
    light stay finite and the pre-activation stop at the tail ceiling."""
    light = _light(seed=3, spread=0.5)
    with torch.no_grad():
        light.diffuse_map.add_(torch.tensor([0.6, 0.0, -0.8]))  # a warm light
    logits = torch.logit(torch.tensor([[0.45, 0.30, 0.20]]).repeat(50, 1))  # skin seen under it
    face = torch.ones(50)
    lp.set_light_level(logits, light, 0.85)
    prod0 = torch.sigmoid(logits) * lp.mean_front_irradiance(light).detach()
    shifted = 0.0
    for _ in range(3000):
        lp.transfer_light_cast(logits, light, 1.0)
        lp.transfer_skin_cast(logits, light, face, 0.5)
        lp.set_light_level(logits, light, 0.85)
        shifted += lp.renormalise_light_tail(light)
    assert shifted > 0  # it did sink and was renormalised
    assert float(light.diffuse_map.detach().max()) >= lp.TAIL_CEILING - 1e-4
    assert torch.isfinite(torch.exp(light.diffuse_log_gain)) and float(light.diffuse_log_gain) < 20
    prod = torch.sigmoid(logits) * lp.mean_front_irradiance(light).detach()
    assert torch.allclose(prod, prod0, rtol=0.02)
    assert _level(light) == pytest.approx(0.85, rel=1e-3)


def test_renormalising_the_tail_keeps_the_irradiance() -> None:
    light = _light(seed=5, spread=0.5)
    with torch.no_grad():
        light.diffuse_map.sub_(30.0)
        light.diffuse_log_gain.fill_(30.0)
    n = _normals()
    e0 = light.irradiance(n).detach()
    d = lp.renormalise_light_tail(light)
    assert d > 15 and float(light.diffuse_map.detach().max()) == pytest.approx(lp.TAIL_CEILING, abs=1e-4)
    assert torch.allclose(light.irradiance(n).detach(), e0, rtol=1e-4)
    assert lp.renormalise_light_tail(light) == 0.0  # nothing more to do
    mid = _light(seed=5)
    assert lp.renormalise_light_tail(mid) == 0.0  # a light in the sigmoid's middle is left alone


def test_a_colour_move_deep_in_the_sigmoid_tail_still_keeps_the_image() -> None:
    """A light already deep in the tail is moved exactly, not left where it is while the albedo
    changes (Newton on the mean itself stalled there)."""
    light = _light(seed=4, spread=0.5)
    with torch.no_grad():
        light.diffuse_map.sub_(18.0)  # sigmoid ~1e-8
        light.diffuse_log_gain.fill_(18.0)
    logits = _albedo_logits()
    e0 = lp.mean_front_irradiance(light).detach()
    prod0 = torch.sigmoid(logits) * e0
    c = torch.tensor([1.2, 1.0, 0.7])
    lp.move_colour_to_albedo(logits, light, c)
    e1 = lp.mean_front_irradiance(light).detach()
    assert torch.allclose(e1 * c, e0, rtol=2e-3)
    assert torch.allclose(torch.sigmoid(logits) * e1, prod0, rtol=2e-3)
