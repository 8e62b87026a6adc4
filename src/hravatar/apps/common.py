"""What every avatar application shares: loading an avatar folder, cameras, rendering, writing.

An avatar folder is what ``hravatar train`` writes (see :mod:`hravatar.train`)::

    AVATAR/avatar.safetensors   AVATAR/lighting.safetensors   AVATAR/encoder.safetensors (optional)
    AVATAR/train_config.yaml    AVATAR/training.json          (+ checkpoint.pt, curves)

plus, optionally, ``AVATAR/reference.safetensors`` (written by ``hravatar edit --save``): the
identity shape, a camera and a reference pose, used when the subject folder the avatar was trained
on is no longer where ``training.json`` says.

Public API::

    la = load_avatar("AVATAR", device=None)          # LoadedAvatar (HRAvatarError if unusable)
    la.avatar, la.lighting, la.encoder, la.config, la.info
    la.subject(split="test")                         # SubjectDataset of the training subject (or error)
    la.reference                                     # Reference: shape, camera, size, a neutral-ish pose
    p = la.frame_params(frame)                       # FrameParams from a FrameSample (encoder's expression)
    cam = la.camera(size=0)                          # Camera (viewmat, K, width, height) at an output size
    out = render(la, p, cam, lighting=None, materials=None, background=None)   # dict, see render()
    img = to_uint8(out["image"][0])
    write_frames("out.mp4", frames, fps=25, total=n)  # mp4 (H.264) or a single .png, atomically
    env = load_environment("MAP.hdr", la, rotation=0, exposure=0, auto_exposure=True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hravatar.errors import HRAvatarError
from hravatar.progress import log

REFERENCE_FILE = "reference.safetensors"
DEFAULT_FPS = 25.0


# ---- parameters and cameras ---------------------------------------------------------------------
@dataclass
class FrameParams:
    """Head-model parameters of one rendered frame (batch of one, on the avatar's device).

    shape ``[1,S]``, expression ``[1,E]``, pose ``[1,5,3]`` axis-angle radians (global, neck, jaw,
    eye_l, eye_r), translation ``[1,3]`` metres.
    """

    shape: Tensor
    expression: Tensor
    pose: Tensor
    translation: Tensor

    def clone(self) -> FrameParams:
        return FrameParams(*(t.clone() for t in (self.shape, self.expression, self.pose, self.translation)))


@dataclass
class Camera:
    """One pinhole camera: ``viewmat [4,4]`` OpenCV world-to-camera, ``K [3,3]`` pixels, image size."""

    viewmat: Tensor
    K: Tensor
    width: int
    height: int

    def resized(self, size: int) -> Camera:
        """The same view with the longer image side ``size`` pixels (0: unchanged)."""
        if not size or size == max(self.width, self.height):
            return self
        s = size / max(self.width, self.height)
        w, h = max(1, int(round(self.width * s))), max(1, int(round(self.height * s)))
        K = self.K.clone()
        K[0] = K[0] * (w / self.width)
        K[1] = K[1] * (h / self.height)
        K[2, 2] = 1.0
        return Camera(self.viewmat, K, w, h)

    def with_viewmat(self, viewmat: Tensor) -> Camera:
        return Camera(viewmat.to(self.K), self.K, self.width, self.height)


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


def _pad(x: Tensor, n: int) -> Tensor:
    return F.pad(x, (0, max(0, n - x.shape[-1])))[..., :n]


# ---- the loaded avatar --------------------------------------------------------------------------
class LoadedAvatar:
    """A trained avatar folder, loaded for rendering (see :func:`load_avatar`).

    Attributes: ``path``; ``avatar`` (:class:`~hravatar.gaussians.GaussianHead`); ``lighting`` (the
    learned :class:`~hravatar.shading.lighting.LearnableLighting`); ``encoder`` (or ``None``);
    ``config`` (the :class:`~hravatar.train.TrainConfig`); ``info`` (``training.json``); ``device``.
    """

    def __init__(self, path: Path, trained: Any, device: torch.device) -> None:
        self.path = path
        self.trained = trained
        self.avatar = trained.avatar
        self.lighting = trained.lighting
        self.encoder = trained.encoder
        self.config = trained.config
        self.info = trained.info
        self.device = device
        self._subjects: dict[str, Any] = {}
        self._reference: Reference | None = None
        self._head: Any = None
        if self.encoder is not None:
            self.encoder.eval()
        self.lighting.requires_grad_(False)
        self.avatar.requires_grad_(False)

    # -- facts ---------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """``"pbr"`` (shaded avatar) or ``"color"`` (no-PBR ablation: relighting is impossible)."""
        return self.trained.mode

    @property
    def expr_names(self) -> list[str]:
        names = list(self.avatar.expr_names)
        return names if len(names) == self.avatar.num_expr else [f"expr{i}" for i in range(self.avatar.num_expr)]

    @property
    def subject_path(self) -> Path | None:
        p = self.info.get("subject") or (str(self.config.subject) if self.config.subject else None)
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
            self._subjects[split] = load_subject(p, split, self.config.test_frames)  # type: ignore[arg-type]
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

            if self.avatar.rig == "triangle":
                self._head = self.avatar.head_model()
            elif self.subject_path is not None and (self.subject_path / "head_model.safetensors").is_file():
                self._head = HeadModel.load(self.subject_path / "head_model.safetensors").to(self.device)
            else:
                name = self.avatar.head_name.lower()
                if not (name.startswith("open") or "flame" in name):
                    raise HRAvatarError(f"{self.path}: head model {self.avatar.head_name!r} is not available "
                                        "(its subject folder held it); pass --subject")
                self._head = load_head_model("flame" if "flame" in name else "open",
                                             self.config.flame_path, device=self.device)
        return self._head

    # -- frames and parameters -------------------------------------------------------------------
    def frame(self, ds: Any, i: int) -> Any:
        """Frame ``i`` of a subject dataset, downscaled like training, on the avatar's device."""
        from hravatar.train import downscale_frame

        return downscale_frame(ds[i], self.config.downscale).to(self.device)

    @torch.no_grad()
    def encode(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        """Expression ``[B,E]`` and jaw ``[B,3]`` from face crops ``[B,S,S,3]`` (needs an encoder)."""
        if self.encoder is None:
            raise HRAvatarError(f"{self.path}: this avatar has no expression encoder (trained with --encoder none); "
                                "use tracked parameters")
        e, j = self.encoder(crops.to(self.device))
        return _pad(e, self.avatar.num_expr), j

    @torch.no_grad()
    def frame_params(self, fr: Any, use_encoder: bool = True) -> FrameParams:
        """Parameters of a subject frame (as :meth:`hravatar.train.TrainedAvatar.render` uses them):
        tracked shape, pose, translation; expression and jaw from the encoder when available."""
        E = self.avatar.num_expr
        pose = fr.pose[None].clone()
        if self.encoder is not None and use_encoder:
            expr, jaw = self.encode(fr.face_crop[None])
            pose[:, 2] = jaw
        else:
            expr = _pad(fr.expression[None], E)
        return FrameParams(fr.shape[None].clone(), expr, pose, fr.translation[None].clone())

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
            p = FrameParams(t["shape"], _pad(t["expression"], self.avatar.num_expr), t["pose"], t["translation"])
            return Reference(t["shape"], Camera(t["viewmat"], t["K"], size[1], size[0]), p, "reference file",
                             float(t["fps"]) if "fps" in t else DEFAULT_FPS)
        log.warning("%s: subject folder %s not found and no %s: rendering with a default camera and zero "
                    "identity shape (pass --subject to fix)", self.path, self.subject_path, REFERENCE_FILE)
        dev = self.device
        S, E = self.avatar.num_shape, self.avatar.num_expr
        size = int((self.info.get("image_size") or [512, 512])[0])
        from hravatar.render import intrinsics, look_at

        vm = look_at(torch.tensor([0.0, 0.0, 0.6]), torch.zeros(3), device=dev)
        K = intrinsics(24.0, size, size, device=dev)
        p = FrameParams(torch.zeros(1, S, device=dev), torch.zeros(1, E, device=dev),
                        torch.zeros(1, 5, 3, device=dev), torch.zeros(1, 3, device=dev))
        return Reference(p.shape, Camera(vm, K, size, size), p, "default")

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
        g = self.avatar.deform(p.shape, p.expression, p.pose, p.translation)
        w = g.opacities[0][:, None]
        return (g.means[0] * w).sum(0) / w.sum().clamp_min(1e-8)


def subject_fps(ds: Any) -> float:
    """Frame rate of a subject's video (manifest ``settings.fps`` or ``source.fps``), else 25."""
    man = ds.meta.get("manifest", {}) if isinstance(ds.meta, dict) else {}
    for d in (man.get("settings"), man.get("source"), man, ds.meta):
        v = d.get("fps") if isinstance(d, dict) else None
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    return DEFAULT_FPS


def load_avatar(path: str | Path, device: str | torch.device | None = "auto",
                subject: str | Path | None = None) -> LoadedAvatar:
    """Load an avatar folder written by ``hravatar train``.

    Args:
        path: the avatar folder.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or a device.
        subject: the subject folder, when it is not where ``training.json`` says.
    Raises:
        HRAvatarError: (one line) when the folder is missing, unfinished, or not a compatible avatar.
    """
    from hravatar.train import load_trained, resolve_device

    root = Path(path)
    if not root.exists():
        raise HRAvatarError(f"{root}: avatar folder not found; train one with `hravatar train SUBJECT -o {root}`")
    if not root.is_dir():
        raise HRAvatarError(f"{root}: not a folder; pass the avatar folder written by `hravatar train`")
    if (root / "avatar.safetensors").is_file():
        for f in ("lighting.safetensors", "train_config.yaml"):
            if not (root / f).is_file():
                raise HRAvatarError(f"{root}: incomplete avatar folder (no {f}); copy the whole folder or retrain")
    dev = resolve_device(str(device)) if device is None or isinstance(device, str) else torch.device(device)
    try:
        trained = load_trained(root, dev)
    except HRAvatarError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt or incompatible files: one line for the user
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HRAvatarError(f"{root}: not a compatible avatar folder ({msg[:200]})") from None
    la = LoadedAvatar(root, trained, dev)
    if subject is not None:
        if not Path(subject).is_dir():
            raise HRAvatarError(f"{subject}: subject folder not found")
        la.set_subject(Path(subject))
    return la


# ---- rendering ------------------------------------------------------------------------------------
class _MaterialView:
    """Duck-typed stand-in for a GaussianHead whose materials are overridden (no copy of the points)."""

    def __init__(self, avatar: Any, materials: dict[str, Tensor]) -> None:
        self._a = avatar
        self.albedo = materials.get("albedo", avatar.albedo)
        self.roughness = materials.get("roughness", avatar.roughness)
        self.f0 = materials.get("f0", avatar.f0)
        self.colors = materials.get("colors", avatar.colors)

    def deform(self, *args: Any, **kw: Any) -> Any:
        return self._a.deform(*args, **kw)


@torch.no_grad()
def render(
    la: LoadedAvatar,
    p: FrameParams,
    cam: Camera,
    lighting: Any = None,
    materials: dict[str, Tensor] | None = None,
    background: Tensor | float | None = None,
    mode: str | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """Render the avatar with parameters ``p`` from camera ``cam`` (the trainer's own render path).

    Args:
        lighting: any :class:`~hravatar.shading.lighting.Lighting` (default: the learned one).
        materials: per-point overrides ``{"albedo" [N,3], "roughness" [N,1], "f0" [N,1]}`` (edits).
        background: ``[1,H,W,3]``, ``[3]`` or a scalar in the image's units (default black).
        mode: ``"pbr"``, ``"albedo"`` or ``"color"`` (default: the avatar's).
    Returns:
        :func:`hravatar.train.render_frame`'s dict: ``image [1,H,W,3]`` (unclamped), ``alpha``,
        ``depth`` and for shaded avatars ``albedo``, ``normal`` (world), ``roughness``, ``f0``.
    """
    from hravatar.train import render_frame

    av = _MaterialView(la.avatar, materials) if materials else la.avatar
    return render_frame(av, lighting if lighting is not None else la.lighting, p.shape, p.expression, p.pose,
                        p.translation, cam.viewmat, cam.K, cam.width, cam.height, mode or la.mode,  # type: ignore[arg-type]
                        backend, background)


def to_uint8(img: Tensor | np.ndarray) -> np.ndarray:
    """``[H,W,3]`` image in [0,1] (clamped) -> uint8 numpy."""
    a = img.detach().float().cpu().numpy() if isinstance(img, Tensor) else np.asarray(img, np.float32)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def hstack(images: list[np.ndarray], gap: int = 2, height: int | None = None) -> np.ndarray:
    """uint8 images side by side, resized to ``height`` (default: the first one's)."""
    import cv2

    h = height or images[0].shape[0]
    out = []
    for i, im in enumerate(images):
        if im.shape[0] != h:
            im = cv2.resize(im, (max(1, round(im.shape[1] * h / im.shape[0])), h), interpolation=cv2.INTER_AREA)
        out.append(im)
        if gap and i < len(images) - 1:
            out.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(out, 1)


def write_frames(path: str | Path, frames: Iterable[np.ndarray], fps: float = DEFAULT_FPS,
                 total: int | None = None) -> Path:
    """Write uint8 ``[H,W,3]`` frames atomically: ``.mp4`` (H.264), or ``.png`` (the first frame only,
    the rest are still consumed). Returns ``path``."""
    path = Path(path)
    suf = path.suffix.lower()
    if suf == ".mp4":
        from hravatar.io.video import write_video

        return write_video(path, frames, fps=fps, total=total)
    if suf in (".png", ".jpg", ".jpeg"):
        from hravatar.io.image import write_image

        first = None
        for f in frames:
            if first is None:
                first = f
        if first is None:
            raise HRAvatarError(f"{path}: no frames to write")
        return write_image(path, first)
    raise HRAvatarError(f"{path}: unsupported output type; use .mp4 (video) or .png (one image)")


def check_output(path: str | Path, allowed: tuple[str, ...] = (".mp4", ".png", ".jpg")) -> Path:
    """Fail early (before rendering) on an output path of the wrong type."""
    path = Path(path)
    if path.suffix.lower() not in allowed:
        raise HRAvatarError(f"{path}: unsupported output type; use {' or '.join(allowed)}")
    from hravatar.io.atomic import check_writable

    return check_writable(path)


# ---- lighting ---------------------------------------------------------------------------------------
def sphere_directions(n: int = 512, device: torch.device | str | None = None) -> Tensor:
    """``[n,3]`` unit directions, evenly spread (Fibonacci sphere)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = (1 - z * z).clamp_min(0).sqrt()
    phi = math.pi * (1 + math.sqrt(5.0)) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).float().to(device)


@torch.no_grad()
def mean_irradiance(lighting: Any, device: torch.device | str | None = None) -> float:
    """Mean over all normal directions of the grey irradiance of any ``Lighting``."""
    d = sphere_directions(512, device)
    return float(lighting.irradiance(d).mean())


def load_environment(
    path: str | Path,
    la: LoadedAvatar,
    rotation: float = 0.0,
    exposure: float = 0.0,
    auto_exposure: bool = True,
) -> Any:
    """An :class:`~hravatar.shading.lighting.EnvironmentLighting` from ``.hdr``/``.exr`` (prefiltered now)
    or a prefiltered ``.safetensors`` (``hravatar envmap prefilter``).

    ``auto_exposure``: first scale the map so that its mean irradiance equals the avatar's learned
    lighting's (the albedo was learned against that light level); ``exposure`` (stops) is then added.
    """
    from hravatar.shading.lighting import EnvironmentLighting

    path = Path(path)
    if path.suffix.lower() not in (".hdr", ".exr", ".safetensors"):
        raise HRAvatarError(f"{path}: unsupported environment map; use .hdr, .exr or a prefiltered .safetensors")
    if not path.is_file():
        raise HRAvatarError(f"{path}: environment map not found")
    if path.suffix.lower() != ".safetensors":
        log.info("environment %s: prefiltering (use `hravatar envmap prefilter` once to skip this) ...", path.name)
    env = EnvironmentLighting.from_file(path, rotation=rotation, exposure=0.0, device=la.device)
    auto = 0.0
    if auto_exposure:
        m_env = env.mean_irradiance()
        m_ref = mean_irradiance(la.lighting, la.device)
        if m_env > 0 and m_ref > 0:
            auto = math.log2(m_ref / m_env)
    env.exposure = auto + float(exposure)
    env.auto_exposure = auto  # type: ignore[attr-defined]
    return env


def env_background(env: Any, cam: Camera) -> Tensor:
    """``[1,H,W,3]`` what the camera sees of an environment map (rotation and exposure applied)."""
    return env.background(cam.viewmat[None], cam.K[None], cam.height, cam.width)


# ---- small parsing helpers ------------------------------------------------------------------------
def parse_assignments(items: Iterable[str], names: list[str], what: str = "expression") -> dict[str, float]:
    """``["jawOpen=0.5", "3=1.0"]`` -> ``{name: value}`` (names checked; an index selects by position)."""
    out: dict[str, float] = {}
    low = {n.lower(): n for n in names}
    for it in items:
        if "=" not in it:
            raise HRAvatarError(f"--{what} {it!r}: use NAME=VALUE (e.g. jawOpen=0.6)")
        k, v = it.split("=", 1)
        k = k.strip()
        from hravatar.validate import MAX_ANGLE, MAX_COEFF, number

        angle = k.lower() in ("jaw", "jaw_x", "jaw_y", "jaw_z", "yaw", "pitch", "roll")
        val = number(v, f"--{what} {k}", MAX_ANGLE if angle else MAX_COEFF)
        if k.isdigit() and int(k) < len(names):
            k = names[int(k)]
        elif k.lower() in low:
            k = low[k.lower()]
        elif k.lower() not in ("jaw", "jaw_x", "jaw_y", "jaw_z", "yaw", "pitch", "roll"):
            hint = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise HRAvatarError(f"--{what} {k!r}: unknown name; the avatar's expressions are {hint} "
                                "(or jaw, yaw, pitch, roll in radians)")
        out[k] = val
    return out


def apply_assignments(la: LoadedAvatar, p: FrameParams, values: dict[str, float]) -> FrameParams:
    """Set expressions (by name) and ``jaw`` (opening, radians about x; ``jaw_y``/``jaw_z`` too) and
    ``yaw``/``pitch``/``roll`` (head rotation, radians, applied after the current one) on a copy of ``p``."""
    p = p.clone()
    names = la.expr_names
    euler = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}
    for k, v in values.items():
        if k in names:
            p.expression[0, names.index(k)] = v
        elif k in ("jaw", "jaw_x", "jaw_y", "jaw_z"):
            p.pose[0, 2, {"jaw": 0, "jaw_x": 0, "jaw_y": 1, "jaw_z": 2}[k]] = v
        elif k in euler:
            euler[k] = v
    if any(euler.values()):
        r = euler_to_axis_angle(euler["yaw"], euler["pitch"], euler["roll"], like=p.pose)
        p.pose[0, 0] = compose_axis_angle(r, p.pose[0, 0])
    return p


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """``[...,3]`` axis-angle (radians) -> ``[...,3,3]`` rotation matrices."""
    from hravatar.head.lbs import axis_angle_to_matrix as rodrigues

    return rodrigues(aa)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``[...,3,3]`` rotation matrices -> ``[...,3]`` axis-angle (radians, angle in [0, pi])."""
    from hravatar.head.lbs import matrix_to_quat

    q = matrix_to_quat(R)
    s = q[..., 1:].norm(dim=-1, keepdim=True)
    ang = 2 * torch.atan2(s, q[..., :1].clamp(-1, 1))
    return torch.where(s > 1e-8, q[..., 1:] / s.clamp_min(1e-12) * ang, 2 * q[..., 1:])


def euler_to_axis_angle(yaw: float, pitch: float, roll: float, like: Tensor | None = None) -> Tensor:
    """Head rotation from yaw (about +y), pitch (about +x), roll (about +z), radians -> ``[3]``."""
    dev = like.device if like is not None else None

    def rot(axis: int, a: float) -> Tensor:
        v = torch.zeros(3, device=dev)
        v[axis] = a
        return axis_angle_to_matrix(v)

    R = rot(1, yaw) @ rot(0, pitch) @ rot(2, roll)
    return matrix_to_axis_angle(R)


def compose_axis_angle(a: Tensor, b: Tensor) -> Tensor:
    """Axis-angle of ``R(a) @ R(b)``."""
    return matrix_to_axis_angle(axis_angle_to_matrix(a) @ axis_angle_to_matrix(b))


def frame_indices(n: int, max_frames: int = 0) -> list[int]:
    """``range(n)``, or ``max_frames`` evenly spread indices of it."""
    if max_frames and n > max_frames:
        return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_frames)})
    return list(range(n))


__all__ = [
    "Camera",
    "FrameParams",
    "LoadedAvatar",
    "Reference",
    "apply_assignments",
    "check_output",
    "env_background",
    "frame_indices",
    "hstack",
    "load_avatar",
    "load_environment",
    "mean_irradiance",
    "parse_assignments",
    "render",
    "subject_fps",
    "to_uint8",
    "write_frames",
]

