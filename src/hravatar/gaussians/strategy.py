"""Adaptive density control for the avatar: clone, split, prune, opacity reset (3DGS schedule).

Written for this project (the interface follows gsplat's ``DefaultStrategy``): the trainer calls
:meth:`DensifyStrategy.step_pre_backward` after rendering (it keeps the gradient of the 2D means)
and :meth:`DensifyStrategy.step_post_backward` after ``loss.backward()`` (it accumulates the
screen-space gradients and, on schedule, densifies / prunes / resets opacities). Every per-point
tensor in the avatar's ``params`` (means, rotations, scales, opacities, materials, bases, skinning
weights, triangle binding, ...) is edited the same way, and so is every optimizer state tensor
whose first dimension is N (Adam's ``exp_avg`` / ``exp_avg_sq``): new points start with zero
moments, removed points lose theirs. Split children copy all parent attributes (bases and
skinning weights included) except positions (sampled from the parent Gaussian) and scales
(parent / 1.6).

Schedule (the paper's defaults): refine every 500 steps from step 1000 until 500 steps before the
end; gradient threshold 3e-4 on the mean NDC-space 2D gradient; prune opacity < 0.005; opacity
reset to 0.01 every 3000 steps; points larger than ``prune_scale3d * scene_scale`` are pruned after
the first reset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hravatar.geometry.rotations import quat_to_matrix


@dataclass
class DensifyConfig:
    """Densification / pruning schedule and thresholds (defaults: the paper / 3DGS)."""

    grad_threshold: float = 3e-4
    """mean 2D-mean gradient (NDC units) above which a point is cloned or split"""
    start_iter: int = 1000
    """first step at which points are refined"""
    every: int = 500
    """refine every this many steps"""
    stop_before_end: int = 500
    """stop refining this many steps before the last step"""
    reset_every: int = 3000
    """reset opacities every this many steps (0: never)"""
    reset_opacity: float = 0.01
    """opacity value after a reset (an upper bound: lower opacities are kept)"""
    prune_opacity: float = 0.005
    """prune points whose opacity falls below this"""
    grow_scale3d: float = 0.01
    """clone points whose largest scale <= this x scene_scale, split the larger ones"""
    prune_scale3d: float = 0.1
    """prune points whose largest scale > this x scene_scale (after the first opacity reset)"""
    prune_scale2d: float = 0.0
    """prune points whose screen radius > this x max(width, height) (0: off)"""
    split_factor: float = 1.6
    """split children have the parent's scales divided by this"""
    max_points: int = 0
    """never grow beyond this many points (0: no limit)"""
    absgrad: bool = False
    """use the absolute 2D gradient when the rasterizer provides ``means2d.absgrad``"""
    seed: int = 0
    """seed of the split sampling"""


OptimizerLike = (
    torch.optim.Optimizer | dict[str, torch.optim.Optimizer] | Iterable[torch.optim.Optimizer] | None
)


def _optimizers(opt: OptimizerLike) -> list[torch.optim.Optimizer]:
    if opt is None:
        return []
    if isinstance(opt, torch.optim.Optimizer):
        return [opt]
    if isinstance(opt, dict):
        return list(opt.values())
    return list(opt)


def edit_points(
    params: nn.ParameterDict,
    optimizers: OptimizerLike,
    param_fn: Callable[[str, Tensor], Tensor],
    state_fn: Callable[[str, Tensor], Tensor],
    names: Iterable[str] | None = None,
) -> None:
    """Replace per-point parameters and their optimizer state consistently (in place).

    Args:
        params: the ``ParameterDict`` whose entries all have first dimension N.
        optimizers: a ``torch.optim.Optimizer``, a dict or list of them, or ``None``.
        param_fn: ``(name, old_data) -> new_data`` for each edited parameter.
        state_fn: ``(state_key, old_state) -> new_state`` for optimizer state tensors whose first
            dimension equals the parameter's (other state, e.g. Adam's ``step``, is kept).
        names: parameters to edit (default: all).
    """
    opts = _optimizers(optimizers)
    for name in list(params.keys()) if names is None else list(names):
        old = params[name]
        new = nn.Parameter(param_fn(name, old.data), requires_grad=old.requires_grad)
        for opt in opts:
            for group in opt.param_groups:
                for i, p in enumerate(group["params"]):
                    if p is not old:
                        continue
                    st = opt.state.pop(old, None)
                    group["params"][i] = new
                    if st is not None:
                        opt.state[new] = {
                            k: state_fn(k, v)
                            if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == old.shape[0]
                            else v
                            for k, v in st.items()
                        }
        params[name] = new


def _params_of(model: Any) -> nn.ParameterDict:
    return model.params if hasattr(model, "params") and isinstance(model.params, nn.ParameterDict) else model


class DensifyStrategy:
    """Clone / split / prune / opacity-reset for a :class:`GaussianHead` (or a ``ParameterDict``).

    Usage::

        strategy = DensifyStrategy(DensifyConfig(), total_steps=T, scene_scale=s)
        for step in range(T):
            colors, alphas, meta = rasterize(...)
            strategy.step_pre_backward(meta)
            loss.backward()
            report = strategy.step_post_backward(avatar, optimizer, step, meta, width=W, height=H)
            optimizer.step(); optimizer.zero_grad()

    ``meta`` must hold ``means2d`` (``[C,N,2]`` or ``[N,2]``, the tensor the rasterizer used, so it
    gets a gradient) and ``radii`` (``[C,N]`` or ``[C,N,2]``; > 0 where visible).
    """

    def __init__(
        self, config: DensifyConfig | None = None, total_steps: int = 30000, scene_scale: float = 1.0
    ):
        """``total_steps``: length of training (refinement stops ``stop_before_end`` before it);
        ``scene_scale``: metres that the 3D size thresholds are relative to (3DGS: camera extent)."""
        self.cfg = config or DensifyConfig()
        self.total_steps = int(total_steps)
        self.scene_scale = float(scene_scale)
        self.grad2d: Tensor | None = None
        self.count: Tensor | None = None
        self.max_radii: Tensor | None = None
        self._gen: torch.Generator | None = None

    # ---- schedule ----------------------------------------------------------------------------
    @property
    def stop_iter(self) -> int:
        return self.total_steps - self.cfg.stop_before_end

    def is_refine_step(self, step: int) -> bool:
        c = self.cfg
        return c.start_iter <= step < self.stop_iter and step % c.every == 0 and step > 0

    def is_reset_step(self, step: int) -> bool:
        c = self.cfg
        return c.reset_every > 0 and step > 0 and step % c.reset_every == 0 and step < self.stop_iter

    # ---- hooks -------------------------------------------------------------------------------
    def step_pre_backward(self, info: dict[str, Any]) -> None:
        """Keep the gradient of ``info["means2d"]`` (call after rendering, before backward)."""
        m = info["means2d"]
        if m.requires_grad:
            m.retain_grad()

    def step_post_backward(
        self,
        model: Any,
        optimizers: OptimizerLike,
        step: int,
        info: dict[str, Any],
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, int]:
        """Accumulate 2D gradients; refine / reset on schedule.

        Args:
            model: a :class:`GaussianHead` (its ``params`` are edited) or a ``ParameterDict``.
            optimizers: the optimizer(s) holding those parameters.
            step: current step (0-based).
            info: the rasterizer's meta (``means2d``, ``radii``; ``width``/``height`` if present).
            width, height: image size in pixels (default from ``info``).
        Returns:
            Counts of this step: ``{"cloned", "split", "pruned", "reset", "num_points"}``.
        """
        params = _params_of(model)
        report = {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}
        if step < self.stop_iter:
            self._accumulate(params, info, width, height)
        if self.is_refine_step(step):
            report["cloned"], report["split"] = self.grow(model, optimizers)
            report["pruned"] = self.prune(model, optimizers, step)
            self._reset_stats(params)
        if self.is_reset_step(step):
            self.reset_opacity(params, optimizers)
            report["reset"] = 1
        report["num_points"] = int(params["means"].shape[0])
        return report

    # ---- statistics --------------------------------------------------------------------------
    def _reset_stats(self, params: nn.ParameterDict) -> None:
        n, dev = params["means"].shape[0], params["means"].device
        self.grad2d = torch.zeros(n, device=dev)
        self.count = torch.zeros(n, device=dev)
        self.max_radii = torch.zeros(n, device=dev)

    def _accumulate(
        self, params: nn.ParameterDict, info: dict[str, Any], width: int | None, height: int | None
    ) -> None:
        m = info["means2d"]
        grad = getattr(m, "absgrad", None) if self.cfg.absgrad else None
        grad = m.grad if grad is None else grad
        if grad is None:
            return
        n = params["means"].shape[0]
        if self.grad2d is None or self.grad2d.shape[0] != n:
            self._reset_stats(params)
        W = int(width or info.get("width"))
        H = int(height or info.get("height"))
        grad = grad.detach().reshape(-1, n, 2).clone()  # [C,N,2]
        C = grad.shape[0]
        grad[..., 0] *= W / 2.0 * C
        grad[..., 1] *= H / 2.0 * C
        radii = info["radii"].detach().reshape(C, n, -1).float()
        vis = (radii > 0).all(-1)  # [C,N]
        norms = grad.norm(dim=-1) * vis
        self.grad2d += norms.sum(0)
        self.count += vis.sum(0).float()
        r = radii.max(-1).values.max(0).values / float(max(W, H))
        self.max_radii = torch.maximum(self.max_radii, r)

    # ---- operations --------------------------------------------------------------------------
    def _world_scales(self, model: Any) -> Tensor:
        if hasattr(model, "canonical_world_scales"):
            return model.canonical_world_scales()
        return _params_of(model)["scales"].detach().exp()

    def grow(self, model: Any, optimizers: OptimizerLike) -> tuple[int, int]:
        """Clone small and split large points whose mean 2D gradient exceeds the threshold.

        Returns:
            ``(n_cloned, n_split)``.
        """
        params = _params_of(model)
        if self.grad2d is None:
            return 0, 0
        c = self.cfg
        avg = self.grad2d / self.count.clamp_min(1)
        high = avg > c.grad_threshold
        small = self._world_scales(model).max(-1).values <= c.grow_scale3d * self.scene_scale
        clone = high & small
        split = high & ~small
        if c.max_points > 0:
            room = max(c.max_points - params["means"].shape[0], 0)
            clone = _limit(clone, avg, room)
            split = _limit(split, avg, max(room - int(clone.sum()), 0))
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone:
            self.duplicate(params, optimizers, clone)
            split = torch.cat([split, torch.zeros(n_clone, dtype=torch.bool, device=split.device)])
        if n_split:
            self.split(params, optimizers, split)
        return n_clone, n_split

    def duplicate(self, params: nn.ParameterDict, optimizers: OptimizerLike, mask: Tensor) -> None:
        """Append copies of the points in ``mask [N]`` (new optimizer moments are zero)."""
        idx = mask.nonzero()[:, 0]
        edit_points(
            params,
            optimizers,
            lambda _, p: torch.cat([p, p[idx.to(p.device)]]),
            lambda _, v: torch.cat([v, torch.zeros_like(v[: len(idx)])]),
        )
        self._extend_stats(len(idx))

    def split(self, params: nn.ParameterDict, optimizers: OptimizerLike, mask: Tensor) -> None:
        """Replace each point in ``mask [N]`` by two children sampled from it (see module docstring)."""
        sel = mask.nonzero()[:, 0]
        rest = (~mask).nonzero()[:, 0]
        M = len(sel)
        means, quats, log_s = params["means"].data, params["quats"].data, params["scales"].data
        if self._gen is None:
            self._gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        noise = torch.randn(2, M, 3, generator=self._gen).to(means)
        R = quat_to_matrix(quats[sel])  # [M,3,3]
        s = log_s[sel].exp()
        offsets = torch.einsum("mij,kmj->kmi", R, s[None] * noise)  # [2,M,3]
        new_means = (means[sel][None] + offsets).reshape(2 * M, 3)
        new_log_s = (log_s[sel] - math.log(self.cfg.split_factor)).repeat(2, 1)

        def pfn(name: str, p: Tensor) -> Tensor:
            if name == "means":
                child = new_means
            elif name == "scales":
                child = new_log_s
            else:
                child = p[sel].repeat(2, *([1] * (p.dim() - 1)))
            return torch.cat([p[rest], child])

        edit_points(
            params,
            optimizers,
            pfn,
            lambda _, v: torch.cat([v[rest], torch.zeros_like(v[:1]).expand(2 * M, *v.shape[1:])]),
        )
        if self.grad2d is not None:
            z = torch.zeros(2 * M, device=self.grad2d.device)
            self.grad2d = torch.cat([self.grad2d[rest], z])
            self.count = torch.cat([self.count[rest], z])
            self.max_radii = torch.cat([self.max_radii[rest], z])

    def prune(self, model: Any, optimizers: OptimizerLike, step: int) -> int:
        """Remove transparent points, and (after the first reset) too large ones. Returns the count."""
        params = _params_of(model)
        c = self.cfg
        bad = torch.sigmoid(params["opacities"].detach()) < c.prune_opacity
        if c.reset_every > 0 and step > c.reset_every:
            bad |= self._world_scales(model).max(-1).values > c.prune_scale3d * self.scene_scale
            if c.prune_scale2d > 0 and self.max_radii is not None:
                bad |= self.max_radii > c.prune_scale2d
        n = int(bad.sum())
        if n:
            self.remove(params, optimizers, bad)
        return n

    def remove(self, params: nn.ParameterDict, optimizers: OptimizerLike, mask: Tensor) -> None:
        """Delete the points in ``mask [N]`` and their optimizer state."""
        keep = (~mask).nonzero()[:, 0]
        edit_points(params, optimizers, lambda _, p: p[keep.to(p.device)], lambda _, v: v[keep.to(v.device)])
        if self.grad2d is not None:
            self.grad2d, self.count, self.max_radii = (
                self.grad2d[keep],
                self.count[keep],
                self.max_radii[keep],
            )

    def reset_opacity(self, params: nn.ParameterDict, optimizers: OptimizerLike) -> None:
        """Clamp opacities to at most ``reset_opacity`` and zero their optimizer moments."""
        v = self.cfg.reset_opacity
        cap = math.log(v / (1 - v))
        edit_points(
            params,
            optimizers,
            lambda _, p: p.clamp_max(cap),
            lambda _, s: torch.zeros_like(s),
            names=["opacities"],
        )

    def _extend_stats(self, k: int) -> None:
        if self.grad2d is not None:
            z = torch.zeros(k, device=self.grad2d.device)
            self.grad2d = torch.cat([self.grad2d, z])
            self.count = torch.cat([self.count, z])
            self.max_radii = torch.cat([self.max_radii, z])

    # ---- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (for checkpoints): the accumulated statistics
        (tensors or ``None``) and ``gen``, the split sampler's generator state (a uint8 CPU tensor,
        ``None`` until the first split)."""
        return {"grad2d": self.grad2d, "count": self.count, "max_radii": self.max_radii,
                "gen": None if self._gen is None else self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (statistics tensors may be on any device; ``gen`` is
        optional, for states written before it was saved)."""
        self.grad2d, self.count, self.max_radii = (
            state.get("grad2d"),
            state.get("count"),
            state.get("max_radii"),
        )
        gen = state.get("gen")
        if gen is None:
            self._gen = None
        else:
            self._gen = torch.Generator(device="cpu")
            self._gen.set_state(gen.cpu() if torch.is_tensor(gen) else torch.as_tensor(gen, dtype=torch.uint8))


def _limit(mask: Tensor, score: Tensor, room: int) -> Tensor:
    """Keep at most ``room`` entries of ``mask``: those with the largest ``score``."""
    n = int(mask.sum())
    if n <= room:
        return mask
    out = torch.zeros_like(mask)
    if room > 0:
        idx = mask.nonzero()[:, 0]
        top = score[idx].topk(room).indices
        out[idx[top]] = True
    return out
