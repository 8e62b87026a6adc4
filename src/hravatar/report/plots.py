"""Figures and image helpers for the report: training curves, maps to RGB, tone mapping.

Plots are drawn with matplotlib's Agg backend (no display needed) and returned as PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def linear_to_srgb(x: Any) -> np.ndarray:
    """Linear values -> sRGB-encoded, clipped to [0,1] (``[...]`` float32)."""
    a = np.clip(_np(x), 0.0, 1.0)
    return np.where(a <= 0.0031308, 12.92 * a, 1.055 * np.power(a, 1 / 2.4) - 0.055).astype(np.float32)


def tonemap(hdr: Any, exposure: float = 1.0) -> np.ndarray:
    """HDR linear radiance ``[H,W,3]`` -> displayable sRGB: Reinhard on ``exposure * x``, then sRGB."""
    a = np.maximum(_np(hdr) * exposure, 0.0)
    return linear_to_srgb(a / (1.0 + a))


def normal_to_rgb(normals: Any, mask: Any | None = None) -> np.ndarray:
    """Unit normals ``[H,W,3]`` in [-1,1] -> RGB ``(n + 1) / 2``; background (mask 0) black."""
    n = _np(normals)
    rgb = np.clip((n + 1.0) * 0.5, 0, 1)
    if mask is not None:
        rgb = rgb * _np(mask).reshape(*n.shape[:2], 1)
    return rgb.astype(np.float32)


def scalar_to_rgb(
    values: Any, vmin: float, vmax: float, cmap: str = "viridis", mask: Any | None = None
) -> np.ndarray:
    """A scalar map ``[H,W]`` / ``[H,W,1]`` -> ``[H,W,3]`` RGB through a matplotlib colormap."""
    import matplotlib

    v = _np(values)
    if v.ndim == 3:
        v = v[..., 0]
    t = np.clip((v - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    rgb = matplotlib.colormaps[cmap](t)[..., :3].astype(np.float32)
    if mask is not None:
        rgb = rgb * _np(mask).reshape(*v.shape, 1)
    return rgb


def error_map(a: Any, b: Any, vmax: float = 0.2) -> np.ndarray:
    """Per-pixel mean absolute difference of two images ``[H,W,C]`` as an ``inferno`` heat map."""
    d = np.abs(_np(a) - _np(b)).mean(-1)
    return scalar_to_rgb(d, 0.0, vmax, "inferno")


def hstack(images: Sequence[Any], gap: int = 2, value: float = 1.0) -> np.ndarray:
    """Concatenate same-height RGB images side by side with ``gap`` pixels of ``value``."""
    ims = [_np(i) if _np(i).ndim == 3 else np.repeat(_np(i)[..., None], 3, -1) for i in images]
    h = max(i.shape[0] for i in ims)
    out = []
    for k, im in enumerate(ims):
        if im.shape[0] != h:
            pad = np.full((h - im.shape[0], im.shape[1], im.shape[2]), value, np.float32)
            im = np.concatenate([im, pad], 0)
        out.append(im[..., :3])
        if k + 1 < len(ims) and gap:
            out.append(np.full((h, gap, 3), value, np.float32))
    return np.concatenate(out, 1)


def vstack(images: Sequence[Any], gap: int = 2, value: float = 1.0) -> np.ndarray:
    """Stack RGB images vertically (widths padded to the widest)."""
    ims = [_np(i)[..., :3] for i in images]
    w = max(i.shape[1] for i in ims)
    out = []
    for k, im in enumerate(ims):
        if im.shape[1] != w:
            im = np.concatenate([im, np.full((im.shape[0], w - im.shape[1], 3), value, np.float32)], 1)
        out.append(im)
        if k + 1 < len(ims) and gap:
            out.append(np.full((gap, w, 3), value, np.float32))
    return np.concatenate(out, 0)


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def training_curves(
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[float]],
    x_key: str = "step",
    max_panels: int = 8,
) -> bytes:
    """Plot every numeric series of a training log as a grid of small panels (PNG bytes).

    Args:
        history: either records ``[{"step": 10, "loss": 0.1, "psnr": 20.0}, ...]`` or columns
            ``{"step": [...], "loss": [...]}``.
        x_key: the x axis column (record index when absent).
        max_panels: at most this many series (in order of first appearance).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if isinstance(history, Mapping):
        cols = {k: list(v) for k, v in history.items()}
    else:
        keys = list(dict.fromkeys(k for r in history for k in r))
        cols = {k: [r.get(k, float("nan")) for r in history] for k in keys}
    n = max((len(v) for v in cols.values()), default=0)
    xs = np.asarray(cols.get(x_key, list(range(n))), dtype=np.float64)
    series = []
    for k, v in cols.items():
        if k == x_key:
            continue
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if arr.ndim == 1 and arr.size == xs.size and np.isfinite(arr).any():
            series.append((k, arr))
    series = series[:max_panels]
    if not series:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no training log", ha="center", va="center")
        ax.axis("off")
        return _fig_png(fig)
    ncol = min(4, len(series))
    nrow = math.ceil(len(series) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.6 * nrow), squeeze=False)
    for ax, (k, arr) in zip(axes.flat, series, strict=False):
        ok = np.isfinite(arr)
        ax.plot(xs[ok], arr[ok], lw=1.0, color="#1f77b4")
        if ok.sum() > 20 and "psnr" not in k.lower():
            w = max(ok.sum() // 20, 2)
            sm = np.convolve(arr[ok], np.ones(w) / w, mode="valid")
            ax.plot(xs[ok][w - 1 :], sm, lw=1.6, color="#d62728")
        if "loss" in k.lower() and (arr[ok] > 0).all():
            ax.set_yscale("log")
        ax.set_title(k, fontsize=10)
        ax.set_xlabel(x_key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series) :]:
        ax.axis("off")
    fig.tight_layout()
    return _fig_png(fig)


def curves_plot(
    t: Any,
    curves: Mapping[str, Any],
    title: str = "",
    ylabel: str = "",
    xlabel: str = "frame",
    vlines: Sequence[float] = (),
) -> bytes:
    """Several 1-D curves over a shared x axis in one panel (e.g. animation tracks). PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2.4))
    x = _np(t)
    for name, y in curves.items():
        ax.plot(x, _np(y), lw=1.0, label=name)
    for v in vlines:
        ax.axvline(v, color="k", ls="--", lw=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=min(len(curves), 6), loc="upper right")
    fig.tight_layout()
    return _fig_png(fig)


def bar_plot(values: Mapping[str, float], title: str = "", unit: str = "s") -> bytes:
    """A horizontal bar chart (e.g. stage timings). PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(values)
    vals = [float(values[k]) for k in names]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 0.8))
    ax.barh(names, vals, color="#4c72b0")
    ax.invert_yaxis()
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.1f} {unit}", va="center", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.set_xlim(0, max(vals + [1e-9]) * 1.25)
    fig.tight_layout()
    return _fig_png(fig)
