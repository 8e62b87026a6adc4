"""The C++ CPU rasterizer against the dense float64 reference: forward, all gradients, edge cases."""

import subprocess
import sys
import textwrap

import pytest
import torch

from hravatar.render import cpu as cpu_backend
from hravatar.render import intrinsics, look_at, orbit_cameras, rasterize
from hravatar.render.projection import project_gaussians
from hravatar.render.reference import rasterize_to_pixels_reference

pytestmark = pytest.mark.skipif(not cpu_backend.available(), reason="no C++ compiler: CPU kernel unavailable")

TOL = 1e-4


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    return ((x - y).norm() / y.norm().clamp(min=1e-30)).item()


def scene(n: int, d: int, seed: int, opacity=(0.3, 1.0), spread=0.12, scale=(0.002, 0.02)):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * spread * 2
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(*torch.tensor(scale).log().tolist(), generator=g))
    opac = torch.empty(n).uniform_(*opacity, generator=g)
    colors = torch.rand(n, d, generator=g)
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors)


def cameras(c: int, w: int, h: int, dist: float = 0.5):
    views = orbit_cameras(c, dist, 15.0, start_azimuth_deg=-20.0, sweep_deg=40.0 if c > 1 else 0.0)
    return views, intrinsics(45.0, w, h).expand(c, 3, 3).clone()


def run(backend, sc, views, Ks, w, h, weights, dtype=torch.float32, **kw):
    params = {k: v.to(dtype).clone().requires_grad_(True) for k, v in sc.items()}
    img, alpha, meta = rasterize(
        **params, viewmats=views.to(dtype), Ks=Ks.to(dtype), width=w, height=h, backend=backend, **kw
    )
    meta["means2d"].retain_grad()
    loss = (img * weights[0].to(dtype)).sum() + (alpha * weights[1].to(dtype)).sum()
    loss.backward()
    grads = {k: v.grad for k, v in params.items()}
    grads["means2d"] = meta["means2d"].grad
    if kw.get("absgrad"):
        grads["absgrad"] = meta["means2d"].absgrad
    return img.detach(), alpha.detach(), grads, meta


def compare(sc, views, Ks, w, h, **kw):
    C = views.shape[0]
    mode = kw.get("render_mode", "RGB")
    d = sc["colors"].shape[-1]
    d_out = {"RGB": d, "D": 1, "ED": 1}.get(mode, d + 1)
    g = torch.Generator().manual_seed(99)
    weights = (torch.randn(C, h, w, d_out, generator=g), torch.randn(C, h, w, 1, generator=g))
    ic, ac, gc, mc = run("cpu", sc, views, Ks, w, h, weights, **kw)
    ir, ar, gr, mr = run("reference", sc, views, Ks, w, h, weights, dtype=torch.float64, **kw)
    assert ic.dtype == torch.float32 and ic.shape == (C, h, w, d_out) and ac.shape == (C, h, w, 1)
    assert torch.equal(mc["radii"], mr["radii"])
    assert rel(ic, ir) < TOL, rel(ic, ir)
    assert rel(ac, ar) < TOL, rel(ac, ar)
    for k in gr:
        if gr[k] is None:  # unused input (colours in depth-only modes)
            assert gc[k] is None or (gc[k] == 0).all(), k
            continue
        assert torch.isfinite(gc[k]).all(), k
        assert gr[k].abs().sum() > 0, f"reference gradient of {k} is zero: test cannot fail"
        assert rel(gc[k], gr[k]) < TOL, (k, rel(gc[k], gr[k]))
    return ic, ac, gc, mc


@pytest.mark.parametrize(
    "d,c,w,h,mode",
    [(1, 1, 40, 33, "RGB"), (3, 2, 57, 38, "RGB"), (10, 2, 48, 31, "RGB+ED"), (16, 3, 35, 50, "RGB+D")],
)
def test_matches_reference(d, c, w, h, mode):
    sc = scene(400, d, seed=d, spread=0.1, scale=(0.003, 0.03))
    views, Ks = cameras(c, w, h)
    bg = torch.rand(c, d, generator=torch.Generator().manual_seed(5))
    ic, ac, _, meta = compare(sc, views, Ks, w, h, render_mode=mode, backgrounds=bg, absgrad=True)
    # the scene really has occlusion: many pixels are nearly opaque
    assert (ac > 0.9).float().mean() > 0.2
    assert meta["visible"].sum() > 100


def test_early_termination_and_depth_modes():
    # a stack of 30 large, nearly opaque Gaussians: compositing must stop after a few layers
    n = 30
    z = torch.linspace(-0.05, 0.05, n)
    means = torch.stack([0.004 * torch.sin(z * 300), 0.004 * torch.cos(z * 200), z], -1)
    sc = dict(
        means=means,
        quats=torch.randn(n, 4, generator=torch.Generator().manual_seed(1)),
        scales=torch.tensor([0.25, 0.18, 0.3]).repeat(n, 1),  # anisotropic: quats matter
        opacities=torch.linspace(0.9, 0.99, n),
        colors=torch.rand(n, 4, generator=torch.Generator().manual_seed(2)),
    )
    views = look_at(torch.tensor([[0.0, 0.0, 0.4]]))
    Ks = intrinsics(40.0, 48, 40)[None]
    for mode in ("RGB", "D", "ED", "RGB+ED"):
        ic, ac, gc, meta = compare(sc, views, Ks, 48, 40, render_mode=mode)
    assert meta["visible"].all()
    # the far half of the stack is never reached at the image centre: its colours get no gradient
    # (Gaussians are sorted by depth: the camera looks down -z, so large z is near)
    assert gc["colors"][: n // 2].abs().sum() == 0
    assert gc["colors"][n // 2 :].abs().sum() > 0
    assert ac.min() > 0.99 and (ac > 0.999).float().mean() > 0.5


def test_edge_cases_behind_offscreen_huge_tiny():
    g = torch.Generator().manual_seed(7)
    sc = scene(200, 3, seed=11)
    extra = scene(6, 3, seed=12)
    extra["means"] = torch.tensor(
        [
            [0.0, 0.0, 0.8],
            [0.0, 0.0, 0.499],
            [3.0, 0.0, 0.0],
            [0.0, -2.5, 0.1],
            [0.01, 0.0, 0.0],
            [0.0, 0.01, 0.02],
        ]
    )  # behind the camera, inside the near plane, off screen (x2), huge, tiny
    extra["scales"] = torch.tensor(
        [[0.01] * 3, [0.01] * 3, [0.05] * 3, [0.05] * 3, [5.0, 4.0, 6.0], [1e-9, 1e-9, 1e-9]]
    )
    extra["opacities"] = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.3, 0.9])
    full = {k: torch.cat([sc[k], extra[k]]) for k in sc}
    views = look_at(torch.tensor([[0.0, 0.0, 0.5]]))
    Ks = intrinsics(45.0, 41, 37)[None]
    _, _, gc, meta = compare(full, views, Ks, 41, 37, backgrounds=torch.rand(1, 3, generator=g))
    vis = meta["visible"][0, 200:]
    assert vis.tolist() == [False, False, False, False, True, True]
    assert (gc["means"][200:204] == 0).all()


def test_n_zero_and_all_culled():
    views, Ks = cameras(2, 20, 16)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    for n, backend in ((0, "cpu"), (0, "reference"), (3, "cpu")):
        sc = scene(n, 3, seed=1)
        if n:
            sc["means"][:, 2] = 5.0  # all behind the cameras
        params = {k: v.clone().requires_grad_(True) for k, v in sc.items()}
        img, alpha, meta = rasterize(
            **params, viewmats=views, Ks=Ks, width=20, height=16, backgrounds=bg, backend=backend
        )
        assert img.shape == (2, 16, 20, 3) and alpha.shape == (2, 16, 20, 1)
        assert torch.allclose(img, bg[:, None, None, :].expand_as(img)) and (alpha == 0).all()
        (img.sum() + alpha.sum()).backward()
        assert all(p.grad is None or (p.grad == 0).all() for p in params.values())


def test_deterministic():
    sc = scene(3000, 11, seed=3, spread=0.08)
    views, Ks = cameras(2, 96, 80)
    weights = (torch.randn(2, 80, 96, 11), torch.randn(2, 80, 96, 1))
    a = run("cpu", sc, views, Ks, 96, 80, weights, absgrad=True)
    b = run("cpu", sc, views, Ks, 96, 80, weights, absgrad=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for k in a[2]:
        assert torch.equal(a[2][k], b[2][k]), k


def test_rasterize_to_pixels_direct_and_chunked_channels():
    # 40 channels: above the kernel's 32, rendered in chunks
    sc = scene(150, 40, seed=4)
    views, Ks = cameras(1, 32, 24)
    p = project_gaussians(sc["means"], sc["quats"], sc["scales"], sc["opacities"], views, Ks, 32, 24)
    col = sc["colors"][None].requires_grad_(True)
    out, alpha = cpu_backend.rasterize_to_pixels_cpu(
        p.means2d, p.conics, col, p.opacities, p.depths, p.radii, 32, 24
    )
    col_r = sc["colors"][None].double().requires_grad_(True)
    ref, ref_a = rasterize_to_pixels_reference(
        p.means2d.double(), p.conics.double(), col_r, p.opacities.double(), p.depths, p.radii, 32, 24
    )
    assert rel(out, ref) < TOL and rel(alpha, ref_a) < TOL
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out * w).sum().backward()
    (ref * w.double()).sum().backward()
    assert rel(col.grad, col_r.grad) < TOL


def test_no_compiler_falls_back_with_one_warning(tmp_path):
    code = textwrap.dedent(
        """
        import warnings, torch
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as w:
            from hravatar.render import rasterize, select_backend
            assert select_backend() == "reference"
            assert select_backend() == "reference"
            K = torch.tensor([[[20.0, 0, 8], [0, 20, 8], [0, 0, 1]]])
            view = torch.eye(4)[None]
            view[0, 2, 3] = 1.0
            q = torch.tensor([[1.0, 0, 0, 0]])
            img, a, meta = rasterize(torch.zeros(1, 3), q, torch.full((1, 3), 0.1), torch.ones(1),
                                     torch.ones(1, 3), view, K, 16, 16)
            assert a.max() > 0.5
            assert meta["backend"] == "reference"
        msgs = [str(x.message) for x in w if "C++" in str(x.message)]
        assert len(msgs) == 1, msgs
        print("ok")
        """
    )
    env = {"HRAVATAR_CXX": "none", "HRAVATAR_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_mixed_devices_are_refused():
    """Tensors on two devices get a ValueError (the C++ kernel would read device memory as host memory)."""
    n = 4
    kw = dict(means=torch.zeros(n, 3, device="meta"), quats=torch.zeros(n, 4), scales=torch.zeros(n, 3),
              opacities=torch.zeros(n), colors=torch.zeros(n, 3), viewmats=torch.eye(4)[None],
              Ks=intrinsics(45.0, 8, 8)[None], width=8, height=8)
    with pytest.raises(ValueError, match="one device"):
        rasterize(**kw)
