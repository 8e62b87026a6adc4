"""Split-sum LUT: independent quadrature, range, cache, lookup."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate

from hravatar.shading.brdf_lut import BrdfLut, brdf_lut_table, compute_brdf_lut, fresnel_ks


def _quadrature(rough: float, nv: float) -> tuple[float, float]:
    """A and B by adaptive 2D quadrature over half vectors (no importance sampling, no torch)."""
    a = rough * rough
    k = a / 2
    v = np.array([math.sqrt(1 - nv * nv), 0.0, nv])

    def integrand(th: float, ph: float, bias: bool) -> float:
        h = np.array([math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)])
        vh, nh = float(v @ h), h[2]
        nl = 2 * vh * nh - nv
        if nl <= 0 or vh <= 0:
            return 0.0
        d = a * a / (math.pi * (nh * nh * (a * a - 1) + 1) ** 2)
        g = nv / (nv * (1 - k) + k) * nl / (nl * (1 - k) + k)
        fc = (1 - vh) ** 5
        # f/F * N.L dL with dL = 4 (V.H) dH:  D G (V.H) / (N.V) dH
        return d * g * (fc if bias else 1 - fc) * vh / nv * math.sin(th)

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bias in (False, True):
            val, _ = integrate.dblquad(
                lambda th, ph, b=bias: integrand(th, ph, b),
                0,
                2 * math.pi,
                0,
                math.pi / 2,
                epsabs=1e-7,
                epsrel=1e-6,
            )
            out.append(val)
    return out[0], out[1]


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    return brdf_lut_table()  # the default 128 x 128 table the shading uses


def test_lut_range_and_shape(table: torch.Tensor) -> None:
    assert table.shape == (128, 128, 2)
    assert torch.isfinite(table).all()
    assert table.min() >= 0 and table.max() <= 1
    assert (table.sum(-1) <= 1 + 1e-4).all()  # A + B = directional albedo of a white GGX surface


@pytest.mark.parametrize("i,j", [(40, 11), (81, 61), (127, 127), (64, 4), (101, 20), (32, 80), (120, 2)])
def test_lut_matches_quadrature(table: torch.Tensor, i: int, j: int) -> None:
    n = table.shape[0]
    rough, nv = (i + 0.5) / n, (j + 0.5) / n
    a, b = _quadrature(rough, nv)
    assert table[i, j, 0].item() == pytest.approx(a, abs=6e-3)
    assert table[i, j, 1].item() == pytest.approx(b, abs=3e-3)


def test_lut_cache_and_lookup(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HRAVATAR_CACHE", str(tmp_path))
    t1 = brdf_lut_table(32, 256)
    files = list((tmp_path / "shading").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"
    t2 = brdf_lut_table(32, 256)  # read back from the cache
    assert torch.equal(t1, t2)
    assert torch.allclose(t1, compute_brdf_lut(32, 256))
    lut = BrdfLut(table=t1)
    # at texel centres the bilinear lookup returns the texel
    r = (torch.tensor([3, 17, 30]) + 0.5) / 32
    v = (torch.tensor([0, 9, 31]) + 0.5) / 32
    assert torch.allclose(lut(r, v), t1[[3, 17, 30], [0, 9, 31]])
    # between centres it interpolates; gradients reach roughness
    rr = torch.tensor([0.5], requires_grad=True)
    out = lut(rr, torch.tensor([0.3]))
    out.sum().backward()
    assert rr.grad is not None and torch.isfinite(rr.grad).all()


def test_fresnel_ks_formula() -> None:
    f0 = torch.tensor([0.04, 0.15, 0.8])
    o = torch.tensor([0.5, 0.9, 0.1])
    c = torch.tensor([1.0, 0.5, 0.01])
    expect = f0 + (torch.maximum(1 - o, f0) - f0) * 2.0 ** ((-5.55473 * c - 6.98316) * c)
    assert torch.allclose(fresnel_ks(f0, o, c), expect)
    # grazing angle: k_s -> max(1 - o, F0); normal incidence: close to F0
    assert fresnel_ks(torch.tensor(0.04), torch.tensor(0.5), torch.tensor(0.0)).item() == pytest.approx(0.5)
    assert fresnel_ks(torch.tensor(0.04), torch.tensor(0.5), torch.tensor(1.0)).item() == pytest.approx(0.04, abs=1e-3)
