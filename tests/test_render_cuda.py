"""The CUDA backend (gsplat) against the dense reference; skipped without a GPU and gsplat."""

import importlib.util

import pytest
import torch

from hravatar.render import intrinsics, orbit_cameras, rasterize

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("gsplat") is None,
    reason="needs a CUDA GPU and gsplat",
)


def test_cuda_matches_reference():
    g = torch.Generator().manual_seed(0)
    n, d, w, h = 300, 10, 64, 48
    sc = dict(
        means=(torch.rand(n, 3, generator=g) - 0.5) * 0.2,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.rand(n, 3, generator=g) * 0.02 + 0.003,
        opacities=torch.rand(n, generator=g) * 0.7 + 0.3,
        colors=torch.rand(n, d, generator=g),
    )
    views = orbit_cameras(2, 0.5, 10.0, sweep_deg=30.0)
    Ks = intrinsics(45.0, w, h).expand(2, 3, 3).contiguous()
    bg = torch.rand(2, d, generator=g)
    weights = torch.randn(2, h, w, d + 1, generator=g)
    out = {}
    for backend, dev in (("cuda", "cuda"), ("reference", "cpu")):
        p = {k: v.to(dev).requires_grad_(True) for k, v in sc.items()}
        img, alpha, meta = rasterize(
            **p,
            viewmats=views.to(dev),
            Ks=Ks.to(dev),
            width=w,
            height=h,
            backgrounds=bg.to(dev),
            render_mode="RGB+ED",
            backend=backend,
        )
        assert meta["radii"].shape == (2, n, 2) and meta["means2d"].shape == (2, n, 2)
        ((img * weights.to(dev)).sum() + alpha.sum()).backward()
        out[backend] = (img.detach().cpu(), alpha.detach().cpu(), {k: v.grad.cpu() for k, v in p.items()})
    ic, ac, gc = out["cuda"]
    ir, ar, gr = out["reference"]
    # gsplat's kernels use fast-math exp and float32 throughout: looser than the CPU test
    assert torch.allclose(ac, ar, atol=2e-3)
    assert torch.allclose(ic[..., :d], ir[..., :d], atol=2e-3)
    for k in gr:
        err = ((gc[k] - gr[k]).norm() / gr[k].norm()).item()
        assert err < 1e-2, (k, err)


def test_training_and_evaluation_on_cuda(tmp_path):
    """A few trainer steps and an evaluation on CUDA (the light gauges, losses and shading included)."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers.tiny_subject import make_tiny_subject
    from hravatar.evaluate import EvaluateConfig, evaluate_avatar
    from hravatar.train import TrainConfig, train

    subject = make_tiny_subject(tmp_path / "tiny", size=64, frames=8)
    out = tmp_path / "av"
    cfg = TrainConfig(subject=subject, output=out, points_per_face=1, encoder_width=0.25, encoder_input_size=32,
                      encoder_warmup_steps=3, iterations=40, quiet=True, device="cuda")
    assert train(cfg) == 0
    assert json.loads((out / "training.json").read_text())["iterations"] == 40
    m = evaluate_avatar(EvaluateConfig(avatar=out, images=0, lpips=False, device="cuda"))
    assert m["psnr"] is not None and m["psnr"] > 10
