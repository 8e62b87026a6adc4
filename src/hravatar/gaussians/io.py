"""Saving, loading and exporting :class:`~hravatar.gaussians.head_avatar.GaussianHead` avatars.

* :func:`save_gaussians` / :func:`load_gaussians`: one safetensors file; tensors ``param.<name>`` (the
  per-point parameters, raw) and ``buffer.<name>``; JSON metadata (format, version, head-model
  name, expression names, sizes, :class:`AvatarConfig`, frozen parameters, free-form meta).
  Never pickle. Save -> load reproduces :meth:`GaussianHead.deform` bit for bit.
* :func:`export_ply`: a standard 3DGS PLY (``x y z nx ny nz f_dc_* opacity scale_* rot_*``, the
  normals being each Gaussian's shortest axis) of the posed avatar, readable by common splat
  viewers, written through :mod:`hravatar.io.ply`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hravatar.errors import HRAvatarError
from hravatar.gaussians.head_avatar import AvatarConfig, GaussianHead

#: ``format`` value in the metadata of avatar files.
FORMAT = "hravatar-gaussian-head"
#: Current version of the file layout.
VERSION = 1


def save_gaussians(avatar: GaussianHead, path: str | Path, extra_meta: dict[str, Any] | None = None) -> None:
    """Write ``avatar`` (a :class:`GaussianHead`) to ``path`` (safetensors), atomically.

    Args:
        avatar: the avatar.
        path: destination, conventionally ``*.safetensors``.
        extra_meta: JSON-safe metadata stored with the avatar (e.g. training step).
    """
    from safetensors.torch import save_file

    from hravatar.io.atomic import atomic_path

    tensors = {f"param.{k}": v.detach().contiguous().cpu() for k, v in avatar.params.items()}
    tensors.update({f"buffer.{k}": v.detach().contiguous().cpu() for k, v in avatar.named_buffers()})
    frozen = [k for k, v in avatar.params.items() if not v.requires_grad]
    meta = {
        "format": FORMAT,
        "version": str(VERSION),
        "head_model": avatar.head_name,
        "expr_names": json.dumps(avatar.expr_names),
        "num_points": str(avatar.num_points),
        "num_shape": str(avatar.num_shape),
        "num_expr": str(avatar.num_expr),
        "config": json.dumps(avatar.config_dict()),
        "frozen": json.dumps(frozen),
        "meta": json.dumps({**avatar.meta, **(extra_meta or {})}),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_gaussians(path: str | Path, device: torch.device | str | None = None) -> GaussianHead:
    """Read an avatar written by :func:`save_gaussians`.

    Args:
        path: the safetensors file.
        device: where to put the tensors (default CPU).
    Returns:
        A :class:`GaussianHead` (frozen parameters stay frozen).
    Raises:
        HRAvatarError: when the file is missing, not a safetensors file or not an avatar.
    """
    from safetensors import safe_open

    from hravatar.config import from_dict

    path = Path(path)
    if not path.is_file():
        raise HRAvatarError(f"{path}: avatar file not found; train one first or check the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            # clone: fresh, aligned allocations (BLAS results may depend on the buffer's alignment)
            t = {k: f.get_tensor(k).clone() for k in f.keys()}
    except Exception as e:  # safetensors raises several types
        raise HRAvatarError(f"{path}: not a safetensors avatar file ({e})") from None
    if md.get("format") != FORMAT:
        raise HRAvatarError(f"{path}: not a hravatar Gaussian avatar (format {md.get('format')!r})")
    try:
        version = int(md.get("version", "0"))
        cfg = from_dict(AvatarConfig, json.loads(md["config"]))
        expr_names = json.loads(md.get("expr_names", "[]"))
        meta = json.loads(md.get("meta", "{}"))
        frozen = json.loads(md.get("frozen", "[]"))
        if not (isinstance(expr_names, list) and isinstance(meta, dict) and isinstance(frozen, list)):
            raise ValueError("metadata of the wrong type")
        expr_names, frozen = [str(x) for x in expr_names], tuple(str(x) for x in frozen)
    except (KeyError, ValueError, TypeError, HRAvatarError) as e:
        raise HRAvatarError(f"{path}: damaged avatar metadata ({type(e).__name__}); train or export it again") from None
    if version > VERSION:
        raise HRAvatarError(f"{path}: avatar file version {version} is newer than this hravatar; upgrade")
    params = {k[len("param.") :]: v for k, v in t.items() if k.startswith("param.")}
    buffers = {k[len("buffer.") :]: v for k, v in t.items() if k.startswith("buffer.")}
    check_avatar_tensors(path, params, buffers, cfg.rig)
    avatar = GaussianHead(params, buffers, cfg, str(md.get("head_model", "unknown")), expr_names, meta, frozen=frozen)
    return avatar.to(device) if device is not None else avatar


#: expected shapes (symbols: N points, S shape and E expression components, V vertices, F triangles)
_COMMON = {"means": ("N", 3), "quats": ("N", 4), "scales": ("N", 3), "opacities": ("N",), "albedo": ("N", 3),
           "roughness": ("N", 1), "f0": ("N", 1)}
_OPTIONAL = {"colors": ("N", 3)}
_RIG_PARAMS = {
    "blendshape": {"shapedirs": ("N", 3, "S"), "exprdirs": ("N", 3, "E"), "posedirs": ("N", 3, 36),
                   "lbs_weights": ("N", 6)},
    "triangle": {"binding": ("N",)},
}
_BUFFERS = {"joint_template": (5, 3), "joint_shapedirs": (5, 3, "S")}
_MESH = {"mesh_v_template": ("V", 3), "mesh_faces": ("F", 3), "mesh_shapedirs": ("V", 3, "S"),
         "mesh_exprdirs": ("V", 3, "E"), "mesh_posedirs": ("V", 3, 36), "mesh_j_regressor": (5, "V"),
         "mesh_lbs_weights": ("V", 5)}
_INTEGER = ("binding", "mesh_faces")


def check_avatar_tensors(path: Path, params: dict[str, Tensor], buffers: dict[str, Tensor], rig: str) -> None:
    """Check an avatar file's tensors before use: every required tensor present, shapes consistent
    (one N, S, E, ... throughout), floating tensors finite, indices in range. One
    :class:`HRAvatarError` naming the file and the tensor otherwise."""
    if rig not in _RIG_PARAMS:
        raise HRAvatarError(f"{path}: unknown rig {rig!r} in the avatar metadata; the file is damaged")
    dims: dict[str, int] = {}
    specs = [("param", k, v, True) for k, v in {**_COMMON, **_RIG_PARAMS[rig]}.items()]
    specs += [("param", k, v, False) for k, v in _OPTIONAL.items()]
    specs += [("buffer", k, v, True) for k, v in _BUFFERS.items()]
    if rig == "triangle":
        specs += [("buffer", k, v, True) for k, v in _MESH.items()]
    for kind, name, shape, required in specs:
        src = params if kind == "param" else buffers
        if name not in src:
            if required:
                raise HRAvatarError(f"{path}: tensor {kind}.{name} is missing; the avatar file is damaged")
            continue
        x = src[name]
        bad = x.dim() != len(shape)
        for d, want in zip(x.shape, shape, strict=False):
            if bad:
                break
            if isinstance(want, int):
                bad = d != want
            else:
                bad = dims.setdefault(want, d) != d
        if bad or x.numel() == 0 and name == "means":
            want = "[" + ", ".join(str(w if isinstance(w, int) else dims.get(w, w)) for w in shape) + "]"
            raise HRAvatarError(f"{path}: tensor {kind}.{name} has shape {list(x.shape)}, expected {want}; "
                                "the avatar file is damaged")
        if name in _INTEGER:
            if x.is_floating_point() or x.dtype == torch.bool:
                raise HRAvatarError(f"{path}: tensor {kind}.{name} must hold integers; the avatar file is damaged")
        elif not x.is_floating_point():
            raise HRAvatarError(f"{path}: tensor {kind}.{name} must be floating point; the avatar file is damaged")
        elif not bool(torch.isfinite(x).all()):
            raise HRAvatarError(f"{path}: tensor {kind}.{name} contains NaN or Inf; the avatar file is damaged")
    for name, bound in (("binding", "F"), ("mesh_faces", "V")):
        x = params.get(name, buffers.get(name))
        if x is not None and x.numel() and (int(x.min()) < 0 or int(x.max()) >= dims[bound]):
            raise HRAvatarError(f"{path}: tensor {name} indexes outside 0..{dims[bound] - 1}; "
                                "the avatar file is damaged")


def export_ply(
    avatar: GaussianHead,
    path: str | Path,
    expression: Tensor | None = None,
    pose: Tensor | None = None,
    colors: Tensor | None = None,
    shape: Tensor | None = None,
    translation: Tensor | None = None,
    extra: bool = True,
) -> Path:
    """Write the posed avatar as a standard 3DGS PLY.

    Args:
        avatar: a :class:`GaussianHead`.
        path: destination ``.ply``.
        expression: ``[E']`` or ``[1,E']`` expression coefficients (``None``: neutral).
        pose: ``[5,3]``, ``[15]`` or ``[1,5,3]`` axis-angle radians (``None``: rest pose).
        colors: ``[N,3]`` linear RGB in [0,1] per point (e.g. shaded colours); default the albedo.
        shape, translation: optional ``[S']`` / ``[3]`` (or batch-of-one) identity and offset.
        extra: also store the materials (``albedo_*``, ``roughness``, ``f0``) as extra properties.
    Returns:
        ``path``. Positions in the head-model frame (metres, +y up); the viewer may need to flip y.
    """
    from hravatar.io.ply import write_gaussian_ply

    def batch1(x: Tensor | None, last: tuple[int, ...]) -> Tensor | None:
        if x is None:
            return None
        x = torch.as_tensor(x, device=avatar.device, dtype=torch.float32)
        return x.reshape(1, *last) if last else x.reshape(1, -1)

    with torch.no_grad():
        g = avatar.deform(batch1(shape, ()), batch1(expression, ()), batch1(pose, (5, 3)), batch1(translation, (3,)))
        rgb = avatar.albedo if colors is None else colors.to(avatar.device, torch.float32)
        if rgb.shape != (avatar.num_points, 3):
            raise ValueError(f"colors must be [{avatar.num_points},3], got {list(rgb.shape)}")
        ex: dict[str, Tensor] = {}
        if extra:
            a = avatar.albedo
            ex = {
                "albedo_0": a[:, 0],
                "albedo_1": a[:, 1],
                "albedo_2": a[:, 2],
                "roughness": avatar.roughness[:, 0],
                "f0": avatar.f0[:, 0],
            }
        write_gaussian_ply(
            path,
            g.means[0],
            g.scales[0],
            g.quats[0],
            g.opacities[0],
            rgb.clamp(0, 1),
            normals=g.normals()[0],
            extra=ex or None,
        )
    return Path(path)
