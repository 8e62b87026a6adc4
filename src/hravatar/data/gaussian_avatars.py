"""Reader for the GaussianAvatars / VHAP layout into :class:`hravatar.data.SubjectDataset`.

Layout (as written by GaussianAvatars' NeRSemble export and by VHAP's ``export_as_nerf_dataset``)::

    ROOT/
      transforms_train.json, transforms_val.json, transforms_test.json
      images/00000_00.png ...          (RGB or RGBA)
      fg_masks/00000_00.png ...        (optional foreground mattes, same file names)
      flame_param/00000.npz ...        per time step: rotation [1,3], translation [1,3], neck_pose [1,3],
                                       jaw_pose [1,3], eyes_pose [1,6], shape [S], expr [1,E]
                                       (+ static_offset / dynamic_offset, not used here)

Each ``frames`` entry has ``file_path``, ``transform_matrix`` (camera-to-world, OpenGL/Blender axes:
x right, y up, z backwards), intrinsics ``fl_x, fl_y, cx, cy, w, h`` (or the file's top-level
values), ``timestep_index``, ``camera_index`` and ``flame_param_path``.

Conversion: ``viewmat = diag(1,-1,-1,1) @ inverse(transform_matrix)`` (OpenCV world-to-camera),
pose = ``[rotation, neck_pose, jaw_pose, eyes_pose[:3], eyes_pose[3:]]`` (FLAME's joint order, which
is ours), translation as is (FLAME units: metres). The parameters are FLAME's (2023 in
GaussianAvatars: 300 shape, 100 expression coefficients); pass them to a FLAME head model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hravatar.data.dataset import SubjectDataset
from hravatar.errors import HRAvatarError

FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])
Split = Literal["train", "val", "test", "all"]


def is_gaussian_avatars(path: str | Path) -> bool:
    """True when ``path`` looks like a GaussianAvatars / VHAP folder (``transforms_*.json``)."""
    p = Path(path)
    return p.is_dir() and any(p.glob("transforms_*.json"))


def _intrinsics(frame: dict[str, Any], top: dict[str, Any], path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    def get(k: str) -> Any:
        return frame.get(k, top.get(k))

    w, h = get("w"), get("h")
    if w is None or h is None:
        raise HRAvatarError(f"{path}: frames lack the image size (w, h); not a GaussianAvatars/VHAP file")
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None:
        ang = get("camera_angle_x")
        if ang is None:
            raise HRAvatarError(f"{path}: frames lack fl_x and camera_angle_x; cannot get the focal length")
        fx = 0.5 * float(w) / np.tan(0.5 * float(ang))
    fy = fx if fy is None else fy
    cx = get("cx") if get("cx") is not None else float(w) / 2
    cy = get("cy") if get("cy") is not None else float(h) / 2
    K = np.array([[float(fx), 0, float(cx)], [0, float(fy), float(cy)], [0, 0, 1.0]])
    return K, (int(h), int(w))


def load_gaussian_avatars(
    path: str | Path, split: Split = "train", camera: int | None = None, cache: bool | None = None
) -> SubjectDataset:
    """Open a GaussianAvatars / VHAP folder as a :class:`~hravatar.data.SubjectDataset`.

    Args:
        path: the folder with ``transforms_<split>.json``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the three concatenated).
        camera: keep only frames of this ``camera_index`` (needed when cameras differ in intrinsics;
            the dataset holds one ``K``).
        cache: keep decoded frames in memory (default: when they fit in about 1.5 GB).
    Returns:
        :class:`SubjectDataset` with per-frame ``viewmats [N,4,4]`` (cameras may differ per frame),
        FLAME ``shape [S]``, ``expression [N,E]``, ``pose [N,5,3]``, ``translation [N,3]``;
        ``head_model = "flame"``; ``frame_indices`` are the time-step indices.
    """
    root = Path(path)
    splits = ["train", "val", "test"] if split == "all" else [split]
    files = [root / f"transforms_{s}.json" for s in splits]
    files = [f for f in files if f.is_file()]
    if not files:
        raise HRAvatarError(f"{root}: no transforms_{splits[0]}.json; not a GaussianAvatars/VHAP folder")
    entries: list[tuple[dict, dict, Path]] = []
    for f in files:
        try:
            top = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise HRAvatarError(f"{f}: not valid JSON ({e.msg})") from None
        for fr in top.get("frames", []):
            if camera is None or int(fr.get("camera_index", 0)) == camera:
                entries.append((fr, top, f))
    if not entries:
        raise HRAvatarError(
            f"{root}: no frames for split {split!r}" + (f" and camera {camera}" if camera is not None else "")
        )

    K0, hw0 = _intrinsics(entries[0][0], entries[0][1], entries[0][2])
    paths, vms, expr, pose, trans, tsteps = [], [], [], [], [], []
    shape = None
    params_cache: dict[str, dict[str, np.ndarray]] = {}
    for fr, top, f in entries:
        K, hw = _intrinsics(fr, top, f)
        if not np.allclose(K, K0, rtol=1e-4) or hw != hw0:
            raise HRAvatarError(f"{f}: cameras have different intrinsics or sizes; pick one with camera=<index>")
        img = root / fr["file_path"]
        if not img.suffix:
            img = img.with_suffix(".png")
        if not img.is_file():
            raise HRAvatarError(f"{img}: image listed in {f.name} is missing")
        c2w = np.asarray(fr["transform_matrix"], np.float64).reshape(4, 4)
        vms.append(FLIP_YZ @ np.linalg.inv(c2w))
        fp = fr.get("flame_param_path")
        if fp is None:
            raise HRAvatarError(f"{f}: frames lack flame_param_path; tracked FLAME parameters are needed")
        if fp not in params_cache:
            try:
                d = np.load(root / fp, allow_pickle=False)
                params_cache[fp] = {k: np.asarray(d[k], np.float64) for k in d.files}
            except (OSError, ValueError) as e:
                raise HRAvatarError(f"{root / fp}: cannot read FLAME parameters ({e})") from None
        p = params_cache[fp]
        try:
            eyes = p["eyes_pose"].reshape(-1)[:6]
            pose.append(
                np.stack(
                    [
                        p["rotation"].reshape(-1)[:3],
                        p["neck_pose"].reshape(-1)[:3],
                        p["jaw_pose"].reshape(-1)[:3],
                        eyes[:3],
                        eyes[3:6],
                    ]
                )
            )
            trans.append(p["translation"].reshape(-1)[:3])
            expr.append(p["expr"].reshape(-1))
            if shape is None:
                shape = p["shape"].reshape(-1)
        except KeyError as e:
            raise HRAvatarError(f"{root / fp}: lacks {e}; not a GaussianAvatars/VHAP FLAME file") from None
        paths.append(img)
        tsteps.append(int(fr.get("timestep_index", len(tsteps))))

    def t(x: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)

    if cache is None:
        cache = len(paths) * hw0[0] * hw0[1] * 7 < 1.5e9
    mask_dir = root / "fg_masks" if (root / "fg_masks").is_dir() else None
    return SubjectDataset(
        root=root,
        image_paths=paths,
        frame_indices=tsteps,
        shape=t(shape),
        expression=t(expr),
        pose=t(pose),
        translation=t(trans),
        viewmats=t(vms),
        K=t(K0),
        image_size=hw0,
        head_model="flame",
        crop_affines=None,
        mask_dir=mask_dir,
        albedo_dir=None,
        meta={"format": "gaussian-avatars", "splits": [f.name for f in files], "camera": camera},
        cache=bool(cache),
    )
