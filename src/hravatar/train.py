"""The trainer: a subject folder -> a trained avatar folder (``hravatar train SUBJECT -o AVATAR``).

Per iteration (batch 1, DESIGN.md section 2): pick a training frame -> the expression encoder
predicts expression + jaw from the face crop -> deform the Gaussians -> rasterize a G-buffer
(albedo 3, roughness 1, F0 1, normal 3, + expected depth) -> deferred split-sum shading with the
learnable environment (the albedo map is the image during the albedo warm-up) -> the paper's losses
-> Adam steps -> densify / prune on schedule.

Defaults are the paper's (15 epochs, 1500 warm-up iterations, densification from 1000 every 500
until 500 before the end, opacity reset every 3000, the learning rates of DESIGN.md section 5).
These iteration numbers refer to a run of ``reference_iterations`` (30000, i.e. 15 epochs over
about 2000 frames); shorter runs scale them proportionally so that a short CPU run still warms up,
densifies and resets.

Output folder::

    AVATAR/avatar.safetensors     the Gaussian avatar (GaussianHead.save)
    AVATAR/lighting.safetensors   the learned environment (LearnableLighting state)
    AVATAR/encoder.safetensors    the expression encoder (absent with --encoder none)
    AVATAR/training.json          summary: subject, split, iterations, time, final numbers
    AVATAR/train_config.yaml      the TrainConfig used
    AVATAR/curves.csv, curves.png training curves
    AVATAR/checkpoint.pt          everything needed to resume exactly (written every few minutes)

Use :func:`load_trained` to get the avatar, lighting and encoder back, and
:func:`render_frame` to render them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
import tyro
from torch import Tensor

from hravatar.config import from_dict, save_config, to_dict
from hravatar.data import FrameSample, SubjectDataset, load_subject
from hravatar.errors import HRAvatarError
from hravatar.gaussians import AvatarConfig, DensifyConfig, DensifyStrategy, GaussianHead, LearningRates, position_lr
from hravatar.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from hravatar.losses import LossWeights, albedo_prior_loss, jaw_loss, normal_consistency_loss, photometric_loss, tv_loss
from hravatar.metrics import psnr
from hravatar.progress import log, progress

CHECKPOINT_VERSION = 1
HEAD_MODEL_FILE = "head_model.safetensors"


@dataclass
class TrainConfig:
    """Train an avatar from a subject folder (defaults: the paper's settings; see README.md, Training)."""

    subject: Annotated[Path, tyro.conf.Positional]
    """subject folder written by `hravatar preprocess` (or HRAvatar's own layout)"""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("avatar")
    """avatar folder to write (checkpoints, final avatar, curves)"""
    resume: bool = False
    """continue the run in OUTPUT from its checkpoint (exactly: same state, same next loss)"""
    overwrite: bool = False
    """start over even if OUTPUT already holds a run"""
    # ---- length and split ----
    epochs: int = 15
    """passes over the training frames (the paper: 15)"""
    iterations: int = 0
    """total iterations (0: epochs x training frames)"""
    max_iterations: int = 30000
    """cap on the total iterations (0: no cap); 30000 = the paper's length for a 2000-frame video"""
    reference_iterations: int = 30000
    """run length the schedule's iteration numbers refer to; shorter runs scale the warm-up and
    densification schedule proportionally"""
    test_frames: int | None = None
    """frames held out at the end (default: 500 for > 3000 frames, 350 for >= 2000, else 15%)"""
    downscale: int = 1
    """train on images downscaled by this integer factor (faster; intrinsics scaled to match)"""
    # ---- model ----
    head_model: str = "auto"
    """head model: auto (the subject's), open, flame"""
    flame_path: Path | None = None
    """your FLAME file when the head model is FLAME (or set $HRAVATAR_FLAME_PATH)"""
    points_per_face: int = 8
    """Gaussians initialised per head-mesh triangle (the paper: 8)"""
    scene_scale: float = 0.25
    """metres that the position learning rate and the densification size thresholds are relative to
    (HRAvatar works in FLAME units x 4, so its rates in metres are a quarter)"""
    # ---- schedule ----
    albedo_warmup: int = 1500
    """first iterations render the albedo map as the image (scaled with the run length)"""
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    """densification schedule and thresholds (iteration numbers scaled with the run length)"""
    lr: LearningRates = field(default_factory=LearningRates)
    """per-point learning rates (positions decay exponentially from means to means_final)"""
    lighting_lr: float = 5e-2
    """learning rate of the environment maps"""
    encoder_lr: float = 5e-5
    """learning rate of the expression encoder during joint training"""
    loss: LossWeights = field(default_factory=LossWeights)
    """loss weights"""
    # ---- encoder ----
    encoder: Literal["mobilenet_v2", "smirk", "none"] = "mobilenet_v2"
    """expression encoder backbone; none = use the tracked expression and jaw (ablation)"""
    smirk_checkpoint: Path | None = None
    """SMIRK checkpoint (FLAME 2020 subjects) to initialise the smirk encoder from"""
    encoder_input_size: int = 224
    """encoder input side (224 = the paper; smaller is faster on CPU)"""
    encoder_width: float = 1.0
    """MobileNetV2 width multiplier (1.0 loads ImageNet weights; smaller only for tests)"""
    encoder_warmup_steps: int = 200
    """steps of regressing the tracked expression and jaw before joint training"""
    encoder_warmup_batch: int = 4
    """batch size of the warm start"""
    encoder_warmup_lr: float = 1e-3
    """learning rate of the warm start"""
    # ---- ablations (the paper's Table 2) ----
    no_learnable_deformation: bool = False
    """freeze the per-point blendshape bases and skinning weights at their initial values"""
    rig_to_mesh: bool = False
    """bind every Gaussian rigidly to a head-mesh triangle instead of learnable deformation"""
    no_pbr: bool = False
    """plain colour per point instead of physically based shading"""
    # ---- machinery ----
    seed: int = 0
    """seed of everything (initialisation, frame order, densification)"""
    device: str = "auto"
    """cpu, cuda, or auto"""
    backend: str = "auto"
    """rasterizer backend: auto, cpu, cuda, reference"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    checkpoint_minutes: float = 5.0
    """write a checkpoint at least this often (and at the end)"""
    log_every: int = 10
    """append a row to the training curves every this many iterations"""
    stop_after: int = 0
    """stop (with a checkpoint) after this many iterations of this session; 0: run to the end"""
    max_bad_steps: int = 5
    """stop cleanly after this many consecutive non-finite steps"""
    inject_nan_at: tuple[int, ...] = ()
    """testing aid: make the loss NaN at these iterations to exercise the guard"""
    quiet: bool = False
    """no progress bar"""


# ---- small helpers ---------------------------------------------------------------------------------
_ALLOCATOR_TUNED: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process heap instead of returning it to the OS (glibc only).

    A training step allocates and frees tensors of tens of megabytes (basis gradients, G-buffers);
    glibc serves those with fresh ``mmap`` pages and unmaps them on free, so every step pays the
    page faults again: measured on a 2-core machine, a ``[225744,100]`` outer product took 40 ms
    instead of 3.5 ms. Disabling ``mmap`` for large blocks (``M_MMAP_MAX = 0``) and heap trimming
    (``M_TRIM_THRESHOLD``) makes the heap reuse the same pages every step; results are unchanged.
    Idempotent; a no-op (``False``) without glibc or when ``HRAVATAR_NO_MALLOPT=1``.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    import ctypes
    import os
    import platform

    ok = False
    if platform.system() == "Linux" and os.environ.get("HRAVATAR_NO_MALLOPT", "") not in ("1", "true", "yes"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_max = -1, -4
            ok = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
        except (OSError, AttributeError):
            ok = False
    _ALLOCATOR_TUNED = ok
    return ok


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def scaled_schedule(cfg: TrainConfig, total: int) -> tuple[DensifyConfig, int]:
    """The densification config and albedo warm-up for a run of ``total`` iterations.

    Runs shorter than :attr:`TrainConfig.reference_iterations` scale the iteration numbers by
    ``r = total / reference``, with floors that keep the schedule meaningful: refinement at most
    every 20 iterations (the gradient statistics need several views), never before the first
    interval, and no opacity reset when the scaled interval is under 500 iterations (opacities reset
    to 0.01 need a few hundred steps to recover, so short runs would end transparent).
    """
    r = min(1.0, total / max(cfg.reference_iterations, 1))
    d = cfg.densify
    every = max(min(d.every, 20), int(round(d.every * r)))
    start = max(every, int(round(d.start_iter * r))) if d.start_iter > 0 else d.start_iter
    stop = max(every, int(round(d.stop_before_end * r))) if d.stop_before_end > 0 else d.stop_before_end
    reset = int(round(d.reset_every * r))
    if r < 1.0 and reset < 500:
        reset = 0
    dens = dataclasses.replace(d, start_iter=start, every=every, stop_before_end=stop, reset_every=reset,
                               seed=cfg.seed)
    return dens, int(round(cfg.albedo_warmup * r))


def camera_center(viewmat: Tensor) -> Tensor:
    """World position ``[3]`` of the camera of an OpenCV world-to-camera ``viewmat [4,4]``."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    return -(R.T @ t)


def resolve_head_model(
    subject: Path, name: str, subject_model: str, flame_path: Path | None, device: torch.device
) -> Any:
    """The head model to train with: ``name`` (``"auto"``: ``SUBJECT/head_model.safetensors`` when
    present, else the subject's ``subject_model`` name), loaded on ``device``."""
    from hravatar.head import HeadModel, load_head_model

    f = Path(subject) / HEAD_MODEL_FILE
    if name == "auto" and f.is_file():
        return HeadModel.load(f).to(device)
    if name == "auto":
        name = subject_model
    low = name.lower()
    if "flame" in low:
        return load_head_model("flame", flame_path, device=device)
    if low.startswith("open"):
        return load_head_model("open", device=device)
    raise HRAvatarError(f"{subject}: unknown head model {name!r}; pass --head-model open or flame")


def downscale_image(x: Tensor | None, d: int) -> Tensor | None:
    """Area-downscale an image ``[H,W,C]`` by an integer factor ``d`` (cropping to multiples of d)."""
    if x is None or d <= 1:
        return x
    H, W = x.shape[0] // d * d, x.shape[1] // d * d
    y = x[:H, :W].permute(2, 0, 1)[None]
    return F.avg_pool2d(y, d)[0].permute(1, 2, 0).contiguous()


def downscale_frame(fr: FrameSample, d: int) -> FrameSample:
    """Area-downscale images and scale the intrinsics by an integer factor ``d``."""
    if d <= 1:
        return fr
    K = fr.K.clone()
    K[:2] = K[:2] / d
    return dataclasses.replace(fr, image=downscale_image(fr.image, d), mask=downscale_image(fr.mask, d),
                               albedo=downscale_image(fr.albedo, d), K=K)


# ---- rendering -------------------------------------------------------------------------------------
def render_frame(
    avatar: GaussianHead,
    lighting: Any,
    shape: Tensor,
    expression: Tensor,
    pose: Tensor,
    translation: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    mode: Literal["pbr", "albedo", "color"] = "pbr",
    backend: str = "auto",
    background: Tensor | float | None = None,
    shading_maps: bool = False,
) -> dict[str, Any]:
    """Render the avatar for one set of parameters and one camera.

    Args:
        avatar: the Gaussian avatar; lighting: a :class:`~hravatar.shading.lighting.Lighting`.
        shape ``[1,S']``, expression ``[1,E']``, pose ``[1,5,3]`` (axis-angle), translation ``[1,3]``
        (metres); viewmat ``[4,4]`` OpenCV world-to-camera; K ``[3,3]`` pixels.
        mode: ``"pbr"`` (shaded), ``"albedo"`` (the albedo map is the image: warm-up) or ``"color"``
            (no-PBR ablation: plain per-point colour).
        background: behind the avatar (default black).
        shading_maps: also return every intermediate shading map (``shading``, pbr only); this
            shades all pixels. By default only covered pixels (alpha > 0) are shaded and scattered
            back (the same image up to float round-off, about 2.5x less shading work at our framing).
    Returns:
        dict of ``[1,H,W,*]`` tensors: ``image``, ``alpha``, ``depth`` (expected z, metres), and for
        pbr/albedo ``albedo`` (accumulated over black), ``normal`` (world, unit), ``roughness``,
        ``f0`` (un-premultiplied); plus ``meta`` (the rasterizer's) and, with ``shading_maps``,
        ``shading`` (the dict of :func:`hravatar.shading.shade.shade`).
    """
    from hravatar.render import rasterize
    from hravatar.shading.shade import shade

    g = avatar.deform(shape, expression, pose, translation)
    vm, Ks = viewmat[None], K[None]
    if mode == "color":
        feats = avatar.colors
    else:
        n = g.normals(camera_center(viewmat)[None])[0]
        feats = torch.cat([avatar.albedo, avatar.roughness, avatar.f0, n], -1)
    colors, alphas, meta = rasterize(g.means[0], g.quats[0], g.scales[0], g.opacities[0], feats, vm, Ks,
                                     width, height, render_mode="RGB+ED", backend=backend)
    out: dict[str, Any] = {"alpha": alphas, "depth": colors[..., -1:], "meta": meta}
    bg = 0.0 if background is None else background
    if mode == "color":
        out["image"] = colors[..., :3] + (1 - alphas) * bg
        return out
    a = alphas.clamp_min(1e-6)
    out["albedo"] = colors[..., 0:3]
    out["roughness"] = colors[..., 3:4] / a
    out["f0"] = colors[..., 4:5] / a
    out["normal"] = F.normalize(colors[..., 5:8], dim=-1, eps=1e-8)
    if mode == "albedo":
        out["image"] = colors[..., 0:3] + (1 - alphas) * bg
        return out
    if not shading_maps:
        out["image"] = shade_foreground(colors, alphas, vm, Ks, lighting, background)
        return out
    gb = {"albedo": colors[..., 0:3], "roughness": colors[..., 3:4], "f0": colors[..., 4:5],
          "normal": colors[..., 5:8], "alpha": alphas}
    sh = shade(gb, (vm, Ks), lighting, background=background, premultiplied=True)
    out["image"] = sh["image"]
    out["shading"] = sh
    return out


def _pixel_view_directions(viewmats: Tensor, Ks: Tensor, width: int, height: int, flat_idx: Tensor) -> Tensor:
    """Unit directions ``[P,3]`` (world) from the surface toward the camera at flat pixel indices
    ``c*H*W + y*W + x`` (pixel centres at +0.5): :func:`hravatar.shading.shade.view_directions`
    evaluated only where needed."""
    hw = height * width
    cam = torch.div(flat_idx, hw, rounding_mode="floor")
    rem = flat_idx - cam * hw
    y = torch.div(rem, width, rounding_mode="floor")
    x = rem - y * width
    dt = viewmats.dtype
    pix = torch.stack([x.to(dt) + 0.5, y.to(dt) + 0.5, torch.ones_like(x, dtype=dt)], -1)  # [P,3]
    kinv = torch.linalg.inv(Ks.to(dt))  # [C,3,3]
    d_cam = torch.einsum("pij,pj->pi", kinv[cam], pix)
    d_world = torch.einsum("pji,pj->pi", viewmats[cam, :3, :3], d_cam)  # R^T d
    return -F.normalize(d_world, dim=-1)


def shade_foreground(
    colors: Tensor, alphas: Tensor, viewmats: Tensor, Ks: Tensor, lighting: Any,
    background: Tensor | float | None = None,
) -> Tensor:
    """Deferred shading of the covered pixels only, composited over ``background``.

    Args:
        colors: rasterized G-buffer ``[C,H,W,>=8]`` (albedo 3, roughness 1, F0 1, normal 3,
            alpha-accumulated, as :func:`render_frame` renders it); alphas: ``[C,H,W,1]``.
        viewmats ``[C,4,4]`` (OpenCV world-to-camera), Ks ``[C,3,3]`` (pixels); lighting: a
            :class:`~hravatar.shading.lighting.Lighting`; background: ``[C,H,W,3]``, ``[3]``, a
            scalar or ``None`` (black).
    Returns:
        the image ``[C,H,W,3]``: :func:`hravatar.shading.shade.shade`'s ``image`` up to float
        round-off. Pixels with alpha 0 have no contributing Gaussian, so there the image is the
        background and no parameter gets a gradient from them: they are not shaded at all.
    """
    from hravatar.shading.shade import shade

    C, H, W, D = colors.shape
    idx = torch.nonzero(alphas.reshape(-1) > 0).squeeze(1)  # [P] covered pixels
    g = colors.reshape(-1, D).index_select(0, idx)
    a = alphas.reshape(-1, 1).index_select(0, idx)
    v = _pixel_view_directions(viewmats, Ks, W, H, idx).to(colors.dtype)
    bg_full = None
    if background is not None and torch.is_tensor(background) and background.dim() > 1:
        bg_full = background.to(colors).expand(C, H, W, 3).reshape(-1, 3)
        bg_fg = bg_full.index_select(0, idx)
    else:
        bg_fg = background
    gb = {"albedo": g[:, 0:3], "roughness": g[:, 3:4], "f0": g[:, 4:5], "normal": g[:, 5:8], "alpha": a}
    img_fg = shade(gb, v, lighting, background=bg_fg, premultiplied=True)["image"]  # [P,3]
    if bg_full is None:
        if background is None:
            base = colors.new_zeros(C * H * W, 3)
        else:
            base = torch.as_tensor(background, dtype=colors.dtype, device=colors.device).expand(C * H * W, 3)
    else:
        base = bg_full
    return base.index_copy(0, idx, img_fg).reshape(C, H, W, 3)


def build_encoder(cfg: TrainConfig, num_expr: int, device: torch.device, expr_names: list[str] | None = None) -> Any:
    """The expression encoder of ``cfg`` (None for ``--encoder none``); the jaw expressions among
    ``expr_names`` are held at zero (:func:`hravatar.encoder.jaw_expression_indices`)."""
    if cfg.encoder == "none":
        return None
    from hravatar.encoder import ExpressionEncoder, jaw_expression_indices, load_smirk_checkpoint

    enc = ExpressionEncoder(num_expr, backbone=cfg.encoder, width_mult=cfg.encoder_width,
                            pretrained=cfg.encoder == "mobilenet_v2", input_size=cfg.encoder_input_size,
                            frozen_expressions=jaw_expression_indices(expr_names or []))
    if cfg.encoder == "smirk":
        if cfg.smirk_checkpoint is None:
            log.info("expression encoder: smirk backbone without --smirk-checkpoint: training from scratch")
        else:
            load_smirk_checkpoint(enc, cfg.smirk_checkpoint)
    return enc.to(device)


def _pad(x: Tensor, n: int) -> Tensor:
    return F.pad(x, (0, max(0, n - x.shape[-1])))[..., :n]


# ---- the trainer -----------------------------------------------------------------------------------
class Trainer:
    """Owns the run state; :meth:`run` trains to the end (or to ``stop_after``) and returns a status.

    Create with :meth:`create` (fresh or resumed, depending on the config and the output folder).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        self.ds: SubjectDataset = load_subject(cfg.subject, "train", cfg.test_frames)
        n = len(self.ds)
        total = cfg.iterations or cfg.epochs * n
        if cfg.max_iterations > 0:
            total = min(total, cfg.max_iterations)
        self.total = max(1, int(total))
        self.densify_cfg, self.warmup = scaled_schedule(cfg, self.total)
        self.head = resolve_head_model(Path(cfg.subject), cfg.head_model, self.ds.head_model, cfg.flame_path,
                                       self.device)
        H, W = self.ds.image_size
        d = max(1, cfg.downscale)
        self.width, self.height = W // d, H // d
        self.mode_final = "color" if cfg.no_pbr else "pbr"
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        self.bad_steps = 0
        self.elapsed = 0.0
        self.order: Tensor | None = None
        self.order_pos = 0

    # ---- construction ------------------------------------------------------------------------
    def _avatar_config(self) -> AvatarConfig:
        c = self.cfg
        return AvatarConfig(points_per_face=c.points_per_face, seed=c.seed,
                            rig="triangle" if c.rig_to_mesh else "blendshape",
                            learn_bases=not c.no_learnable_deformation, learn_weights=not c.no_learnable_deformation)

    def _point_param_names(self) -> tuple[str, ...]:
        names = set(self.avatar.lr_table(self.cfg.lr, self.cfg.scene_scale))
        drop = {"albedo", "roughness", "f0"} if self.cfg.no_pbr else {"colors"}
        return tuple(k for k in self.avatar.lr_table(self.cfg.lr, self.cfg.scene_scale) if k in names - drop)

    def _make_optimizers(self) -> None:
        c = self.cfg
        self.opt = self.avatar.make_optimizer(c.lr, c.scene_scale, names=self._point_param_names())
        self.light_opt = torch.optim.Adam(self.lighting.parameters(), lr=c.lighting_lr, eps=1e-15)
        self.enc_opt = (torch.optim.Adam(self.encoder.parameters(), lr=c.encoder_lr, eps=1e-15)
                        if self.encoder is not None else None)

    def _fresh(self) -> None:
        from hravatar.shading.lighting import LearnableLighting

        c = self.cfg
        torch.manual_seed(c.seed)
        self.avatar = GaussianHead.from_head_model(self.head, self._avatar_config()).to(self.device)
        self.lighting = LearnableLighting().to(self.device)
        self.encoder = build_encoder(c, self.avatar.num_expr, self.device, self.avatar.expr_names)
        self.strategy = DensifyStrategy(self.densify_cfg, self.total, c.scene_scale)
        self.order_gen = torch.Generator().manual_seed(c.seed)
        self._make_optimizers()
        if self.encoder is not None and c.encoder_warmup_steps > 0:
            self._warm_start_encoder()

    def _warm_start_encoder(self) -> None:
        from hravatar.encoder import warm_start

        c, E = self.cfg, self.avatar.num_expr
        t0 = time.perf_counter()

        def sample(idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            crops = torch.stack([self.ds.face_crop(int(i)) for i in idx])
            return crops, _pad(self.ds.expression[idx], E), self.ds.pose[idx, 2]

        losses = warm_start(self.encoder, sample, len(self.ds), c.encoder_warmup_steps, c.encoder_warmup_batch,
                            c.encoder_warmup_lr, seed=c.seed, device=self.device)
        log.info("expression encoder warm start: %d steps, loss %.4g -> %.4g (%.0f s)", len(losses),
                 losses[0], sum(losses[-5:]) / len(losses[-5:]), time.perf_counter() - t0)

    @classmethod
    def create(cls, cfg: TrainConfig) -> Trainer:
        """A trainer for ``cfg``: resumed from ``OUTPUT/checkpoint.pt`` with ``--resume``."""
        out = Path(cfg.output)
        ck = out / "checkpoint.pt"
        if cfg.resume:
            if not ck.is_file():
                raise HRAvatarError(f"{ck}: no checkpoint to resume from; run without --resume")
            state = torch.load(ck, map_location="cpu", weights_only=True)
            saved = from_dict(TrainConfig, state["config"])
            saved = dataclasses.replace(saved, resume=True, stop_after=cfg.stop_after, quiet=cfg.quiet,
                                        inject_nan_at=cfg.inject_nan_at, threads=cfg.threads)
            t = cls(saved)
            t._restore(state)
            log.info("resuming %s at iteration %d/%d", out, t.iteration, t.total)
            return t
        if (out / "checkpoint.pt").exists() or (out / "avatar.safetensors").exists():
            if not cfg.overwrite:
                raise HRAvatarError(f"{out}: already holds a training run; pass --resume to continue it "
                                    "or --overwrite to start over")
        t = cls(cfg)
        t._fresh()
        return t

    # ---- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        av = self.avatar
        frozen = [k for k, p in av.params.items() if not p.requires_grad]
        return {
            "version": CHECKPOINT_VERSION,
            "iteration": self.iteration,
            "config": to_dict(self.cfg),
            "avatar": {
                "params": {k: v.detach().cpu() for k, v in av.params.items()},
                "buffers": {k: v.detach().cpu() for k, v in av.named_buffers()},
                "config": dataclasses.asdict(av.config),
                "head_name": av.head_name,
                "expr_names": list(av.expr_names),
                "meta_json": json.dumps(av.meta),
                "frozen": frozen,
            },
            "optimizer": self.opt.state_dict(),
            "light_opt": self.light_opt.state_dict(),
            "enc_opt": None if self.enc_opt is None else self.enc_opt.state_dict(),
            "lighting": self.lighting.state_dict(),
            "encoder": None if self.encoder is None else self.encoder.state_dict(),
            "encoder_source": None if self.encoder is None else self.encoder.pretrained_source,
            "strategy": {k: (None if v is None else v.cpu()) for k, v in self.strategy.state_dict().items()},
            "rng": {"torch": torch.get_rng_state(), "order": self.order_gen.get_state()},
            "order": self.order, "order_pos": self.order_pos,
            "history": self.history, "bad_steps": self.bad_steps, "elapsed": self.elapsed,
        }

    def save_checkpoint(self) -> Path:
        """Write ``OUTPUT/checkpoint.pt`` atomically (and the curves)."""
        path = self.out / "checkpoint.pt"
        with atomic_path(path) as tmp:
            torch.save(self._state(), tmp)
        self._write_curves()
        self._last_ck = time.monotonic()
        return path

    def _restore(self, st: dict[str, Any]) -> None:
        from hravatar.shading.lighting import LearnableLighting

        if st.get("version") != CHECKPOINT_VERSION:
            raise HRAvatarError(f"{self.out}/checkpoint.pt: unsupported checkpoint version {st.get('version')}")
        a = st["avatar"]
        dev = self.device
        self.avatar = GaussianHead(
            {k: v.to(dev) for k, v in a["params"].items()}, {k: v.to(dev) for k, v in a["buffers"].items()},
            from_dict(AvatarConfig, a["config"]), a["head_name"], a["expr_names"], json.loads(a["meta_json"]),
            frozen=tuple(a["frozen"]),
        )
        self.lighting = LearnableLighting().to(dev)
        self.lighting.load_state_dict(st["lighting"])
        self.encoder = None
        if st["encoder"] is not None:
            from hravatar.encoder import ExpressionEncoder, jaw_expression_indices

            c = self.cfg
            self.encoder = ExpressionEncoder(self.avatar.num_expr, backbone=c.encoder, width_mult=c.encoder_width,
                                             pretrained=False, input_size=c.encoder_input_size,
                                             frozen_expressions=jaw_expression_indices(self.avatar.expr_names)).to(dev)
            self.encoder.load_state_dict(st["encoder"])
            self.encoder.pretrained_source = st.get("encoder_source") or "scratch"
        self._make_optimizers()
        self.opt.load_state_dict(st["optimizer"])
        self.light_opt.load_state_dict(st["light_opt"])
        if self.enc_opt is not None:
            self.enc_opt.load_state_dict(st["enc_opt"])
        self.strategy = DensifyStrategy(self.densify_cfg, self.total, self.cfg.scene_scale)
        s = st["strategy"]
        self.strategy.load_state_dict({k: (None if v is None else v if k == "gen" else v.to(dev))
                                       for k, v in s.items()})
        torch.set_rng_state(st["rng"]["torch"])
        self.order_gen = torch.Generator()
        self.order_gen.set_state(st["rng"]["order"])
        self.order, self.order_pos = st["order"], int(st["order_pos"])
        self.iteration = int(st["iteration"])
        self.history = list(st["history"])
        self.bad_steps = int(st["bad_steps"])
        self.elapsed = float(st["elapsed"])

    # ---- one iteration -----------------------------------------------------------------------
    def _next_frame(self) -> int:
        n = len(self.ds)
        if self.order is None or self.order_pos >= n:
            self.order = torch.randperm(n, generator=self.order_gen)
            self.order_pos = 0
        i = int(self.order[self.order_pos])
        self.order_pos += 1
        return i

    def _mode(self, it: int) -> str:
        if self.cfg.no_pbr:
            return "color"
        return "albedo" if it < self.warmup else "pbr"

    def params_for(self, fr: FrameSample) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(expression [1,E], pose [1,5,3], predicted jaw [1,3] or None)`` of a frame (on device)."""
        E = self.avatar.num_expr
        pose = fr.pose[None].clone()
        if self.encoder is None:
            return _pad(fr.expression[None], E), pose, None
        expr, jaw = self.encoder(fr.face_crop[None])
        pose = torch.cat([pose[:, :2], jaw[:, None], pose[:, 3:]], 1)
        return expr, pose, jaw

    def step(self, it: int) -> dict[str, float] | None:
        """One training iteration; returns the loss terms, or ``None`` for a skipped (non-finite) step."""
        c, w = self.cfg, self.cfg.loss
        fr = downscale_frame(self.ds[self._next_frame()], c.downscale).to(self.device)
        for g in self.opt.param_groups:
            if g.get("name") == "means":
                g["lr"] = position_lr(it, self.total, c.lr, c.scene_scale)
        if self.encoder is not None:
            self.encoder.train()
            from hravatar.encoder import freeze_batchnorm

            freeze_batchnorm(self.encoder)
        mode = self._mode(it)
        expr, pose, jaw = self.params_for(fr)
        out = render_frame(self.avatar, self.lighting, fr.shape[None], expr, pose, fr.translation[None],
                           fr.viewmat, fr.K, self.width, self.height, mode, c.backend)
        self.strategy.step_pre_backward(out["meta"])
        img = out["image"][0]
        terms: dict[str, Tensor] = {"photo": photometric_loss(img, fr.image, w.l1, w.dssim)}
        if jaw is not None and w.jaw:
            terms["jaw"] = jaw_loss(jaw, fr.pose[None, 2], w.jaw)
        if mode != "color" and w.normal:
            from hravatar.shading.normals import normals_from_depth

            nd, valid = normals_from_depth(out["depth"], fr.K[None], fr.viewmat[None], out["alpha"])
            m = valid.to(nd.dtype) * fr.mask[None]
            terms["normal"] = normal_consistency_loss(nd, out["normal"], m, w.normal)
        if mode != "color" and fr.albedo is not None and w.albedo:
            terms["albedo"] = albedo_prior_loss(out["albedo"][0], fr.albedo, fr.mask, w.albedo)
        if mode == "pbr" and w.roughness_tv:
            terms["tv"] = tv_loss(out["roughness"][0], fr.mask, w.roughness_tv)
        loss = sum(terms.values())
        if it in c.inject_nan_at:
            loss = loss * float("nan")
        opts = [o for o in (self.opt, self.light_opt, self.enc_opt) if o is not None]
        for o in opts:
            o.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            gsum = sum((p.grad.sum() for o in opts for g in o.param_groups for p in g["params"]
                        if p.grad is not None), torch.zeros((), device=self.device))
            finite = bool(torch.isfinite(gsum))
        if not finite:
            for o in opts:
                o.zero_grad(set_to_none=True)
            return None
        for o in opts:
            o.step()
        self.strategy.step_post_backward(self.avatar, self.opt, it, out["meta"], self.width, self.height)
        for o in opts:
            o.zero_grad(set_to_none=True)
        with torch.no_grad():
            p = float(psnr(img.detach().clamp(0, 1), fr.image)[0])
        rec = {k: float(v.detach()) for k, v in terms.items()}
        rec.update(loss=float(loss.detach()), psnr=p, points=self.avatar.num_points, mode=mode)
        return rec

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Train until the end (or ``stop_after``); returns 0, or 3 after repeated non-finite steps."""
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(c, self.out / "train_config.yaml")
        self._last_ck = time.monotonic()
        start_it = self.iteration
        ema = None
        status = 0
        bar = progress(total=self.total, desc="train", disable=c.quiet, initial=start_it) if not c.quiet else None
        t_session = time.perf_counter()
        try:
            while self.iteration < self.total:
                it = self.iteration
                t0 = time.perf_counter()
                rec = self.step(it)
                self.elapsed += time.perf_counter() - t0
                if rec is None:
                    self.bad_steps += 1
                    log.warning("iteration %d: non-finite loss or gradient; step skipped (%d in a row)",
                                it, self.bad_steps)
                    self.iteration += 1
                    if self.bad_steps >= c.max_bad_steps:
                        log.error("stopping: %d non-finite steps in a row; the checkpoint keeps the last good "
                                  "state (try a lower learning rate)", self.bad_steps)
                        status = 3
                        break
                else:
                    self.bad_steps = 0
                    self.iteration += 1
                    ema = rec["loss"] if ema is None else 0.9 * ema + 0.1 * rec["loss"]
                    if it % max(1, c.log_every) == 0 or self.iteration == self.total:
                        row = {"iteration": it, **{k: v for k, v in rec.items() if k != "mode"},
                               "lr_means": position_lr(it, self.total, c.lr, c.scene_scale),
                               "seconds": round(self.elapsed, 3)}
                        self.history.append(row)
                    if bar is not None:
                        bar.set_postfix_str(f"loss={ema:.4f} psnr={rec['psnr']:.2f} pts={int(rec['points'])}")
                if bar is not None:
                    bar.update(1)
                if time.monotonic() - self._last_ck > 60 * c.checkpoint_minutes:
                    self.save_checkpoint()
                if c.stop_after and self.iteration - start_it >= c.stop_after and self.iteration < self.total:
                    log.info("stopping after %d iterations as asked (--stop-after); resume with --resume",
                             c.stop_after)
                    break
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        finally:
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        if self.iteration >= self.total and status == 0:
            self.finalize(time.perf_counter() - t_session)
        return status

    # ---- outputs -----------------------------------------------------------------------------
    def _write_curves(self) -> None:
        if not self.history:
            return
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        buf = io.StringIO()
        wr = csv.DictWriter(buf, fieldnames=keys, restval="")
        wr.writeheader()
        for r in self.history:
            wr.writerow(r)
        atomic_write_text(self.out / "curves.csv", buf.getvalue())
        try:
            from hravatar.report.plots import training_curves

            cols = [k for k in keys if k not in ("seconds", "lr_means")]
            png = training_curves([{k: r.get(k, float("nan")) for k in cols} for r in self.history], "iteration")
            atomic_write_bytes(self.out / "curves.png", png)
        except Exception as e:  # noqa: BLE001 - plotting must never kill a finished run
            log.warning("could not draw curves.png (%s)", e)

    def finalize(self, session_seconds: float) -> None:
        """Write the final avatar, lighting, encoder and ``training.json``."""
        from safetensors.torch import save_file

        self.avatar.save(self.out / "avatar.safetensors", extra_meta={"trainer": "hravatar.train"})
        with atomic_path(self.out / "lighting.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.lighting.state_dict().items()}, str(tmp))
        if self.encoder is not None:
            with atomic_path(self.out / "encoder.safetensors") as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()},
                          str(tmp), metadata={"backbone": self.cfg.encoder, "num_expr": str(self.avatar.num_expr),
                                              "input_size": str(self.cfg.encoder_input_size),
                                              "width": str(self.cfg.encoder_width)})
        last = self.history[-min(len(self.history), 10):]
        info = {
            "subject": str(Path(self.cfg.subject).resolve()),
            "head_model": self.avatar.head_name,
            "test_frames": self.cfg.test_frames,
            "train_frames": len(self.ds),
            "image_size": [self.height, self.width],
            "downscale": self.cfg.downscale,
            "iterations": self.iteration,
            "points": self.avatar.num_points,
            "train_seconds": round(self.elapsed, 1),
            "mode": self.mode_final,
            "encoder": self.cfg.encoder,
            "final_loss": sum(r["loss"] for r in last) / max(len(last), 1) if last else None,
            "final_psnr": sum(r["psnr"] for r in last) / max(len(last), 1) if last else None,
            "first_psnr": self.history[0]["psnr"] if self.history else None,
            "warmup_iterations": self.warmup,
            "densify": dataclasses.asdict(self.densify_cfg),
        }
        atomic_write_text(self.out / "training.json", json.dumps(info, indent=1))
        log.info("trained %d iterations in %.0f s: %d points, PSNR %.2f dB (train frames, last logs) -> %s",
                 self.iteration, self.elapsed, self.avatar.num_points, info["final_psnr"] or math.nan, self.out)


def train(cfg: TrainConfig) -> int:
    """Train (or resume) the avatar described by ``cfg``; returns an exit status (0 = done)."""
    return Trainer.create(cfg).run()


# ---- loading a trained avatar ----------------------------------------------------------------------
@dataclass
class TrainedAvatar:
    """A trained avatar folder loaded for rendering (see :func:`load_trained`)."""

    avatar: GaussianHead
    lighting: Any
    encoder: Any
    config: TrainConfig
    info: dict[str, Any]

    @property
    def mode(self) -> str:
        """``"pbr"``, or ``"color"`` for a no-PBR avatar."""
        return "color" if self.config.no_pbr else "pbr"

    @torch.no_grad()
    def render(self, fr: FrameSample, use_encoder: bool = True, backend: str = "auto",
               mode: str | None = None) -> dict[str, Any]:
        """Render one (device-resident, already downscaled) frame of a subject with its tracked camera,
        shape and pose; the expression and jaw come from the encoder unless ``use_encoder`` is False."""
        E = self.avatar.num_expr
        pose = fr.pose[None].clone()
        if self.encoder is not None and use_encoder:
            self.encoder.eval()
            expr, jaw = self.encoder(fr.face_crop[None])
            pose = torch.cat([pose[:, :2], jaw[:, None], pose[:, 3:]], 1)
        else:
            expr = _pad(fr.expression[None], E)
        H, W = fr.image.shape[:2]
        return render_frame(self.avatar, self.lighting, fr.shape[None], expr, pose, fr.translation[None],
                            fr.viewmat, fr.K, W, H, mode or self.mode, backend)


def load_trained(path: str | Path, device: torch.device | str | None = None) -> TrainedAvatar:
    """Load ``AVATAR/`` written by ``hravatar train`` (avatar, learned lighting, encoder, config)."""
    from safetensors.torch import load_file

    from hravatar.config import load_config
    from hravatar.shading.lighting import LearnableLighting

    root = Path(path)
    if not (root / "avatar.safetensors").is_file():
        hint = ""
        if (root / "checkpoint.pt").is_file():
            hint = " (training has not finished; run `hravatar train --resume`)"
        raise HRAvatarError(f"{root}: no avatar.safetensors{hint}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cfg = load_config(TrainConfig, root / "train_config.yaml")
    avatar = GaussianHead.load(root / "avatar.safetensors", device=dev)
    lighting = LearnableLighting().to(dev)
    lighting.load_state_dict(load_file(str(root / "lighting.safetensors"), device=str(dev)))
    enc = None
    if (root / "encoder.safetensors").is_file():
        from safetensors import safe_open

        from hravatar.encoder import ExpressionEncoder, jaw_expression_indices

        with safe_open(str(root / "encoder.safetensors"), framework="pt") as f:
            md = f.metadata() or {}
        enc = ExpressionEncoder(int(md.get("num_expr", avatar.num_expr)), backbone=md.get("backbone", cfg.encoder),
                                width_mult=float(md.get("width", cfg.encoder_width)), pretrained=False,
                                input_size=int(md.get("input_size", cfg.encoder_input_size)),
                                frozen_expressions=jaw_expression_indices(avatar.expr_names)).to(dev)
        enc.load_state_dict(load_file(str(root / "encoder.safetensors"), device=str(dev)))
        enc.eval()
    info = json.loads((root / "training.json").read_text()) if (root / "training.json").is_file() else {}
    return TrainedAvatar(avatar, lighting, enc, cfg, info)
