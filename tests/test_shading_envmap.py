"""Environment-map tools validated against analytic results and brute-force Monte-Carlo."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hravatar.geometry import ray_directions, rotation_y
from hravatar.shading.cubemap import (
    equirect_directions,
    equirect_solid_angles,
    texel_directions,
    texel_solid_angles,
)
from hravatar.shading.envmap_tools import (
    apply_exposure,
    background_image,
    ggx_d,
    irradiance_cube,
    load_prefiltered,
    prefilter_envmap,
    prefilter_specular,
    read_envmap,
    rotate_equirect,
    save_prefiltered,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


class LobeEnv:
    """A random smooth environment: a constant plus a few coloured von Mises-Fisher lobes."""

    def __init__(self, seed: int, n: int = 4):
        g = torch.Generator().manual_seed(seed)
        self.mu = F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
        self.kappa = 4 + 8 * torch.rand(n, generator=g, dtype=torch.float64)
        self.amp = 0.5 + 3 * torch.rand(n, 3, generator=g, dtype=torch.float64)
        self.base = 0.2 + 0.3 * torch.rand(3, generator=g, dtype=torch.float64)

    def __call__(self, d: torch.Tensor) -> torch.Tensor:
        w = torch.exp(self.kappa * (d.double() @ self.mu.T - 1))  # [..., n]
        return self.base + w @ self.amp

    def equirect(self, h: int = 64) -> torch.Tensor:
        return self(equirect_directions(h, 2 * h, dtype=torch.float64)).float()


def _uniform_dirs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)


def _mc(n_dirs: torch.Tensor, env: LobeEnv, weight, samples: int = 300_000, seed: int = 7) -> torch.Tensor:
    """Brute-force MC: sum f(l) w(n, l) / sum w(n, l) over uniform sphere samples (chunked)."""
    num = torch.zeros(n_dirs.shape[0], 3, dtype=torch.float64)
    den = torch.zeros(n_dirs.shape[0], 1, dtype=torch.float64)
    for k in range(0, samples, 50_000):
        ls = _uniform_dirs(50_000, seed + k)
        f = env(ls)  # [S, 3]
        w = weight(n_dirs.double(), ls)  # [N, S]
        num += w @ f
        den += w.sum(1, keepdim=True)
    return num / den


def test_irradiance_of_linear_environment_is_analytic() -> None:
    # L(d) = a + b.d  ->  I_irr(n) = a + 2/3 b.n  (with the 1/pi convention)
    a, b = torch.tensor([1.0, 0.8, 0.6]), torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.4, 0.0], [-0.1, 0.0, 0.5]])
    eq = a + equirect_directions(128, 256) @ b
    irr = irradiance_cube(eq, 8)
    n = texel_directions(8)
    expect = a + (2.0 / 3.0) * n @ b
    assert (irr - expect).abs().max().item() < 5e-3


def test_irradiance_matches_monte_carlo() -> None:
    env = LobeEnv(0)
    irr = irradiance_cube(env.equirect(64), 8)
    n = texel_directions(8).reshape(-1, 3)
    # absolute estimator (also checks the 1/pi normalisation): E = 4 pi / M * sum f max(n.l, 0) / pi
    m = 400_000
    acc = torch.zeros(n.shape[0], 3, dtype=torch.float64)
    for k in range(0, m, 50_000):
        ls = _uniform_dirs(50_000, 100 + k)
        acc += (n.double() @ ls.T).clamp_min(0) @ env(ls)
    ref = acc * 4 / m
    rel = (irr.reshape(-1, 3).double() - ref).abs() / ref
    assert rel.max().item() < 0.02 and rel.mean().item() < 0.005


@pytest.mark.parametrize("rough", [0.5, 1.0])
def test_prefiltered_matches_monte_carlo(rough: float) -> None:
    env = LobeEnv(1)
    pre = prefilter_specular(env.equirect(64), rough, 4, samples=2048)
    n = texel_directions(4).reshape(-1, 3)
    alpha = rough**2

    def ggx_weight(nd: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
        nl = nd @ ls.T  # [N, S]; N = V, so H = normalize(N + L) and N.H = sqrt((1 + N.L) / 2)
        nh = torch.sqrt(((1 + nl) / 2).clamp_min(0))
        return ggx_d(nh, alpha) * nl.clamp_min(0)

    ref = _mc(n, env, ggx_weight)
    rel = (pre.reshape(-1, 3).double() - ref).abs() / ref
    assert rel.max().item() < 0.03 and rel.mean().item() < 0.01


def test_constant_environment_stays_constant() -> None:
    eq = torch.full((32, 64, 3), 1.7)
    env = prefilter_envmap(eq, base_res=16, levels=4, irradiance_res=8, samples=64)
    for s in env.specular:
        assert torch.allclose(s, torch.full_like(s, 1.7), rtol=1e-4)
    assert torch.allclose(env.irradiance, torch.full_like(env.irradiance, 1.7), rtol=1e-4)


def test_rotation_exposure_and_background() -> None:
    env = LobeEnv(2)
    eq = env.equirect(64)
    rot = rotate_equirect(eq, 90.0)
    # L'(d) = L(R(-90) d): a lobe at -z moves to where R(90) sends -z, i.e. -x
    d = F.normalize(torch.randn(500, 3, generator=torch.Generator().manual_seed(3)), dim=-1)
    from hravatar.shading.cubemap import sample_equirect

    lhs = sample_equirect(rot, d)
    rhs = sample_equirect(eq, d @ rotation_y(90.0))
    assert (lhs - rhs).abs().max().item() < 1e-4
    assert torch.allclose(apply_exposure(eq, 2.0), eq * 4)
    # a camera at the origin looking down -z sees the centre of the panorama in its centre pixel
    vm = torch.eye(4).unsqueeze(0)
    vm[0, :3, :3] = torch.tensor([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])  # OpenCV camera facing -z
    K = torch.tensor([[[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]]])
    rays = ray_directions(vm, K, 64, 64)
    assert torch.allclose(rays[0, 32, 32], torch.tensor([0.0, 0.0, -1.0]), atol=0.02)
    assert rays[0, 0, 32, 1] > 0  # the top row looks up
    bg = background_image(eq, vm, K, 64, 64)
    assert torch.allclose(bg[0, 32, 32], sample_equirect(eq, rays[0, 32, 32]), atol=1e-5)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    env = prefilter_envmap(LobeEnv(3).equirect(32), base_res=16, levels=3, irradiance_res=8, samples=32)
    path = tmp_path / "env.safetensors"
    save_prefiltered(env, path)
    back = load_prefiltered(path)
    assert torch.equal(back.irradiance, env.irradiance)
    assert all(torch.equal(a, b) for a, b in zip(back.specular, env.specular, strict=True))
    assert torch.equal(back.roughness, env.roughness) and back.equirect is not None
    assert back.meta["levels"] == "3"


def test_cli_prefilter(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    from hravatar.cli import run

    eq = LobeEnv(4).equirect(32).numpy()
    src = tmp_path / "small.hdr"
    assert cv2.imwrite(str(src), np.ascontiguousarray(eq[..., ::-1]))
    back = read_envmap(src)
    assert back.shape == (32, 64, 3) and torch.allclose(back, torch.from_numpy(eq), rtol=0.02)
    out = tmp_path / "small.safetensors"
    assert run(["envmap", "prefilter", str(src), str(out), "--base-res", "16", "--levels", "3", "--samples", "32"]) == 0
    env = load_prefiltered(out)
    assert len(env.specular) == 3 and env.irradiance.shape == (6, 32, 32, 3)
    assert run(["envmap", "prefilter", str(tmp_path / "missing.hdr"), str(out)]) == 2


@pytest.mark.skipif(not (SHARED / "data" / "envmaps").is_dir(), reason="shared env maps absent")
def test_real_map_prefilter_is_fast_and_sane() -> None:
    import time

    eq = read_envmap(SHARED / "data" / "envmaps" / "studio_small_03_1k.hdr")
    t0 = time.perf_counter()
    env = prefilter_envmap(eq, base_res=64, levels=4)
    dt = time.perf_counter() - t0
    assert dt < 60  # about a second on an idle core; generous for shared CI machines
    # energy: every level and the irradiance keep the map's mean radiance (solid-angle weighted)
    om = equirect_solid_angles(*eq.shape[:2])
    mean = float((eq.mean(-1) * om).sum() / (4 * math.pi))
    for s in [*env.specular, env.irradiance]:
        sa = texel_solid_angles(s.shape[1])
        assert float((s.mean(-1) * sa).sum() / (4 * math.pi)) == pytest.approx(mean, rel=0.025)
