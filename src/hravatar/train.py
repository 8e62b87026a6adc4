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

Load the result with :func:`hravatar.avatar.load_avatar` and render it with its
:meth:`~hravatar.avatar.Avatar.render`; the trainer renders through the same
:func:`hravatar.avatar.render` (differentiably).
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
from typing import Annotated, Any, ClassVar, Literal

import torch
import tyro
from torch import Tensor

from hravatar import light_priors as lp
from hravatar.avatar import Camera, frame_params, pad_expression, render
from hravatar.avatar.posefit import POSE_OFFSETS_FILE, PoseOffsets, apply_pose_offset, offset_stats
from hravatar.config import from_dict, save_config, to_dict
from hravatar.data import SubjectDataset, downscale_frame, load_subject
from hravatar.device import resolve_device, tune_cpu_allocator
from hravatar.errors import HRAvatarError
from hravatar.gaussians import (
    AvatarConfig,
    DensifyConfig,
    DensifyStrategy,
    GaussianHead,
    LearningRates,
    position_lr,
    save_gaussians,
)
from hravatar.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from hravatar.losses import (
    LossWeights,
    albedo_prior_loss,
    clip_to_saturation,
    jaw_loss,
    normal_consistency_loss,
    perceptual_loss,
    photometric_loss,
    silhouette_loss,
    tv_loss,
)
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
    hair_init: Literal["on", "off"] = "on"
    """seed Gaussians where the matte covers pixels the head mesh does not (hair beyond the bald mesh;
    gaussians/hair_init.py); off: mesh points only, as the paper"""
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
    train_background: Literal["black", "random"] = "black"
    """background behind render and frame during training: black (the paper), or a random colour per
    step (the frame composited over it with its matte), so a wrong outline costs the same whatever
    its colour; evaluation stays over black"""
    # ---- per-frame pose refinement ----
    pose_refine: bool = False
    """learn a global rotation + translation offset per training frame (the tracked head pose of a real
    clip is off by about a degree and a few mm per frame; avatar/posefit.py); saved as
    AVATAR/pose_offsets.safetensors. Off by default: it cost 0.4-0.6 dB on a synthetic subject with
    exact tracking (README.md, Quality on a real clip)"""
    pose_refine_lr_rotation: float = 3e-3
    """Adam step of the per-frame rotation offsets (radians; each frame's row moves only when it is drawn)"""
    pose_refine_lr_translation: float = 2e-3
    """Adam step of the per-frame translation offsets (metres)"""
    pose_refine_prior: float = 0.0
    """weight of the L2 prior that pulls the offsets towards zero (on degrees^2 + millimetres^2)"""
    pose_refine_start: int = -1
    """iteration from which the offsets learn (-1: at the end of the albedo warm-up)"""
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
    encoder_warmup_lr: float = 1e-4
    """learning rate of the warm start (1e-3 collapsed the ImageNet backbone to a constant output)"""
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
    quiet: bool = False
    """no progress bar"""

    #: settings of earlier versions that saved configs may still hold (ignored when read back)
    RETIRED_SETTINGS: ClassVar[tuple[str, ...]] = ("inject_nan_at",)


# ---- small helpers ---------------------------------------------------------------------------------
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


def check_config(cfg: TrainConfig) -> None:
    """Refuse out-of-range settings before any work (one line naming the option)."""
    c = cfg
    pos = {"--pose-refine-lr-rotation": c.pose_refine_lr_rotation,
           "--pose-refine-lr-translation": c.pose_refine_lr_translation, "--scene-scale": c.scene_scale,
           "--lighting-lr": c.lighting_lr, "--encoder-lr": c.encoder_lr,
           "--encoder-warmup-lr": c.encoder_warmup_lr, "--encoder-width": c.encoder_width,
           "--checkpoint-minutes": c.checkpoint_minutes}
    nonneg = {f"--lr.{f.name.replace('_', '-')}": getattr(c.lr, f.name) for f in dataclasses.fields(c.lr)}
    ints = {"--epochs": (c.epochs, 1), "--iterations": (c.iterations, 0), "--max-iterations": (c.max_iterations, 0),
            "--reference-iterations": (c.reference_iterations, 1), "--downscale": (c.downscale, 1),
            "--points-per-face": (c.points_per_face, 1), "--albedo-warmup": (c.albedo_warmup, 0),
            "--encoder-input-size": (c.encoder_input_size, 32), "--encoder-warmup-steps": (c.encoder_warmup_steps, 0),
            "--encoder-warmup-batch": (c.encoder_warmup_batch, 1), "--threads": (c.threads, 0),
            "--log-every": (c.log_every, 1), "--pose-refine-start": (c.pose_refine_start, -1),
            "--stop-after": (c.stop_after, 0), "--max-bad-steps": (c.max_bad_steps, 1)}
    if c.test_frames is not None:
        ints["--test-frames"] = (c.test_frames, 0)
    if not (math.isfinite(c.pose_refine_prior) and c.pose_refine_prior >= 0):
        raise HRAvatarError(f"--pose-refine-prior: {c.pose_refine_prior} is out of range; use 0 or a positive number")
    for opt, v in pos.items():
        if not (math.isfinite(v) and v > 0):
            raise HRAvatarError(f"{opt}: {v} is out of range; use a positive number")
    for opt, v in nonneg.items():
        if not (math.isfinite(v) and v >= 0):
            raise HRAvatarError(f"{opt}: {v} is out of range; use 0 or a positive number")
    for opt, (v, lo) in ints.items():
        if v < lo:
            raise HRAvatarError(f"{opt}: {v} is out of range; use {lo} or more")
    lw = c.loss
    if not (math.isfinite(lw.perceptual) and lw.perceptual >= 0):
        raise HRAvatarError(f"--loss.perceptual: {lw.perceptual} is out of range; use 0 or a positive number")
    if not (0.0 <= lw.perceptual_from <= 1.0):
        raise HRAvatarError(f"--loss.perceptual-from: {lw.perceptual_from} is out of range; use a fraction in [0, 1]")
    if lw.perceptual_crop < 0:
        raise HRAvatarError(f"--loss.perceptual-crop: {lw.perceptual_crop} is out of range; use 0 or more")
    if c.resume and c.overwrite:
        raise HRAvatarError("--resume and --overwrite contradict each other; pass one of them")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read ``checkpoint.pt`` (tensors only: ``weights_only``); a damaged or foreign file is one
    :class:`HRAvatarError` line that suggests ``--overwrite``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip/pickle/unpickler errors of many types
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise HRAvatarError(f"{path}: damaged checkpoint ({reason}); pass --overwrite to start over") from None
    need = ("version", "config", "avatar", "optimizer", "lighting", "rng", "iteration")
    if not isinstance(state, dict) or any(k not in state for k in need):
        raise HRAvatarError(f"{path}: not a hravatar checkpoint; pass --overwrite to start over")
    return state


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
        self.lpips_net = None
        if cfg.loss.perceptual:
            from hravatar.metrics import load_lpips

            self.lpips_net = load_lpips("alex", self.device)  # missing weights: one line naming fetch_assets
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        self.bad_steps = 0
        # the training frames hold linear values (the synthetic subject) rather than a video's sRGB ones
        self._linear_frames = (Path(cfg.subject) / "gt" / "synth.json").is_file()
        self._face_grid: tuple[Tensor, Tensor, Tensor] | None = None  # face_region_grid, built on first use
        self.elapsed = 0.0
        self.order: Tensor | None = None
        self.order_pos = 0
        self.init_info: dict[str, Any] = {}  # initial points and hair-init statistics (fresh runs)
        self.pose_offsets = self._make_pose_offsets()
        self.pose_start = self.warmup if cfg.pose_refine_start < 0 else cfg.pose_refine_start

    # ---- construction ------------------------------------------------------------------------
    def _make_pose_offsets(self) -> PoseOffsets | None:
        c = self.cfg
        if not c.pose_refine:
            return None
        return PoseOffsets(len(self.ds), c.pose_refine_lr_rotation, c.pose_refine_lr_translation, self.device)

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
        self.avatar = GaussianHead.from_head_model(self.head, self._avatar_config())
        if c.hair_init == "on":
            from hravatar.gaussians.hair_init import add_hair_init

            self.avatar, st = add_hair_init(self.avatar, self.head, self.ds)
            log.info("hair init: %d points from %d hair pixels", st["points"], st["hair_pixels"])
            self.init_info["hair_init"] = st
        self.init_info["initial_points"] = self.avatar.num_points
        self.avatar = self.avatar.to(self.device)
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
            return crops, pad_expression(self.ds.expression[idx], E), self.ds.pose[idx, 2]

        losses = warm_start(self.encoder, sample, len(self.ds), c.encoder_warmup_steps, c.encoder_warmup_batch,
                            c.encoder_warmup_lr, seed=c.seed, device=self.device)
        if not all(bool(torch.isfinite(p).all()) for p in self.encoder.parameters()):
            raise HRAvatarError(f"--encoder-warmup-lr {c.encoder_warmup_lr:g}: the encoder warm start diverged "
                                "(NaN/Inf weights); lower it or --encoder-warmup-steps")
        final = sum(losses[-5:]) / len(losses[-5:]) if losses else float("nan")
        log.info("expression encoder warm start: %d steps, loss %.4g -> %.4g (%.0f s)", len(losses),
                 losses[0] if losses else float("nan"), final, time.perf_counter() - t0)
        # the loss of predicting every frame's mean: an encoder that does not beat it ignores the image
        te, tj = pad_expression(self.ds.expression, E), self.ds.pose[:, 2]
        const = float(((te - te.mean(0)) ** 2).mean() + ((tj - tj.mean(0)) ** 2).mean())
        if losses and final > 0.5 * const:
            log.warning("the expression encoder's warm start ended at loss %.3g, no better than one constant "
                        "prediction for every frame (%.3g): it does not read the face; lower "
                        "--encoder-warmup-lr (now %g)", final, const, c.encoder_warmup_lr)

    @classmethod
    def create(cls, cfg: TrainConfig) -> Trainer:
        """A trainer for ``cfg``: resumed from ``OUTPUT/checkpoint.pt`` with ``--resume``."""
        from hravatar.io.atomic import check_writable

        check_config(cfg)
        out = Path(cfg.output)
        check_writable(out, "folder")
        ck = out / "checkpoint.pt"
        if cfg.resume:
            if not ck.is_file():
                raise HRAvatarError(f"{ck}: no checkpoint to resume from; run without --resume")
            state = load_checkpoint(ck)
            saved = from_dict(TrainConfig, state["config"])
            saved = dataclasses.replace(saved, resume=True, stop_after=cfg.stop_after, quiet=cfg.quiet,
                                        threads=cfg.threads)
            t = cls(saved)
            try:
                t._restore(state)
            except HRAvatarError:
                raise
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
                raise HRAvatarError(f"{ck}: damaged checkpoint ({type(e).__name__}: {str(e)[:80]}); "
                                    "pass --overwrite to start over") from None
            bad = t.non_finite_state()
            if bad:
                raise HRAvatarError(f"{ck}: the checkpoint holds NaN/Inf ({bad[0]}, ...); "
                                    "pass --overwrite to start over")
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
            "pose_offsets": None if self.pose_offsets is None else self.pose_offsets.state_dict(),
        }

    def non_finite_state(self) -> list[str]:
        """Names of the model, lighting, encoder and optimizer tensors holding NaN or Inf (empty: all finite)."""
        named: list[tuple[str, Tensor]] = [(f"avatar.{k}", v) for k, v in self.avatar.params.items()]
        named += [(f"lighting.{k}", v) for k, v in self.lighting.state_dict().items()]
        if self.pose_offsets is not None:
            named += [(f"pose_offsets.{k}", v) for k, v in self.pose_offsets.state_dict().items()]
        if self.encoder is not None:
            named += [(f"encoder.{k}", v) for k, v in self.encoder.state_dict().items()]
        for oname, o in (("optimizer", self.opt), ("light_opt", self.light_opt), ("enc_opt", self.enc_opt)):
            if o is None:
                continue
            for i, st in enumerate(o.state.values()):
                named += [(f"{oname}.{i}.{k}", v) for k, v in st.items() if torch.is_tensor(v)]
        return [k for k, v in named if v.is_floating_point() and not bool(torch.isfinite(v).all())]

    def save_checkpoint(self) -> Path | None:
        """Write ``OUTPUT/checkpoint.pt`` atomically (and the curves); never with non-finite state:
        then nothing is written (the previous checkpoint stays) and ``None`` is returned."""
        path = self.out / "checkpoint.pt"
        bad = self.non_finite_state()
        if bad:
            log.error("not writing %s: %d tensors hold NaN/Inf (%s, ...); %s", path, len(bad), bad[0],
                      "the previous checkpoint is kept" if path.is_file() else "no checkpoint exists")
            return None
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
        if self.pose_offsets is not None and st.get("pose_offsets") is not None:
            self.pose_offsets.load_state_dict(st["pose_offsets"])

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

    def step(self, it: int) -> dict[str, float] | None:
        """One training iteration; returns the loss terms, or ``None`` for a skipped (non-finite) step."""
        c, w = self.cfg, self.cfg.loss
        fi = self._next_frame()
        fr = downscale_frame(self.ds[fi], c.downscale).to(self.device)
        for g in self.opt.param_groups:
            if g.get("name") == "means":
                g["lr"] = position_lr(it, self.total, c.lr, c.scene_scale)
        if self.encoder is not None:
            self.encoder.train()
            from hravatar.encoder import freeze_batchnorm

            freeze_batchnorm(self.encoder)
        mode = self._mode(it)
        wc = colour_weights_at(w, it, self.total)  # the colour priors' weights at this iteration
        p, jaw = frame_params(fr, self.avatar.num_expr, self.encoder)
        refine = self.pose_offsets is not None and it >= self.pose_start
        if refine:
            off = self.pose_offsets.row(fi)
            p = apply_pose_offset(p, off)
        bg, target = None, fr.image
        if c.train_background == "random":
            bg = torch.rand(3).to(self.device)
            target = fr.image + (1 - fr.mask) * bg
        out = render(self.avatar, self.lighting, p, Camera(fr.viewmat, fr.K, self.width, self.height), mode,
                     background=bg, backend=c.backend)
        self.strategy.step_pre_backward(out.meta)
        img = clip_to_saturation(out.image[0], target, w.saturation)
        terms: dict[str, Tensor] = {"photo": photometric_loss(img, target, w.l1, w.dssim)}
        if w.silhouette and bool((fr.mask < 1).any()):
            terms["silhouette"] = silhouette_loss(out.alpha[0], fr.mask, w.silhouette)
        if w.perceptual and it >= int(w.perceptual_from * self.total):
            terms["perceptual"] = perceptual_loss(img, target, self.lpips_net, w.perceptual, w.perceptual_crop)
        if jaw is not None and w.jaw:
            terms["jaw"] = jaw_loss(jaw, fr.pose[None, 2], w.jaw)
        if mode != "color" and w.normal:
            from hravatar.shading.normals import normals_from_depth

            nd, valid = normals_from_depth(out.depth, fr.K[None], fr.viewmat[None], out.alpha)
            m = valid.to(nd.dtype) * fr.mask[None]
            terms["normal"] = normal_consistency_loss(nd, out.normal, m, w.normal)
        if mode != "color" and fr.albedo is not None and w.albedo:
            terms["albedo"] = albedo_prior_loss(out.albedo[0], fr.albedo, fr.mask, w.albedo)
        if mode == "pbr" and w.roughness_tv:
            terms["tv"] = tv_loss(out.roughness[0], fr.mask, w.roughness_tv)
        if mode != "color" and fr.albedo is None:
            terms.update(colour_prior_terms(wc, self.lighting, out, fr.mask, mode))
        if refine and c.pose_refine_prior:
            terms["pose_prior"] = pose_prior_loss(off, c.pose_refine_prior)
        loss = sum(terms.values())
        opts = [o for o in (self.opt, self.light_opt, self.enc_opt) if o is not None]
        if self.pose_offsets is not None:
            opts.append(self.pose_offsets)
        for o in opts:
            o.zero_grad(set_to_none=True) if isinstance(o, torch.optim.Optimizer) else o.zero_grad()
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            gsum = sum((p.grad.sum() for o in opts if isinstance(o, torch.optim.Optimizer) for g in o.param_groups
                        for p in g["params"] if p.grad is not None), torch.zeros((), device=self.device))
            finite = bool(torch.isfinite(gsum)) and (self.pose_offsets is None or self.pose_offsets.grad_finite())
        if not finite:
            for o in opts:
                o.zero_grad(set_to_none=True) if isinstance(o, torch.optim.Optimizer) else o.zero_grad()
            return None
        for o in opts:
            if isinstance(o, PoseOffsets):
                if refine:
                    o.step(fi)
            else:
                o.step()
        if mode == "pbr" and fr.albedo is None:
            self._apply_light_gauges(wc)
        self.strategy.step_post_backward(self.avatar, self.opt, it, out.meta, self.width, self.height)
        for o in opts:
            o.zero_grad(set_to_none=True) if isinstance(o, torch.optim.Optimizer) else o.zero_grad()
        with torch.no_grad():
            p = float(psnr(img.detach().clamp(0, 1), target)[0])
        rec = {k: float(v.detach()) for k, v in terms.items()}
        rec.update(loss=float(loss.detach()), psnr=p, points=self.avatar.num_points, mode=mode)
        return rec

    @torch.no_grad()
    def _apply_light_gauges(self, w: LossWeights) -> None:
        """The albedo / light gauges that leave the image unchanged, after a shaded step of a subject
        without pseudo albedos, in this order: the light's colour cast into the albedo, the face
        albedo towards the skin locus, the light's level (:mod:`hravatar.light_priors`); then a light
        sunk deep into the sigmoid's tail is renormalised (:func:`~hravatar.light_priors.renormalise_light_tail`)."""
        albedo = self.avatar.params["albedo"].data
        if w.light_cast_transfer:
            ref = lp.specular_cast(self.lighting) ** w.light_cast_specular if w.light_cast_specular else None
            lp.transfer_light_cast(albedo, self.lighting, w.light_cast_transfer, reference=ref)
        if w.skin_locus:
            lp.transfer_skin_cast(albedo, self.lighting, self._face_weights(), w.skin_locus,
                                  srgb_frames=not self._linear_frames)
        if w.light_level or w.light_level_specular:
            spec = w.light_level_specular
            level = lp.specular_light_level(self.lighting) if spec else w.light_level
            lp.set_light_level(albedo, self.lighting, level, spec or 1.0)
        lp.renormalise_light_tail(self.lighting)

    @torch.no_grad()
    def _face_weights(self) -> Tensor:
        """``[N]`` opacity of the points whose canonical position lies nearest to a vertex of the head
        model's face region (skin: lips and eyes left out), 0 elsewhere.

        A function of the current parameters only (a lookup in a grid built once from the head
        model), so a resumed run computes exactly what an uninterrupted one does."""
        if self._face_grid is None:
            self._face_grid = face_region_grid(self.head, self.device)
        return face_point_weights(self._face_grid, self.avatar.params["means"].detach(),
                                  self.avatar.params["opacities"].detach())

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
                        # skipped steps change nothing, so the state is the last good one: save it
                        saved = self.save_checkpoint() is not None
                        log.error("stopping: %d non-finite steps in a row; %s (try a lower learning rate)",
                                  self.bad_steps, "the checkpoint keeps the last good state" if saved
                                  else "the state itself is not finite, so no checkpoint was written")
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
        if status == 0 and self.save_checkpoint() is None:
            raise HRAvatarError(f"{self.out}: training diverged (NaN/Inf in the model); nothing was written; "
                                "try a lower learning rate")
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

        save_gaussians(self.avatar, self.out / "avatar.safetensors", extra_meta={"trainer": "hravatar.train"})
        with atomic_path(self.out / "lighting.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.lighting.state_dict().items()}, str(tmp))
        if self.encoder is not None:
            with atomic_path(self.out / "encoder.safetensors") as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()},
                          str(tmp), metadata={"backbone": self.cfg.encoder, "num_expr": str(self.avatar.num_expr),
                                              "input_size": str(self.cfg.encoder_input_size),
                                              "width": str(self.cfg.encoder_width)})
        if self.pose_offsets is not None:
            self.pose_offsets.save(self.out / POSE_OFFSETS_FILE, self.ds.frame_indices)
        last = self.history[-min(len(self.history), 10):]
        info = {
            "subject": str(Path(self.cfg.subject).resolve()),
            "head_model": self.avatar.head_name,
            "test_frames": self.cfg.test_frames,
            "train_frames": len(self.ds),
            "image_size": [self.height, self.width],
            "train_focal_px": float(self.ds[0].K[0, 0]) / self.cfg.downscale,
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
            "pose_refine": None if self.pose_offsets is None else {
                "start_iteration": self.pose_start,
                "frames_updated": int((self.pose_offsets.steps > 0).sum()),
                **offset_stats(self.pose_offsets.offsets)},
            **self.init_info,
        }
        atomic_write_text(self.out / "training.json", json.dumps(info, indent=1))
        log.info("trained %d iterations in %.0f s: %d points, PSNR %.2f dB (train frames, last logs) -> %s",
                 self.iteration, self.elapsed, self.avatar.num_points, info["final_psnr"] or math.nan, self.out)


def pose_prior_loss(offset: Tensor, weight: float) -> Tensor:
    """``weight`` x (|rotation offset|^2 in degrees^2 + |translation offset|^2 in millimetres^2) of one
    frame's ``offset [6]`` (radians, metres): a weak pull of the per-frame pose offsets towards zero."""
    r = offset[:3] * (180.0 / math.pi)
    t = offset[3:] * 1000.0
    return weight * (r.square().sum() + t.square().sum())


def face_region_grid(head: Any, device: Any, n: int = 48) -> tuple[Tensor, Tensor, Tensor]:
    """``(grid [n,n,n] bool, lo [3], hi [3])``: for cells of the head model's bounding box (grown
    by 10%), whether the template vertex nearest to the cell's centre is in the ``face`` region
    and not in ``lips`` / ``eyes`` (all False when the model has no face region)."""
    vt = head.v_template.detach().float().to(device)
    lo, hi = vt.amin(0), vt.amax(0)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    r = head.regions
    face = r.get("face")
    if face is None or not bool(face.any()):
        return torch.zeros(n, n, n, dtype=torch.bool, device=device), lo, hi
    face = face.to(device)
    for k in ("lips", "eyes"):
        if k in r:
            face = face & ~r[k].to(device)
    t = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n
    axes = [lo[i] + t * (hi[i] - lo[i]) for i in range(3)]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    nearest = torch.cat([torch.cdist(centres[i:i + 8192], vt).argmin(1) for i in range(0, len(centres), 8192)])
    return face[nearest].reshape(n, n, n), lo, hi


def face_point_weights(face_grid: tuple[Tensor, Tensor, Tensor], means: Tensor, opacities: Tensor) -> Tensor:
    """``[N]`` opacity of the points whose position (``means [N,3]``, canonical) falls in a face cell
    of ``face_grid`` (:func:`face_region_grid`), 0 elsewhere; ``opacities`` are pre-sigmoid."""
    grid, lo, hi = face_grid
    n = grid.shape[0]
    ijk = ((means - lo) / (hi - lo) * n).long().clamp(0, n - 1)
    return torch.sigmoid(opacities.reshape(-1)) * grid[ijk[:, 0], ijk[:, 1], ijk[:, 2]]


def colour_weights_at(w: LossWeights, it: int, total: int) -> LossWeights:
    """``w`` with the shared light colour (``light_cast_specular``, ``light_specular_colour``)
    switched off from iteration ``light_specular_until * total`` on (grey world and a free
    specular light for the rest of the run); ``w`` itself before that or when it never ends."""
    if w.light_specular_until >= 1 or it < w.light_specular_until * total:
        return w
    return dataclasses.replace(w, light_cast_specular=0.0, light_specular_colour=0.0)


def colour_prior_terms(w: LossWeights, lighting: Any, out: Any, mask: Tensor, mode: str) -> dict[str, Tensor]:
    """The albedo / light colour priors of :mod:`hravatar.light_priors` with non-zero weight in ``w``.

    Light priors act in the ``pbr`` mode only (the warm-up does not use the light); the skin prior
    on the albedo also during the warm-up. ``out``: the render; ``mask [H,W,1]``: the foreground.
    """
    terms: dict[str, Tensor] = {}
    if mode == "pbr" and (w.light_exposure or w.light_neutral or w.light_specular_wb or w.light_specular_colour):
        e = lp.mean_front_irradiance(lighting)
        if w.light_exposure:
            terms["exposure"] = lp.exposure_loss(e, weight=w.light_exposure)
        if w.light_neutral:
            terms["neutral"] = lp.neutral_light_loss(e, w.light_neutral)
        if w.light_specular_wb:
            terms["spec_wb"] = lp.specular_white_balance_loss(e, lp.mean_front_specular(lighting), w.light_specular_wb)
        if w.light_specular_colour:
            terms["spec_colour"] = lp.specular_colour_loss(lp.mean_front_specular(lighting), e, w.light_specular_colour,
                                                           w.light_specular_colour_tolerance)
    if w.skin_albedo:
        a = lp.mean_albedo(out.albedo[0], mask * (out.alpha[0] > 0.5), out.alpha[0])
        terms["skin"] = lp.skin_albedo_loss(a, w.skin_albedo)
    return terms


def train(cfg: TrainConfig) -> int:
    """Train (or resume) the avatar described by ``cfg``; returns an exit status (0 = done)."""
    return Trainer.create(cfg).run()

