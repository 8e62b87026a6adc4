"""Gaussian splats as PLY in the standard 3DGS layout (read by common splat viewers).

Per vertex, binary little-endian float32: ``x y z nx ny nz f_dc_0..2 f_rest_0..(3*K-1) opacity
scale_0..2 rot_0..3`` followed by any extra named properties. Stored values follow 3DGS:
``opacity`` is a logit, ``scale_*`` are natural logs, ``rot_*`` a quaternion (w, x, y, z), ``f_dc``
the degree-0 spherical-harmonic coefficient: ``rgb = 0.5 + SH_C0 * f_dc``. The functions here take
and return *activated* values (opacity in [0,1], linear scales, RGB in [0,1]) and convert inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_path

SH_C0 = 0.28209479177387814
_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
          "char": "i1", "int8": "i1", "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
          "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4"}


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def rgb_to_sh(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0,1] -> degree-0 SH coefficient (3DGS ``f_dc``)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh: np.ndarray) -> np.ndarray:
    """Degree-0 SH coefficient -> RGB."""
    return sh * SH_C0 + 0.5


def write_gaussian_ply(
    path: str | Path,
    means: Any,
    scales: Any,
    quats: Any,
    opacities: Any,
    colors: Any,
    sh_rest: Any | None = None,
    normals: Any | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write Gaussians as a 3DGS PLY, atomically.

    Args:
        means: ``[N,3]`` positions.  scales: ``[N,3]`` linear standard deviations (> 0).
        quats: ``[N,4]`` w, x, y, z (any norm).  opacities: ``[N]`` in (0,1).
        colors: ``[N,3]`` RGB in [0,1] (stored as ``f_dc``).
        sh_rest: optional ``[N,K,3]`` higher-order SH coefficients (stored channel-major as 3DGS).
        normals: optional ``[N,3]`` (zeros otherwise, as 3DGS writes).
        extra: optional name -> ``[N]`` float per-point properties appended after the standard ones.
    Returns:
        ``path``.
    """
    means, scales, quats = _np(means), _np(scales), _np(quats)
    opac, rgb = _np(opacities).reshape(-1), _np(colors)
    n = means.shape[0]
    for name, arr, shape in (("scales", scales, (n, 3)), ("quats", quats, (n, 4)), ("colors", rgb, (n, 3))):
        if arr.shape != shape:
            raise ValueError(f"{name} must be {list(shape)}, got {list(arr.shape)}")
    if opac.shape != (n,):
        raise ValueError(f"opacities must be [{n}], got {list(opac.shape)}")
    for name, arr in (("positions", means), ("scales", scales), ("rotations", quats), ("opacities", opac),
                      ("colours", rgb)):
        if not np.isfinite(arr).all():
            raise HRAvatarError(f"{path}: the Gaussians' {name} contain NaN or Inf; nothing written "
                                "(use finite, moderate expression/pose values)")
    cols: list[tuple[str, np.ndarray]] = [("x", means[:, 0]), ("y", means[:, 1]), ("z", means[:, 2])]
    nrm = np.zeros((n, 3), np.float32) if normals is None else _np(normals)
    cols += [("nx", nrm[:, 0]), ("ny", nrm[:, 1]), ("nz", nrm[:, 2])]
    dc = rgb_to_sh(rgb)
    cols += [(f"f_dc_{i}", dc[:, i]) for i in range(3)]
    if sh_rest is not None:
        rest = _np(sh_rest).reshape(n, -1, 3).transpose(0, 2, 1).reshape(n, -1)
        cols += [(f"f_rest_{i}", rest[:, i]) for i in range(rest.shape[1])]
    with np.errstate(divide="ignore"):
        o = np.clip(opac.astype(np.float64), 1e-7, 1 - 1e-7)
        cols.append(("opacity", np.log(o / (1 - o)).astype(np.float32)))
        ls = np.log(np.maximum(scales, 1e-30))
    cols += [(f"scale_{i}", ls[:, i]) for i in range(3)]
    cols += [(f"rot_{i}", quats[:, i]) for i in range(4)]
    for name, arr in (extra or {}).items():
        a = _np(arr).reshape(-1)
        if a.shape != (n,) or not name.isidentifier():
            raise ValueError(f"extra property {name!r} must be [{n}] with an identifier name")
        cols.append((name, a))
    data = np.empty(n, dtype=[(c, "<f4") for c, _ in cols])
    for c, a in cols:
        data[c] = a
    return write_ply_vertices(path, data)


_NAMES = {np.dtype(t).newbyteorder("<"): name for name, t in
          (("float", "f4"), ("double", "f8"), ("uchar", "u1"), ("char", "i1"), ("short", "i2"),
           ("ushort", "u2"), ("int", "i4"), ("uint", "u4"))}


def write_ply_vertices(path: str | Path, data: np.ndarray) -> Path:
    """Write a structured array (one field per vertex property, ``[N]``) as a binary little-endian
    PLY, atomically. ``write_ply_vertices(p, read_gaussian_ply(q)["raw"])`` copies ``q``'s vertex
    data bit for bit (the stored, not the activated, values)."""
    data = np.asarray(data)
    if data.dtype.names is None or data.ndim != 1:
        raise ValueError("data must be a 1-D structured array (one field per property)")
    fields = []
    for name in data.dtype.names:
        t = data.dtype[name]
        if t.shape or t.base.newbyteorder("<") not in _NAMES or not name.isidentifier():
            raise ValueError(f"property {name!r}: unsupported type {t} or name")
        fields.append((name, t.base.newbyteorder("<")))
    le = np.empty(data.shape[0], dtype=fields)
    for name in data.dtype.names:
        le[name] = data[name]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {le.shape[0]}"]
    header += [f"property {_NAMES[t]} {name}" for name, t in fields]
    header.append("end_header")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(le.tobytes())
    return Path(path)


def _parse_header(path: Path, raw: bytes) -> tuple[int, list[tuple[str, str]], int, str]:
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise HRAvatarError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    nl = raw.find(b"\n", end)
    if nl < 0:
        raise HRAvatarError(f"{path}: PLY is truncated (nothing after 'end_header')")
    lines = raw[:end].decode("ascii", "replace").splitlines()
    fmt, count, props, element, elements = "", -1, [], None, []
    for i, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        try:
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element":
                element = parts[1]
                elements.append(element)
                if element == "vertex":
                    count = int(parts[2])
                    if count < 0:
                        raise ValueError("negative count")
            elif parts[0] == "property" and element == "vertex":
                if parts[1] == "list":
                    raise HRAvatarError(f"{path}: list properties on vertices are not a Gaussian PLY")
                if parts[1] not in _TYPES:
                    raise HRAvatarError(f"{path}: unknown PLY property type {parts[1]!r}")
                props.append((parts[2], _TYPES[parts[1]]))
            elif parts[0] not in ("property",):
                raise ValueError(f"unknown keyword {parts[0]!r}")
        except (ValueError, IndexError) as e:
            raise HRAvatarError(f"{path}: malformed PLY header line {i} {line.strip()[:60]!r} ({e})") from None
    if count < 0:
        raise HRAvatarError(f"{path}: PLY has no vertex element")
    if elements[0] != "vertex":
        raise HRAvatarError(f"{path}: PLY element {elements[0]!r} precedes the vertices; not a Gaussian PLY")
    names = [p for p, _ in props]
    if len(set(names)) != len(names):
        raise HRAvatarError(f"{path}: PLY has duplicate vertex properties")
    return count, props, nl + 1, fmt


def read_gaussian_ply(path: str | Path) -> dict[str, Any]:
    """Read a 3DGS PLY (ours or another tool's).

    Returns a dict with activated ``means [N,3]``, ``scales [N,3]`` (linear), ``quats [N,4]``
    (as stored), ``opacities [N]`` (sigmoid), ``colors [N,3]`` (from ``f_dc``), ``sh_rest
    [N,K,3]`` (K may be 0), ``normals [N,3]``, ``extra`` (name -> ``[N]``) and ``raw`` (the
    structured array of stored values).
    """
    path = Path(path)
    if not path.is_file():
        raise HRAvatarError(f"{path}: PLY file not found")
    raw = path.read_bytes()
    count, props, start, fmt = _parse_header(path, raw)
    names = [p for p, _ in props]
    need = ["x", "y", "z", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [k for k in need if k not in names]
    if missing:
        raise HRAvatarError(f"{path}: not a Gaussian-splat PLY (missing {', '.join(missing)})")
    if fmt == "binary_little_endian":
        dtype = np.dtype([(p, "<" + t) for p, t in props])
        if len(raw) - start < count * dtype.itemsize:
            raise HRAvatarError(f"{path}: PLY is truncated ({len(raw) - start} of {count * dtype.itemsize} bytes)")
        data = np.frombuffer(raw, dtype=dtype, count=count, offset=start)
    elif fmt == "binary_big_endian":
        dtype = np.dtype([(p, ">" + t) for p, t in props])
        if len(raw) - start < count * dtype.itemsize:
            raise HRAvatarError(f"{path}: PLY is truncated")
        data = np.frombuffer(raw, dtype=dtype, count=count, offset=start)
    elif fmt == "ascii":
        try:
            vals = np.loadtxt(raw[start:].decode("ascii").splitlines()[:count], dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise HRAvatarError(f"{path}: malformed ASCII PLY body ({e})") from None
        if vals.shape != (count, len(props)):
            raise HRAvatarError(f"{path}: PLY body has {vals.shape} values, header says ({count}, {len(props)})")
        data = np.empty(count, dtype=[(p, t) for p, t in props])
        for i, p in enumerate(names):
            data[p] = vals[:, i]
    else:
        raise HRAvatarError(f"{path}: unknown PLY format {fmt!r}")

    for group in (("f_dc_0", "f_dc_1", "f_dc_2"), ("nx", "ny", "nz")):
        have = [k for k in group if k in names]
        if have and len(have) != len(group):
            absent = ", ".join(k for k in group if k not in names)
            raise HRAvatarError(f"{path}: PLY has {have[0]} but not {absent}; the file is damaged or not a 3DGS PLY")

    def col(*ks: str) -> np.ndarray:
        return np.stack([data[k].astype(np.float32) for k in ks], -1)

    rest_names = [p for p in names if p.startswith("f_rest_")]
    if sorted(rest_names) != sorted(f"f_rest_{i}" for i in range(len(rest_names))) or len(rest_names) % 3:
        raise HRAvatarError(f"{path}: PLY f_rest_* properties must be f_rest_0..f_rest_(3K-1), got {len(rest_names)}")
    rest_names.sort(key=lambda s: int(s.split("_")[-1]))
    k = len(rest_names) // 3
    sh_rest = col(*rest_names).reshape(count, 3, k).transpose(0, 2, 1) if k else np.zeros((count, 0, 3), np.float32)
    colors = sh_to_rgb(col("f_dc_0", "f_dc_1", "f_dc_2")) if "f_dc_0" in names else np.full((count, 3), 0.5, np.float32)
    normals = col("nx", "ny", "nz") if "nx" in names else np.zeros((count, 3), np.float32)
    standard = set(need) | {"nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"} | set(rest_names)
    opacity_logit = data["opacity"].astype(np.float64)
    means = col("x", "y", "z")
    if not np.isfinite(means).all():
        raise HRAvatarError(f"{path}: PLY positions contain NaN or Inf")
    with np.errstate(over="ignore"):  # huge logits / log-scales saturate to 0, 1 or inf as intended
        scales = np.exp(col("scale_0", "scale_1", "scale_2").astype(np.float64)).astype(np.float32)
        opacities = (1.0 / (1.0 + np.exp(-opacity_logit))).astype(np.float32)
    return {
        "means": means,
        "scales": scales,
        "quats": col("rot_0", "rot_1", "rot_2", "rot_3"),
        "opacities": opacities,
        "colors": colors,
        "sh_rest": sh_rest,
        "normals": normals,
        "extra": {p: data[p].astype(np.float32) for p in names if p not in standard},
        "raw": data,
    }
