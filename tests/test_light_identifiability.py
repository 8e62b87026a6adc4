"""hravatar.synth.identifiability: the oracle bound on what the frames say about the light's colour."""

from __future__ import annotations

import math

import pytest
import torch

from hravatar.light_priors import chromaticity_angle_deg, luminance
from hravatar.synth.identifiability import (
    colour_error_factor,
    colour_residual_rms,
    colour_signal,
    specular_perp_energy,
)


def _series(P: int = 7, T: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    E = 0.2 + torch.rand(P, T, 3, generator=g, dtype=torch.float64)
    S = 0.1 * torch.rand(P, T, 3, generator=g, dtype=torch.float64)
    V = (torch.rand(P, T, generator=g) > 0.2).double()
    return E, S, V


def test_specular_like_diffuse_carries_no_colour_signal():
    """A specular series that is a per-point multiple of the diffuse one is imitated by the albedo."""
    E, _, V = _series()
    a = torch.rand(E.shape[0], 1, 3, dtype=torch.float64)
    assert float(specular_perp_energy(E, a * E, V).abs().max()) < 1e-20


def test_residual_matches_a_brute_force_albedo_fit():
    """R(k) = sum_c (1 - k_c)^2 P_c is what the least-squares per-point albedo leaves (lstsq per point)."""
    E, S, V = _series()
    A = torch.rand(E.shape[0], 3, dtype=torch.float64)
    Y = A[:, None, :] * E + S  # the frames under the true light
    k = torch.tensor([1.08, 1.0, 0.9], dtype=torch.float64)
    total = 0.0
    for p in range(E.shape[0]):
        m = V[p] > 0
        for c in range(3):
            # the light k x truth renders k (A' e + s): fit A' by least squares
            x = (k[c] * E[p, m, c])[:, None]
            b = Y[p, m, c] - k[c] * S[p, m, c]
            sol = torch.linalg.lstsq(x, b[:, None]).solution
            total += float(((x @ sol)[:, 0] - b).pow(2).sum())
    n_obs = float(V.sum())
    want = math.sqrt(total / (3 * n_obs))
    got = colour_residual_rms(k, specular_perp_energy(E, S, V), n_obs)
    assert got == pytest.approx(want, rel=1e-9)
    assert colour_residual_rms(torch.ones(3), specular_perp_energy(E, S, V), n_obs) == 0.0


@pytest.mark.parametrize("theta,direction", [(1.0, 0.0), (3.0, 2.0), (6.0, 4.5)])
def test_colour_error_factor_turns_by_the_angle_and_keeps_luminance(theta, direction):
    ref = torch.tensor([1.1, 0.9, 0.7])
    k = colour_error_factor(ref, theta, direction)
    assert chromaticity_angle_deg(k * ref, ref) == pytest.approx(theta, abs=1e-3)
    assert float(luminance(k * ref)) == pytest.approx(float(luminance(ref)), rel=1e-5)


def test_colour_signal_on_a_small_synthetic_subject(tmp_path):
    """End to end on a small ``hravatar synth`` subject: a larger colour error leaves a larger residual,
    in proportion (the residual is linear in 1 - k for small errors), and the shares are fractions."""
    from hravatar.synth.subject import SynthConfig, synthesize

    sub = synthesize(SynthConfig(out=tmp_path / "s", size=48, frames=12, points_per_face=2, env_height=16,
                                 light="warm", yaw=30, pitch=15))
    r = colour_signal(sub, frame_step=2, directions=12)
    assert r["points"] > 100 and r["frames"] == 6
    assert 0 < r["specular_share_rms"] < 1 and 0 < r["specular_not_diffuse_like_share_rms"] < 1
    lo1, hi1 = r["by_error_deg"]["1"]["residual_rms_min"], r["by_error_deg"]["1"]["residual_rms_max"]
    lo6 = r["by_error_deg"]["6"]["residual_rms_min"]
    assert 0 < lo1 <= hi1 and lo6 == pytest.approx(6 * lo1, rel=0.15)
