"""A trained avatar folder at run time: :func:`load_avatar` -> :class:`Avatar`.

An avatar folder is what ``hravatar train`` writes::

    AVATAR/avatar.safetensors   AVATAR/lighting.safetensors   AVATAR/encoder.safetensors (optional)
    AVATAR/train_config.yaml    AVATAR/training.json          (+ checkpoint.pt, curves)

plus, optionally, ``AVATAR/reference.safetensors`` (written by ``hravatar edit --save``): the
identity shape, a camera and a reference pose, used when the subject folder the avatar was trained
on is no longer where ``training.json`` says. Loading never imports the trainer: the few training
settings rendering needs are read from ``train_config.yaml`` as plain data
(:class:`TrainingSettings`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hravatar.avatar.params import Camera, FrameParams, frame_params, pad_expression
from hravatar.avatar.render import Mode, RenderOutput, footprint_eps2d, render
from hravatar.errors import HRAvatarError
from hravatar.progress import log

REFERENCE_FILE = "reference.safetensors"
DEFAULT_FPS = 25.0


@dataclass
class TrainingSettings:
    """The settings of ``train_config.yaml`` that rendering a trained avatar depends on."""

    subject: Path | None = None
    """subject folder the avatar was trained on"""
    test_frames: int | None = None
    """frames held out at the end of the subject (None: the default split)"""
    downscale: int = 1
    """the subject's images were downscaled by this factor for training"""
    no_pbr: bool = False
    """no-PBR ablation: plain colours, no relighting"""
    encoder: str = "mobilenet_v2"
    encoder_width: float = 1.0
    encoder_input_size: int = 224
    flame_path: Path | None = None

    @classmethod
    def read(cls, path: Path) -> TrainingSettings:
        """Read the fields above from a ``train_config.yaml`` (other settings are ignored)."""
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise HRAvatarError(f"{path}: unreadable training config ({str(e).splitlines()[0]}); "
                                "copy the avatar folder again or retrain") from None
        if not isinstance(data, dict):
            raise HRAvatarError(f"{path}: not a training config; copy the avatar folder again or retrain")
        s = cls()
        try:
            for k, conv in (("test_frames", int), ("downscale", int), ("no_pbr", bool), ("encoder", str),
                            ("encoder_width", float), ("encoder_input_size", int)):
                if data.get(k) is not None:
                    setattr(s, k, conv(data[k]))
            for k in ("subject", "flame_path"):
                if data.get(k):
                    setattr(s, k, Path(str(data[k])))
        except (TypeError, ValueError) as e:
            raise HRAvatarError(f"{path}: bad training setting ({e}); copy the avatar folder again "
                                "or retrain") from None
        return s


@dataclass
class Reference:
    """What an avatar needs besides its Gaussians to be rendered like its subject.

    shape ``[1,S]`` identity; ``camera`` (the subject's camera at the trained resolution);
    ``params``: a reference frame's parameters (the first test frame, expression from the encoder);
    ``source``: where it came from (``"subject"``, ``"reference file"`` or ``"default"``).
    """

    shape: Tensor
    camera: Camera
    params: FrameParams
    source: str
    fps: float = DEFAULT_FPS


def load_state(module: nn.Module, path: Path, device: torch.device) -> None:
    """Load a safetensors state dict into ``module``, checking every tensor's name, shape, kind and
    finiteness first (:func:`hravatar.io.state.load_state_file`).

    Raises:
        HRAvatarError: one line naming the file and the first missing, unexpected, mis-shaped or
            non-finite tensor.
    """
    from hravatar.io.state import load_state_file

    load_state_file(module, path, path.stem, device)


def _load_encoder(path: Path, num_expr: int, settings: TrainingSettings, device: torch.device,
                  expr_names: list[str] | None = None) -> Any:
    from safetensors import safe_open

    from hravatar.encoder import ExpressionEncoder, jaw_expression_indices

    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except Exception as e:  # noqa: BLE001
        raise HRAvatarError(f"{path}: not a safetensors file ({str(e).splitlines()[0][:160]})") from None
    try:
        n = int(md.get("num_expr", num_expr))
        width = float(md.get("width", settings.encoder_width))
        size = int(md.get("input_size", settings.encoder_input_size))
    except ValueError as e:
        raise HRAvatarError(f"{path}: damaged encoder metadata ({e}); copy the avatar folder again "
                            "or retrain") from None
    if n != num_expr:
        raise HRAvatarError(f"{path}: encoder predicts {md['num_expr']} expressions, the avatar has {num_expr}; "
                            "the file does not belong to this avatar")
    try:
        enc = ExpressionEncoder(num_expr, backbone=md.get("backbone", settings.encoder), width_mult=width,
                                pretrained=False, input_size=size,
                                frozen_expressions=jaw_expression_indices(expr_names or [])).to(device)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise HRAvatarError(f"{path}: encoder settings in the file are unusable ({str(e)[:80]}); retrain") from None
    load_state(enc, path, device)
    return enc.eval()


class Avatar:
    """A trained avatar folder, loaded for rendering (see :func:`load_avatar`).

    Attributes: ``path``; ``gaussians`` (:class:`~hravatar.gaussians.GaussianHead`); ``lighting``
    (the learned :class:`~hravatar.shading.lighting.LearnableLighting`); ``encoder`` (or ``None``);
    ``settings`` (:class:`TrainingSettings`); ``info`` (``training.json``); ``device``. Nothing
    requires gradients.
    """

    def __init__(self, path: Path, gaussians: Any, lighting: Any, encoder: Any, settings: TrainingSettings,
                 info: dict[str, Any], device: torch.device) -> None:
        self.path = Path(path)
        self.gaussians = gaussians
        self.lighting = lighting
        self.encoder = encoder
        self.settings = settings
        self.info = info
        self.device = device
        self._subjects: dict[str, Any] = {}
        self._reference: Reference | None = None
        self._head: Any = None
        if self.encoder is not None:
            self.encoder.eval()
            self.encoder.requires_grad_(False)
        self.lighting.requires_grad_(False)
        self.gaussians.requires_grad_(False)

    # -- facts ---------------------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        """``"pbr"`` (shaded avatar) or ``"color"`` (no-PBR ablation: relighting is impossible)."""
        return "color" if self.settings.no_pbr else "pbr"

    @property
    def num_expr(self) -> int:
        return self.gaussians.num_expr

    @property
    def expr_names(self) -> list[str]:
        names = list(self.gaussians.expr_names)
        return names if len(names) == self.num_expr else [f"expr{i}" for i in range(self.num_expr)]

    @property
    def subject_path(self) -> Path | None:
        p = self.info.get("subject") or (str(self.settings.subject) if self.settings.subject else None)
        return Path(p) if p else None

    def has_subject(self) -> bool:
        p = self.subject_path
        return p is not None and p.is_dir()

    def subject(self, split: str = "test") -> Any:
        """The training subject's :class:`~hravatar.data.SubjectDataset` for ``split`` (cached)."""
        from hravatar.data import load_subject

        if split not in self._subjects:
            p = self.subject_path
            if p is None or not p.is_dir():
                raise HRAvatarError(f"{self.path}: its subject folder {p} is missing; pass --subject SUBJECT "
                                    "(the folder it was trained on)")
            self._subjects[split] = load_subject(p, split, self.settings.test_frames)  # type: ignore[arg-type]
        return self._subjects[split]

    def set_subject(self, path: Path) -> None:
        """Use ``path`` as the subject folder (when it moved since training)."""
        self.info = dict(self.info, subject=str(Path(path).resolve()))
        self._subjects.clear()
        self._reference = None

    def head_model(self) -> Any:
        """The head model the avatar was trained on (for regions); loaded on first use."""
        if self._head is None:
            from hravatar.head import HeadModel, load_head_model

            g = self.gaussians
            if g.rig == "triangle":
                self._head = g.head_model()
            elif self.subject_path is not None and (self.subject_path / "head_model.safetensors").is_file():
                self._head = HeadModel.load(self.subject_path / "head_model.safetensors").to(self.device)
            else:
                name = g.head_name.lower()
                if not (name.startswith("open") or "flame" in name):
                    raise HRAvatarError(f"{self.path}: head model {g.head_name!r} is not available "
                                        "(its subject folder held it); pass --subject")
                self._head = load_head_model("flame" if "flame" in name else "open",
                                             self.settings.flame_path, device=self.device)
        return self._head

    # -- frames and parameters -------------------------------------------------------------------
    def frame(self, ds: Any, i: int) -> Any:
        """Frame ``i`` of a subject dataset, downscaled like training, on the avatar's device."""
        from hravatar.data import downscale_frame

        return downscale_frame(ds[i], self.settings.downscale).to(self.device)

    @torch.no_grad()
    def encode(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        """Expression ``[B,E]`` and jaw ``[B,3]`` from face crops ``[B,S,S,3]`` (needs an encoder)."""
        if self.encoder is None:
            raise HRAvatarError(f"{self.path}: this avatar has no expression encoder (trained with --encoder none); "
                                "use tracked parameters")
        e, j = self.encoder(crops.to(self.device))
        return pad_expression(e, self.num_expr), j

    @torch.no_grad()
    def frame_params(self, fr: Any, use_encoder: bool = True) -> FrameParams:
        """The avatar's inputs for a subject frame (:func:`hravatar.avatar.params.frame_params`):
        tracked shape, pose, translation; expression and jaw from the encoder when available."""
        p, _ = frame_params(fr, self.num_expr, self.encoder if use_encoder else None)
        return p

    @property
    def reference(self) -> Reference:
        """The reference identity, camera and pose (see :class:`Reference`)."""
        if self._reference is None:
            self._reference = self._make_reference()
        return self._reference

    def _make_reference(self) -> Reference:
        if self.has_subject():
            ds = self.subject("test") if len(self.subject("test")) else self.subject("all")
            fr = self.frame(ds, 0)
            H, W = fr.image.shape[:2]
            return Reference(fr.shape[None].clone(), Camera(fr.viewmat.clone(), fr.K.clone(), W, H),
                             self.frame_params(fr), "subject", subject_fps(ds))
        f = self.path / REFERENCE_FILE
        if f.is_file():
            from safetensors.torch import load_file

            t = load_file(str(f), device=str(self.device))
            size = [int(x) for x in t["image_size"].tolist()]
            p = FrameParams(t["shape"], pad_expression(t["expression"], self.num_expr), t["pose"], t["translation"])
            return Reference(t["shape"], Camera(t["viewmat"], t["K"], size[1], size[0]), p, "reference file",
                             float(t["fps"]) if "fps" in t else DEFAULT_FPS)
        log.warning("%s: subject folder %s not found and no %s: rendering with a default camera and zero "
                    "identity shape (pass --subject to fix)", self.path, self.subject_path, REFERENCE_FILE)
        dev = self.device
        S, E = self.gaussians.num_shape, self.num_expr
        size = int((self.info.get("image_size") or [512, 512])[0])
        from hravatar.render import intrinsics, look_at

        vm = look_at(torch.tensor([0.0, 0.0, 0.6]), torch.zeros(3), device=dev)
        K = intrinsics(24.0, size, size, device=dev)
        p = FrameParams(torch.zeros(1, S, device=dev), torch.zeros(1, E, device=dev),
                        torch.zeros(1, 5, 3, device=dev), torch.zeros(1, 3, device=dev))
        return Reference(p.shape, Camera(vm, K, size, size), p, "default")

    @property
    def train_focal(self) -> float | None:
        """Focal length (pixels) of the images the avatar was trained on, or ``None`` if unknown.

        From ``training.json`` (``train_focal_px``), else the reference camera (the subject's, at
        the trained resolution); used by :meth:`render` to keep the training's pixel footprint
        (:func:`~hravatar.avatar.render.footprint_eps2d`)."""
        f = self.info.get("train_focal_px")
        if f:
            return float(f)
        if self.has_subject() or (self.path / REFERENCE_FILE).is_file():
            return float(self.reference.camera.K[0, 0])
        return None

    def camera(self, size: int = 0) -> Camera:
        """The reference camera at an output size (longer side ``size`` px; 0 = trained resolution)."""
        return self.reference.camera.resized(size)

    def save_reference(self, path: Path) -> None:
        """Write :data:`REFERENCE_FILE` into the avatar folder ``path`` (atomic)."""
        from safetensors.torch import save_file

        from hravatar.io.atomic import atomic_path

        r = self.reference
        t = {"shape": r.shape, "expression": r.params.expression, "pose": r.params.pose,
             "translation": r.params.translation, "viewmat": r.camera.viewmat, "K": r.camera.K,
             "image_size": torch.tensor([r.camera.height, r.camera.width]), "fps": torch.tensor(r.fps)}
        with atomic_path(Path(path) / REFERENCE_FILE) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in t.items()}, str(tmp))

    @torch.no_grad()
    def head_center(self, p: FrameParams | None = None) -> Tensor:
        """``[3]`` opacity-weighted centre of the posed Gaussians (world metres)."""
        p = p or self.reference.params
        g = self.gaussians.deform(p.shape, p.expression, p.pose, p.translation)
        w = g.opacities[0][:, None]
        return (g.means[0] * w).sum(0) / w.sum().clamp_min(1e-8)

    # -- rendering -------------------------------------------------------------------------------
    @torch.no_grad()
    def render(
        self,
        params: FrameParams,
        camera: Camera,
        lighting: Any = None,
        materials: dict[str, Tensor] | None = None,
        background: Tensor | float | None = None,
        mode: Mode | None = None,
        backend: str = "auto",
        eps2d: float | None = None,
    ) -> RenderOutput:
        """:func:`hravatar.avatar.render.render` of this avatar without autograd.

        Args:
            lighting: any :class:`~hravatar.shading.lighting.Lighting` (default: the learned one).
            materials: per-point overrides ``{"albedo" [N,3], "roughness" [N,1], "f0" [N,1]}`` (edits).
            background: ``[1,H,W,3]``, ``[3]`` or a scalar in the image's units (default black).
            mode: ``"pbr"``, ``"albedo"`` or ``"color"`` (default: the avatar's).
            eps2d: screen-space low-pass (pixels^2); ``None``: the training's pixel footprint at
                this camera's focal length (:func:`~hravatar.avatar.render.footprint_eps2d`), so a
                render larger than the training images is not riddled with sub-pixel Gaussians.
        """
        if eps2d is None:
            eps2d = footprint_eps2d(float(camera.K[0, 0]), self.train_focal)
        return render(self.gaussians, self.lighting if lighting is None else lighting, params, camera,
                      mode or self.mode, background, materials, backend, eps2d=eps2d)

    @torch.no_grad()
    def render_frame(self, fr: Any, use_encoder: bool = True, backend: str = "auto",
                     mode: Mode | None = None, eps2d: float | None = None) -> RenderOutput:
        """Render a (device-resident, downscaled) subject frame with its tracked camera (self-reenactment);
        ``eps2d`` as :meth:`render`."""
        return self.render(self.frame_params(fr, use_encoder), Camera.of_frame(fr), mode=mode, backend=backend,
                           eps2d=eps2d)


def subject_fps(ds: Any) -> float:
    """Frame rate of a subject's video (manifest ``settings.fps`` or ``source.fps``), else 25."""
    man = ds.meta.get("manifest", {}) if isinstance(ds.meta, dict) else {}
    for d in (man.get("settings"), man.get("source"), man, ds.meta):
        v = d.get("fps") if isinstance(d, dict) else None
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    return DEFAULT_FPS


def load_avatar(path: str | Path, device: str | torch.device | None = "auto",
                subject: str | Path | None = None) -> Avatar:
    """Load an avatar folder written by ``hravatar train``.

    Args:
        path: the avatar folder.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, a device, or ``None`` (CPU).
        subject: the subject folder, when it is not where ``training.json`` says.
    Raises:
        HRAvatarError: (one line naming the file, and the tensor where one is wrong) when the folder
            is missing, unfinished, or not a compatible avatar.
    """
    from hravatar.device import resolve_device
    from hravatar.gaussians import load_gaussians
    from hravatar.shading.lighting import LearnableLighting

    root = Path(path)
    if not root.exists():
        raise HRAvatarError(f"{root}: avatar folder not found; train one with `hravatar train SUBJECT -o {root}`")
    if not root.is_dir():
        raise HRAvatarError(f"{root}: not a folder; pass the avatar folder written by `hravatar train`")
    if not (root / "avatar.safetensors").is_file():
        unfinished = (root / "checkpoint.pt").is_file()
        hint = " (training has not finished; run `hravatar train --resume`)" if unfinished else ""
        raise HRAvatarError(f"{root}: no avatar.safetensors{hint}")
    for f in ("lighting.safetensors", "train_config.yaml"):
        if not (root / f).is_file():
            raise HRAvatarError(f"{root}: incomplete avatar folder (no {f}); copy the whole folder or retrain")
    if device is None:
        dev = torch.device("cpu")
    else:
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    settings = TrainingSettings.read(root / "train_config.yaml")
    try:
        gaussians = load_gaussians(root / "avatar.safetensors", device=dev)
    except HRAvatarError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt or incompatible files: one line for the user
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HRAvatarError(f"{root / 'avatar.safetensors'}: not a compatible avatar ({msg[:200]})") from None
    lighting = LearnableLighting().to(dev)
    load_state(lighting, root / "lighting.safetensors", dev)
    enc = None
    if (root / "encoder.safetensors").is_file():
        enc = _load_encoder(root / "encoder.safetensors", gaussians.num_expr, settings, dev, gaussians.expr_names)
    info: dict[str, Any] = {}
    if (root / "training.json").is_file():
        try:
            info = json.loads((root / "training.json").read_text())
        except (OSError, ValueError) as e:
            raise HRAvatarError(f"{root / 'training.json'}: unreadable ({str(e)[:120]}); "
                                "copy the avatar folder again") from None
    av = Avatar(root, gaussians, lighting, enc, settings, info, dev)
    if subject is not None:
        if not Path(subject).is_dir():
            raise HRAvatarError(f"{subject}: subject folder not found")
        av.set_subject(Path(subject))
    return av



__all__ = ["DEFAULT_FPS", "REFERENCE_FILE", "Avatar", "Reference", "TrainingSettings", "load_avatar", "load_state",
           "subject_fps"]
