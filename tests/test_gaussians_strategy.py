"""Densification / pruning keeps every per-point tensor and the optimizer state consistent."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.synthetic_head import synthetic_head
from hravatar.gaussians import AvatarConfig, DensifyConfig, DensifyStrategy, GaussianHead


def _avatar(**cfg) -> GaussianHead:
    return GaussianHead.from_head_model(synthetic_head(1), AvatarConfig(points_per_face=2, **cfg))


def _train_step(avatar: GaussianHead, opt: torch.optim.Optimizer, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    expr = torch.randn(1, avatar.num_expr, generator=g)
    pose = torch.randn(1, 5, 3, generator=g) * 0.1
    d = avatar.deform(None, expr, pose)
    loss = (
        d.means.square().sum()
        + d.quats.sum()
        + d.scales.sum()
        + d.opacities.sum()
        + avatar.albedo.sum()
        + avatar.roughness.sum()
        + avatar.f0.sum()
        + avatar.colors.sum()
    )
    opt.zero_grad()
    loss.backward()
    opt.step()


def _fake_info(n: int, grads: torch.Tensor, W: int = 64, H: int = 48) -> dict:
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = grads.reshape(1, n, 2).clone()
    radii = torch.full((1, n, 2), 3, dtype=torch.int32)
    return {"means2d": means2d, "radii": radii, "width": W, "height": H, "n_cameras": 1}


def _check_consistent(avatar: GaussianHead, opt: torch.optim.Optimizer) -> None:
    N = avatar.num_points
    ids = {id(p) for p in avatar.params.values()}
    for k, p in avatar.params.items():
        assert p.shape[0] == N, k
    for group in opt.param_groups:
        (p,) = group["params"]
        assert id(p) in ids, group["name"]  # the optimizer holds the avatar's current tensors
        assert p is avatar.params[group["name"]]
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                assert st[key].shape == p.shape, (group["name"], key)


def test_clone_and_split_carry_everything():
    avatar = _avatar()
    opt = avatar.make_optimizer()
    _train_step(avatar, opt)
    N = avatar.num_points
    g = torch.Generator().manual_seed(0)
    # make every per-point attribute unique so children can be traced to parents
    for k in ("shapedirs", "exprdirs", "posedirs", "lbs_weights", "albedo", "roughness", "f0"):
        avatar.params[k].data.copy_(torch.randn(avatar.params[k].shape, generator=g))
    scales = avatar.params["scales"].data
    big = torch.zeros(N, dtype=torch.bool)
    big[::3] = True
    scales[big] = math.log(0.05)  # large: split (> 0.01 * scene_scale)
    scales[~big] = math.log(0.002)  # small: clone
    grads = torch.zeros(N, 2)
    hot = torch.zeros(N, dtype=torch.bool)
    hot[::2] = True
    grads[hot] = 1e-3 / 32  # above threshold after the NDC scaling (x W/2 = 32)
    grads[~hot] = 1e-6
    before = {k: v.detach().clone() for k, v in avatar.params.items()}
    exp_avg_means = opt.state[avatar.params["means"]]["exp_avg"].clone()

    strat = DensifyStrategy(DensifyConfig(start_iter=1, every=1, stop_before_end=0), total_steps=100)
    info = _fake_info(N, grads)
    strat.step_pre_backward(info)
    report = strat.step_post_backward(avatar, opt, step=1, info=info)
    n_clone, n_split = int((hot & ~big).sum()), int((hot & big).sum())
    assert report["cloned"] == n_clone and report["split"] == n_split and report["pruned"] == 0
    assert avatar.num_points == N + n_clone + n_split == report["num_points"]
    _check_consistent(avatar, opt)

    # layout: [kept originals (not split), clones] then [split children x 2]
    rest = ~(hot & big)
    kept_idx = torch.cat([rest.nonzero()[:, 0], (hot & ~big).nonzero()[:, 0]])
    split_idx = (hot & big).nonzero()[:, 0]
    n_kept = len(kept_idx)
    for k, v in avatar.params.items():
        assert torch.equal(v.data[:n_kept], before[k][kept_idx]) or k not in before, k
        if k not in ("means", "scales"):
            for half in range(2):  # split children inherit the parent's bases, weights, materials
                child = v.data[n_kept + half * n_split : n_kept + (half + 1) * n_split]
                assert torch.equal(child, before[k][split_idx]), k
    child_s = avatar.params["scales"].data[n_kept:]
    assert torch.allclose(child_s, before["scales"][split_idx].repeat(2, 1) - math.log(1.6))
    child_m = avatar.params["means"].data[n_kept:].reshape(2, n_split, 3)
    off = (child_m - before["means"][split_idx]).norm(dim=-1)
    assert (off > 0).all() and (off < 4 * 0.05 * math.sqrt(3)).all()
    # optimizer moments: kept rows carried, new rows zero
    st = opt.state[avatar.params["means"]]
    assert torch.equal(st["exp_avg"][: rest.sum()], exp_avg_means[rest])
    assert (st["exp_avg"][rest.sum() :] == 0).all() and (st["exp_avg_sq"][rest.sum() :] == 0).all()
    # statistics were reset to the new size
    assert strat.grad2d.shape == (avatar.num_points,) and (strat.count == 0).all()
    # a training step after densification works and moves the new points
    m0 = avatar.params["means"].detach().clone()
    _train_step(avatar, opt, seed=1)
    assert torch.isfinite(avatar.params["means"]).all()
    assert (avatar.params["means"].detach()[N:] != m0[N:]).any()
    _check_consistent(avatar, opt)


def test_prune_and_opacity_reset():
    avatar = _avatar()
    opt = avatar.make_optimizer()
    _train_step(avatar, opt)
    N = avatar.num_points
    op = avatar.params["opacities"].data
    dead = torch.zeros(N, dtype=torch.bool)
    dead[5:40] = True
    op[dead] = -8.0  # sigmoid ~ 3e-4 < 0.005
    op[~dead] = 2.0
    huge = torch.zeros(N, dtype=torch.bool)
    huge[100:103] = True
    avatar.params["scales"].data[huge] = math.log(0.5)  # > 0.1 * scene_scale
    tag = torch.arange(N, dtype=torch.float32)
    opt.state[avatar.params["albedo"]]["exp_avg"][:, 0] = tag
    cfg = DensifyConfig(start_iter=1, every=1, stop_before_end=0, reset_every=4)
    strat = DensifyStrategy(cfg, total_steps=100)
    info = _fake_info(N, torch.zeros(N, 2))
    # step 3 < reset_every: only transparent points go
    rep = strat.step_post_backward(avatar, opt, step=3, info=info)
    assert rep["pruned"] == int(dead.sum()) and avatar.num_points == N - int(dead.sum())
    _check_consistent(avatar, opt)
    alive = (~dead).nonzero()[:, 0].float()
    assert torch.equal(opt.state[avatar.params["albedo"]]["exp_avg"][:, 0], alive)
    # step 8 > reset_every: too large points go too; 8 % 4 == 0: opacities are reset
    info = _fake_info(avatar.num_points, torch.zeros(avatar.num_points, 2))
    rep = strat.step_post_backward(avatar, opt, step=8, info=info)
    assert rep["pruned"] == 3 and rep["reset"] == 1
    assert (avatar.opacities <= 0.01 + 1e-6).all()
    assert (opt.state[avatar.params["opacities"]]["exp_avg"] == 0).all()
    _check_consistent(avatar, opt)
    _train_step(avatar, opt, seed=2)


def test_schedule():
    s = DensifyStrategy(DensifyConfig(), total_steps=10000)
    steps = [t for t in range(10000) if s.is_refine_step(t)]
    assert steps == list(range(1000, 9001, 500))
    assert [t for t in range(10000) if s.is_reset_step(t)] == [3000, 6000, 9000]
    assert DensifyConfig().grad_threshold == 3e-4 and DensifyConfig().prune_opacity == 0.005


def test_gradient_accumulation_only_counts_visible():
    avatar = _avatar()
    N = avatar.num_points
    strat = DensifyStrategy(DensifyConfig(), total_steps=10000)
    grads = torch.full((N, 2), 1e-4)
    info = _fake_info(N, grads, W=100, H=100)
    info["radii"][0, :10] = 0
    for step in range(3):
        strat.step_post_backward(avatar, None, step, info)
    assert (strat.count[:10] == 0).all() and (strat.count[10:] == 3).all()
    expected = math.hypot(1e-4 * 50, 1e-4 * 50) * 3
    assert torch.allclose(strat.grad2d[10:], torch.full((N - 10,), expected))


def test_triangle_rig_binding_and_frozen_bases_carried():
    for cfg in ({"rig": "triangle"}, {"learn_bases": False, "learn_weights": False}):
        avatar = _avatar(**cfg)
        opt = avatar.make_optimizer()
        _train_step(avatar, opt)
        N = avatar.num_points
        grads = torch.full((N, 2), 1e-2)
        strat = DensifyStrategy(DensifyConfig(start_iter=1, every=1, stop_before_end=0), total_steps=10)
        rep = strat.step_post_backward(avatar, opt, 1, _fake_info(N, grads))
        assert rep["cloned"] + rep["split"] == N
        _check_consistent(avatar, opt)
        assert avatar.num_points == N + rep["cloned"] + rep["split"]
        if "binding" in avatar.params:
            assert avatar.params["binding"].dtype == torch.long and not avatar.params["binding"].requires_grad
            assert int(avatar.params["binding"].max()) < avatar.head_model().faces.shape[0]
        else:
            assert not avatar.params["shapedirs"].requires_grad
        _train_step(avatar, opt, seed=3)


def test_max_points_and_optimizer_dict():
    avatar = _avatar()
    opts = {g["name"]: torch.optim.Adam([g], eps=1e-15) for g in avatar.param_groups()}
    N = avatar.num_points
    cfg = DensifyConfig(start_iter=1, every=1, stop_before_end=0, max_points=N + 10)
    strat = DensifyStrategy(cfg, total_steps=10)
    grads = torch.linspace(0, 1e-2, N)[:, None].expand(N, 2)
    rep = strat.step_post_backward(avatar, opts, 1, _fake_info(N, grads))
    assert avatar.num_points == N + 10 and rep["cloned"] + rep["split"] == 10
    for name, o in opts.items():
        assert o.param_groups[0]["params"][0] is avatar.params[name]


def test_scene_scale_changes_clone_vs_split():
    avatar = _avatar()
    N = avatar.num_points
    grads = torch.full((N, 2), 1e-2)
    s_small = DensifyStrategy(DensifyConfig(start_iter=1, every=1, stop_before_end=0), 10, scene_scale=1e-6)
    rep = s_small.step_post_backward(avatar, None, 1, _fake_info(N, grads))
    assert rep["split"] == N and rep["cloned"] == 0
    avatar = _avatar()
    s_big = DensifyStrategy(DensifyConfig(start_iter=1, every=1, stop_before_end=0), 10, scene_scale=100.0)
    rep = s_big.step_post_backward(avatar, None, 1, _fake_info(N, grads))
    assert rep["cloned"] == N and rep["split"] == 0


@pytest.mark.parametrize("absgrad", [False, True])
def test_with_the_rasterizer(absgrad):
    render = pytest.importorskip("hravatar.render")
    avatar = _avatar(init_opacity=0.8)
    opt = avatar.make_optimizer()
    W = H = 32
    view = render.look_at((0.0, 0.0, 0.6))[None]
    K = render.intrinsics(30.0, W, H)[None]
    strat = DensifyStrategy(
        DensifyConfig(start_iter=1, every=2, stop_before_end=0, grad_threshold=1e-9, absgrad=absgrad),
        total_steps=10,
    )
    for step in range(3):
        d = avatar.deform()
        img, alpha, meta = render.rasterize(
            d.means[0],
            d.quats[0],
            d.scales[0],
            d.opacities[0],
            avatar.albedo,
            view,
            K,
            W,
            H,
            backend="reference",
            absgrad=absgrad,
        )
        strat.step_pre_backward(meta)
        opt.zero_grad()
        (img - 0.3).abs().mean().backward()
        rep = strat.step_post_backward(avatar, opt, step, meta)
        opt.step()
        _check_consistent(avatar, opt)
        if step == 2:
            assert rep["cloned"] + rep["split"] > 0


def test_state_dict_carries_the_split_sampler():
    """A strategy restored from state_dict() splits with the same random offsets as the original."""
    cfg = DensifyConfig(start_iter=1, every=1, stop_before_end=0)
    N = _avatar().num_points
    grads = torch.full((N, 2), 1e-2)
    s = DensifyStrategy(cfg, 10, scene_scale=1e-6)
    assert s.state_dict()["gen"] is None
    s.step_post_backward(_avatar(), None, 1, _fake_info(N, grads))  # first split: the sampler starts
    state = s.state_dict()
    assert state["gen"] is not None
    restored = DensifyStrategy(cfg, 10, scene_scale=1e-6)
    restored.load_state_dict(state)
    a1, a2 = _avatar(), _avatar()
    s.step_post_backward(a1, None, 2, _fake_info(N, grads))
    restored.step_post_backward(a2, None, 2, _fake_info(N, grads))
    assert torch.equal(a1.params["means"].data, a2.params["means"].data)
    fresh = DensifyStrategy(cfg, 10, scene_scale=1e-6)  # without the state: a different draw
    a3 = _avatar()
    fresh.step_post_backward(a3, None, 2, _fake_info(N, grads))
    assert not torch.equal(a1.params["means"].data, a3.params["means"].data)
