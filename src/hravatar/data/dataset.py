"""Reading a subject folder (ours or HRAvatar's/IMavatar-style layout) as a per-frame dataset."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from hravatar.data.format import (
    CROP_SIZE,
    FLIP_YZ,
    FORMAT_NAME,
    HRAVATAR_FLAME_SCALE,
    crop_box_from_points,
    default_test_count,
    read_image,
)
from hravatar.errors import HRAvatarError

Split = Literal["train", "test", "all"]
_IMG_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class FrameSample:
    """One frame of a subject (CPU float32 tensors unless moved with :meth:`to`).

    Attributes:
        index: frame index in the whole video (0-based, before splitting).
        name: image file stem (``"00000"``).
        image: ``[H,W,3]`` colour in [0,1], composited over black with the matte.
        mask: ``[H,W,1]`` matte in [0,1].
        shape: ``[S]`` identity coefficients.
        expression: ``[E]`` tracked expression coefficients.
        pose: ``[5,3]`` tracked axis-angle (global, neck, jaw, eye_l, eye_r), radians.
        translation: ``[3]`` metres.
        viewmat: ``[4,4]`` OpenCV world-to-camera (metres).
        K: ``[3,3]`` pixel intrinsics.
        face_crop: ``[224,224,3]`` encoder input (the composited image warped by ``crop_affine``).
        crop_affine: ``[2,3]`` image pixel -> crop pixel affine map (OpenCV convention, pixel
            centres at integers).
        albedo: ``[H,W,3]`` pseudo albedo over black, or ``None``.
    """

    index: int
    name: str
    image: Tensor
    mask: Tensor
    shape: Tensor
    expression: Tensor
    pose: Tensor
    translation: Tensor
    viewmat: Tensor
    K: Tensor
    face_crop: Tensor
    crop_affine: Tensor
    albedo: Tensor | None = None

    def to(self, device: torch.device | str) -> FrameSample:
        """A copy with every tensor on ``device``."""
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device) if isinstance(v, Tensor) else v
        return FrameSample(**kw)


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def box_to_affine(box: Any, size: int = CROP_SIZE) -> np.ndarray:
    """Crop box ``(cx, cy, side)`` (pixels, pixel centres at +0.5) -> ``[2,3]`` affine mapping
    image pixel indices to crop pixel indices (OpenCV ``warpAffine`` convention)."""
    cx, cy, s = (float(v) for v in box)
    k = size / max(s, 1e-6)
    x0, y0 = cx - s / 2, cy - s / 2
    return np.array([[k, 0.0, (0.5 - x0) * k - 0.5], [0.0, k, (0.5 - y0) * k - 0.5]])


def mask_crop_box(mask: np.ndarray) -> np.ndarray:
    """Rough face box from a matte ``[H,W]`` (used only when neither boxes nor a head model exist):
    a square as wide as 90% of the matte's bounding box (at most its height), starting 5% below its
    top. Returns ``(cx, cy, side)`` pixels."""
    H, W = mask.shape[:2]
    ys, xs = np.nonzero(mask > 0.5 * (mask.max() if mask.size else 1))
    if xs.size == 0:
        return np.array([W / 2, H / 2, float(min(H, W))])
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = min(0.9 * (x1 - x0), y1 - y0)
    return np.array([(x0 + x1) / 2, y0 + 0.05 * (y1 - y0) + side / 2, side])


class SubjectDataset:
    """Frames of one subject for one split; ``ds[i]`` is a :class:`FrameSample`.

    Arrays over the split's frames (CPU float32): ``expression [N,E]``, ``pose [N,5,3]``,
    ``translation [N,3]``, ``viewmats [N,4,4]``; ``shape [S]``; ``K [3,3]``; ``image_size (H,W)``;
    ``frame_indices`` (positions in the whole video). ``head_model`` is the model name (``"flame"``
    for HRAvatar folders). ``has_albedo`` tells whether pseudo albedos exist; ``gt_dir`` is the
    synthetic ground-truth folder or ``None``.
    """

    def __init__(
        self,
        root: Path,
        image_paths: list[Path],
        frame_indices: list[int],
        shape: Tensor,
        expression: Tensor,
        pose: Tensor,
        translation: Tensor,
        viewmats: Tensor,
        K: Tensor,
        image_size: tuple[int, int],
        head_model: str,
        crop_affines: np.ndarray | None,
        mask_dir: Path | None,
        albedo_dir: Path | None,
        meta: dict[str, Any],
        cache: bool,
    ) -> None:
        self.root = root
        self.image_paths = image_paths
        self.frame_indices = frame_indices
        self.shape = shape
        self.expression = expression
        self.pose = pose
        self.translation = translation
        self.viewmats = viewmats
        self.K = K
        self.image_size = image_size
        self.head_model = head_model
        self.crop_affines = crop_affines
        self.mask_dir = mask_dir
        self.albedo_dir = albedo_dir
        self.meta = meta
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        gt = root / "gt"
        self.gt_dir: Path | None = gt if gt.is_dir() else None

    # ---- sizes --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def num_expr(self) -> int:
        return int(self.expression.shape[1])

    @property
    def num_shape(self) -> int:
        return int(self.shape.shape[0])

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.image_paths]

    @property
    def has_albedo(self) -> bool:
        return self.albedo_dir is not None

    # ---- images -------------------------------------------------------------------------------
    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """uint8 composited RGB ``[H,W,3]``, uint8 matte ``[H,W]``, uint8 albedo or None."""
        if i in self._cache:
            return self._cache[i]
        p = self.image_paths[i]
        img = read_image(p)
        if img.dtype != np.uint8:
            img = (img.astype(np.float32) / np.iinfo(img.dtype).max * 255 + 0.5).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        if img.shape[2] == 4:
            alpha = img[..., 3]
        elif self.mask_dir is not None and (self.mask_dir / p.name).is_file():
            m = read_image(self.mask_dir / p.name)
            alpha = m if m.ndim == 2 else m[..., :3].mean(-1).astype(np.uint8)
        else:
            alpha = np.full(img.shape[:2], 255, np.uint8)
        a = alpha.astype(np.float32)[..., None] / 255.0
        rgb = (img[..., :3].astype(np.float32) * a + 0.5).astype(np.uint8)
        alb = None
        if self.albedo_dir is not None:
            ap = self.albedo_dir / p.name
            if ap.is_file():
                alb_img = read_image(ap)[..., :3]
                alb = (alb_img.astype(np.float32) * a + 0.5).astype(np.uint8)
        out = (rgb, alpha, alb)
        if self.cache:
            self._cache[i] = out
        return out

    def crop_affine(self, i: int) -> np.ndarray:
        """``[2,3]`` image -> 224x224 crop affine of split frame ``i``."""
        if self.crop_affines is not None:
            return self.crop_affines[i]
        _, alpha, _ = self._load(i)
        return box_to_affine(mask_crop_box(alpha.astype(np.float32) / 255.0))

    def face_crop(self, i: int) -> Tensor:
        """``[224,224,3]`` float encoder input of split frame ``i``."""
        import cv2

        rgb, _, _ = self._load(i)
        crop = cv2.warpAffine(rgb, self.crop_affine(i), (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return torch.from_numpy(crop.astype(np.float32) / 255.0)

    def __getitem__(self, i: int) -> FrameSample:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        rgb, alpha, alb = self._load(i)
        aff = self.crop_affine(i)
        return FrameSample(
            index=self.frame_indices[i],
            name=self.image_paths[i].stem,
            image=torch.from_numpy(rgb.astype(np.float32) / 255.0),
            mask=torch.from_numpy(alpha.astype(np.float32)[..., None] / 255.0),
            shape=self.shape,
            expression=self.expression[i],
            pose=self.pose[i],
            translation=self.translation[i],
            viewmat=self.viewmats[i],
            K=self.K,
            face_crop=self.face_crop(i),
            crop_affine=torch.from_numpy(aff.astype(np.float32)),
            albedo=None if alb is None else torch.from_numpy(alb.astype(np.float32) / 255.0),
        )

    def gt_map(self, i: int, key: str) -> Tensor | None:
        """Synthetic ground truth of split frame ``i``: ``"albedo"``/``"relit/<name>"`` ``[H,W,3]``,
        ``"normal"`` ``[H,W,3]`` unit (OpenCV camera frame), ``"mask"`` ``[H,W,1]``; ``None`` if absent."""
        if self.gt_dir is None:
            return None
        p = self.gt_dir / key / self.image_paths[i].with_suffix(".png").name
        if not p.is_file():
            return None
        a = read_image(p)
        if key == "normal":
            n = a[..., :3].astype(np.float32) / np.iinfo(a.dtype).max * 2 - 1
            n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-8)
            return torch.from_numpy(n.astype(np.float32))
        f = a.astype(np.float32) / np.iinfo(a.dtype).max
        if f.ndim == 2:
            f = f[..., None]
        return torch.from_numpy(f[..., :1] if key == "mask" else f[..., :3])


def _frames_sorted(img_dir: Path) -> list[Path]:
    paths = [p for p in img_dir.iterdir() if p.suffix.lower() in _IMG_SUFFIXES and not p.name.startswith(".")]
    return sorted(paths, key=lambda p: _natural_key(p.name))


def _split_indices(n: int, split: Split, test_frames: int | None) -> list[int]:
    n_test = default_test_count(n) if test_frames is None else int(test_frames)
    if not 0 <= n_test <= n:
        raise HRAvatarError(f"test_frames={n_test} but the subject has {n} frames; choose 0..{n}")
    n_train = n - n_test
    if split == "train":
        return list(range(n_train))
    if split == "test":
        return list(range(n_train, n))
    if split == "all":
        return list(range(n))
    raise HRAvatarError(f"unknown split {split!r}; use train, test or all")


def _arr(x: Any, what: str, path: Path, size: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` as a finite float64 array (of ``size`` elements: an int or one of a tuple of ints); a one-line
    HRAvatarError naming the file and ``what`` (e.g. ``frame 00012 expcode``) otherwise."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise HRAvatarError(f"{path}: {what} is not numeric; the tracking file is damaged, re-run tracking") from None
    sizes = (size,) if isinstance(size, int) else size
    if sizes is not None and a.size not in sizes:
        want = " or ".join(str(n) for n in sizes)
        raise HRAvatarError(f"{path}: {what} has {a.size} numbers, expected {want}; the tracking file is damaged, "
                            "re-run tracking")
    if not np.isfinite(a).all():
        raise HRAvatarError(f"{path}: {what} contains NaN or Inf; the tracking file is damaged, re-run tracking")
    return a


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        reason = getattr(e, "msg", None) or type(e).__name__
        raise HRAvatarError(f"{path}: damaged {what} (not valid JSON: {reason}); re-run preprocessing "
                            "with --overwrite") from None
    except OSError as e:
        raise HRAvatarError(f"{path}: cannot read the {what} ({(e.strerror or '').lower()})") from None


def _png_size(path: Path) -> tuple[int, int] | None:
    """``(H, W)`` from a PNG header without decoding (None: not a PNG); raises for an empty or cut file."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24:
        raise HRAvatarError(f"{path}: image file is empty or truncated; the subject folder is damaged, "
                            "re-run preprocessing")
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def load_subject(
    path: str | Path,
    split: Split = "train",
    test_frames: int | None = None,
    head_model: Any = None,
    crop_scale: float = 1.4,
    cache: bool | None = None,
) -> SubjectDataset:
    """Open a subject folder (ours or HRAvatar's layout) for one split.

    Args:
        path: folder with ``image/`` (or ``images/``) and ``tracked_params.json`` (or HRAvatar's
            ``tracked_params_v2.json``).
        split: ``"train"`` (all but the last frames), ``"test"`` (the last frames) or ``"all"``.
        test_frames: size of the test split; default :func:`~hravatar.data.format.default_test_count`
            (500 for > 3000 frames, 350 for >= 2000, else the last 15%).
        head_model: optional :class:`~hravatar.head.HeadModel`; used for face crop boxes when the
            folder has none (projects the ``"face"`` region, or all vertices, of the tracked mesh).
        crop_scale: crop side / face-box side when boxes come from the head model.
        cache: keep decoded uint8 frames in memory (default: when they fit in about 1.5 GB).
    Returns:
        :class:`SubjectDataset`.
    """
    root = Path(path)
    if not root.is_dir():
        raise HRAvatarError(f"{root}: subject folder not found; run `hravatar preprocess VIDEO -o {root}`")
    img_dir = next((root / d for d in ("image", "images") if (root / d).is_dir()), None)
    tp_path, scale = root / "tracked_params.json", HRAVATAR_FLAME_SCALE
    if not tp_path.is_file() and (root / "tracked_params_v2.json").is_file():
        tp_path, scale = root / "tracked_params_v2.json", 1.0
    if img_dir is None or not tp_path.is_file():
        raise HRAvatarError(f"{root}: not a subject folder (needs image/ and tracked_params.json); "
                            "run `hravatar preprocess` to make one")
    man_path = root / "manifest.json"
    man: Any = None
    if man_path.is_file():
        man = _read_json(man_path, "manifest")
        if not isinstance(man, dict):
            raise HRAvatarError(f"{man_path}: damaged manifest (not a JSON object); "
                                "re-run preprocessing with --overwrite")
        if man.get("format") == FORMAT_NAME and not man.get("complete", False):
            raise HRAvatarError(f"{root}: subject folder is incomplete; re-run preprocessing")
    tp = _read_json(tp_path, "tracking file")
    if not isinstance(tp, dict):
        raise HRAvatarError(f"{tp_path}: not a tracking file (a JSON object is expected); re-run tracking")
    ours = tp.get("hravatar") if isinstance(tp.get("hravatar"), dict) else None
    if ours is not None:
        scale = float(_arr(ours.get("flame_scale", scale), "flame_scale", tp_path, 1)[()])
        if scale <= 0:
            raise HRAvatarError(f"{tp_path}: flame_scale {scale} must be positive; re-run tracking")

    all_paths = _frames_sorted(img_dir)
    keyed = []
    for p in all_paths:
        key = p.stem if p.stem in tp else (p.name if p.name in tp else None)
        if key is not None:
            keyed.append((p, key))
    have = {k for _, k in keyed}
    listed = ours.get("frames") if ours is not None else None
    if isinstance(listed, list):
        wanted = [str(n) for n in listed]
    else:  # other layouts: every per-frame entry
        wanted = [k for k, v in tp.items() if isinstance(v, dict) and "expcode" in v]
    missing = [n for n in wanted if n not in have]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise HRAvatarError(f"{img_dir}: {len(missing)} frame image(s) listed in {tp_path.name} are missing "
                            f"({', '.join(missing[:3])}{more}); restore them or re-run preprocessing")
    if not keyed:
        raise HRAvatarError(f"{tp_path}: no entry matches the images in {img_dir}; re-run tracking")
    n_all = len(keyed)
    idx = _split_indices(n_all, split, test_frames)
    sel = [keyed[i] for i in idx]
    if not sel:
        raise HRAvatarError(f"{root}: the {split} split is empty ({n_all} frames, test_frames={test_frames})")

    first = read_image(sel[0][0])
    H, W = int(first.shape[0]), int(first.shape[1])
    for p, _ in sel:  # every frame present, readable-looking and of one size (PNG headers only: cheap)
        hw = _png_size(p)
        if hw is not None and hw != (H, W):
            raise HRAvatarError(f"{p}: image is {hw[0]}x{hw[1]}, the others {H}x{W}; the subject folder is "
                                "damaged, re-run preprocessing")
    if ours is not None and "K" in ours:
        K = _arr(ours["K"], "K", tp_path, 9).reshape(3, 3)
        if list(ours.get("image_size", [H, W])) != [H, W]:
            raise HRAvatarError(f"{root}: images are {H}x{W} but tracked_params says {ours['image_size']}")
    else:
        fx, fy, cx, cy = _arr(tp.get("intrinsics"), "intrinsics", tp_path, 4).reshape(4)
        if cx <= 0 or fx <= 0:
            raise HRAvatarError(f"{tp_path}: intrinsics {[fx, fy, cx, cy]} must be positive; re-run tracking")
        f = W * fx / (2 * cx)  # HRAvatar's loader: fov from (fx, cx), principal point at the centre
        K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise HRAvatarError(f"{tp_path}: focal lengths {K[0, 0]}, {K[1, 1]} must be positive; re-run tracking")

    shape = _arr(tp.get("shapecode"), "shapecode", tp_path).reshape(-1)
    expr, pose, trans, vms, boxes, affs = [], [], [], [], [], []
    for _, key in sel:
        e = tp[key]
        if not isinstance(e, dict):
            raise HRAvatarError(f"{tp_path}: frame {key} is not an entry of parameters; re-run tracking")
        w = f"frame {key}"
        ex = _arr(e.get("expcode"), f"{w} expcode", tp_path).reshape(-1)
        if expr and ex.size != expr[0].size:
            raise HRAvatarError(f"{tp_path}: {w} expcode has {ex.size} numbers, the first frame {expr[0].size}; "
                                "re-run tracking")
        expr.append(ex)
        fp = _arr(e.get("fullposecode"), f"{w} fullposecode", tp_path, (6, 9, 12, 15)).reshape(-1)
        pose.append(np.pad(fp, (0, 15 - fp.size)).reshape(5, 3))
        trans.append(_arr(e["translation"], f"{w} translation", tp_path, 3).reshape(3) if "translation" in e
                     else np.zeros(3))
        wm = _arr(e.get("world_mat"), f"{w} world_mat", tp_path, (12, 16))
        wm = wm.reshape(-1, 4)
        if wm.shape == (3, 4):
            wm = np.vstack([wm, [0, 0, 0, 1]])
        vm = FLIP_YZ @ wm
        vm[:3, 3] /= scale
        vms.append(vm)
        b = e.get("crop_box")
        if b is not None:
            b = _arr(b, f"{w} crop_box", tp_path, 3)
            if b[2] <= 0:
                raise HRAvatarError(f"{tp_path}: {w} crop_box size {b[2]} must be positive; re-run tracking")
        boxes.append(b)

    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    expression, pose_t, trans_t, vms_t = t(expr), t(pose), t(trans), t(vms)
    shape_t, K_t = t(shape), t(K)
    if all(b is not None for b in boxes):
        affs = np.stack([box_to_affine(b) for b in boxes])
    elif (root / "stable_bbox.npz").is_file():
        try:
            npz = np.load(root / "stable_bbox.npz", allow_pickle=False)
            by_name = {str(n): m for n, m in zip(npz["frame_basenames"], npz["tform"], strict=True)}
            affs = np.stack([np.asarray(by_name[p.name], np.float64)[:2] for p, _ in sel])
        except KeyError as e:
            raise HRAvatarError(f"{root}/stable_bbox.npz: no entry for {e}; regenerate it") from None
        except Exception as e:  # noqa: BLE001 - zip / numpy format errors of several types
            raise HRAvatarError(f"{root}/stable_bbox.npz: damaged ({type(e).__name__}); regenerate it") from None
    elif head_model is not None:
        affs = _boxes_from_head_model(head_model, shape_t, expression, pose_t, trans_t, vms_t, K_t,
                                      crop_scale)
    else:
        affs = None

    if cache is None:
        cache = len(sel) * H * W * 7 < 1.5e9
    meta = dict(ours or {})
    if man is not None:
        meta["manifest"] = man
    name = (ours or {}).get("head_model", "flame")
    mask_dir = root / "mask" if (root / "mask").is_dir() else None
    albedo_dir = root / "albedo" if (root / "albedo").is_dir() else None
    return SubjectDataset(
        root=root, image_paths=[p for p, _ in sel], frame_indices=idx, shape=shape_t, expression=expression,
        pose=pose_t, translation=trans_t, viewmats=vms_t, K=K_t, image_size=(H, W), head_model=name,
        crop_affines=affs, mask_dir=mask_dir, albedo_dir=albedo_dir, meta=meta, cache=bool(cache),
    )


def _boxes_from_head_model(
    model: Any, shape: Tensor, expr: Tensor, pose: Tensor, trans: Tensor, vms: Tensor, K: Tensor, scale: float
) -> np.ndarray:
    """Crop affines ``[N,2,3]`` from the projected face region of the tracked head mesh."""
    dev = model.v_template.device
    region = getattr(model, "regions", {}).get("face")
    out = []
    with torch.no_grad():
        for s in range(0, expr.shape[0], 64):
            sl = slice(s, s + 64)
            B = expr[sl].shape[0]
            E = min(expr.shape[1], model.num_expr)
            S = min(shape.shape[0], model.num_shape)
            o = model.forward(shape=shape[None, :S].expand(B, -1).to(dev), expression=expr[sl, :E].to(dev),
                              pose=pose[sl].to(dev), translation=trans[sl].to(dev))
            v = o.vertices if region is None else o.vertices[:, region.to(dev)]
            vm = vms[sl].to(dev)
            pc = torch.einsum("bij,bvj->bvi", vm[:, :3, :3], v) + vm[:, None, :3, 3]
            uv = torch.einsum("ij,bvj->bvi", K.to(dev), pc)
            uv = uv[..., :2] / uv[..., 2:].clamp_min(1e-6)
            for b in range(B):
                out.append(box_to_affine(crop_box_from_points(uv[b].cpu(), scale if region is not None
                                                              else scale * 0.8)))
    return np.stack(out)
