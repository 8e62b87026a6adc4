"""The encoder holds the open model's ARKit jaw expressions at zero, as tracking does."""

import pytest
import torch

from hravatar.encoder import ExpressionEncoder, jaw_expression_indices
from hravatar.head.arkit import ARKIT_NAMES
from hravatar.train import TrainConfig, build_encoder

JAW = ("jawOpen", "jawLeft", "jawRight", "jawForward")


def test_jaw_expression_indices():
    idx = jaw_expression_indices(list(ARKIT_NAMES))
    assert sorted(ARKIT_NAMES[i] for i in idx) == sorted(JAW)
    assert jaw_expression_indices([f"expr{i:03d}" for i in range(50)]) == []  # FLAME: nothing frozen


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "smirk"])
def test_frozen_expressions_stay_zero_and_get_no_gradient(backbone):
    torch.manual_seed(0)
    E = len(ARKIT_NAMES)
    frozen = jaw_expression_indices(list(ARKIT_NAMES))
    kw = {"width_mult": 0.25} if backbone == "mobilenet_v2" else {}
    enc = ExpressionEncoder(E, backbone=backbone, pretrained=False, input_size=32, frozen_expressions=frozen, **kw)
    free = ExpressionEncoder(E, backbone=backbone, pretrained=False, input_size=32, **kw)
    free.load_state_dict(enc.state_dict())  # same weights; the mask is not part of them
    assert "expr_mask" not in enc.state_dict()
    with torch.no_grad():  # make the output layer large so an unconstrained encoder moves every column
        for e in (enc, free):
            torch.manual_seed(1)
            e.expression_layers[0].weight.normal_(0, 1.0)
            e.expression_layers[0].bias.normal_(0, 1.0)
    enc.eval()
    free.eval()
    x = torch.rand(2, 32, 32, 3)
    expr, jaw = enc(x)
    expr_free, _ = free(x)
    assert expr.shape == (2, E) and jaw.shape == (2, 3)
    assert torch.all(expr[:, frozen] == 0)
    if backbone == "mobilenet_v2":  # smirk's 50 FLAME slots may not reach the ARKit jaw columns
        assert expr_free[:, frozen].abs().max() > 0.1  # the test can fail: without the mask they move
    others = [i for i in range(E) if i not in frozen][:50]
    assert torch.allclose(expr[:, others], expr_free[:, others])
    expr.pow(2).sum().backward()
    assert enc.expression_layers[0].weight.grad[frozen].abs().max() == 0


def test_build_encoder_freezes_by_name():
    cfg = TrainConfig(subject="unused", encoder="mobilenet_v2", encoder_width=0.25, encoder_input_size=32)
    enc = build_encoder(cfg, len(ARKIT_NAMES), torch.device("cpu"), list(ARKIT_NAMES))
    zero = {ARKIT_NAMES[i] for i in range(len(ARKIT_NAMES)) if enc.expr_mask[i] == 0}
    assert zero == set(JAW)
    assert build_encoder(cfg, 10, torch.device("cpu")).expr_mask.min() == 1
