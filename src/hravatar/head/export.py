"""Mesh writers for head models: OBJ (text) and binary PLY with optional vertex colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_path


def write_obj(path: str | Path, verts: np.ndarray, faces: np.ndarray) -> Path:
    """Write ``verts [V,3]`` (metres) and ``faces [F,3]`` (0-based) as a Wavefront OBJ."""
    path = Path(path)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(verts, dtype=np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, dtype=np.int64)]
    with atomic_path(path) as tmp:
        tmp.write_text("# hravatar head model, metres, +y up, +z out of the face\n" + "\n".join(lines) + "\n")
    return path


def write_ply(
    path: str | Path, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None
) -> Path:
    """Write a binary little-endian PLY mesh; ``colors [V,3]`` in [0,1] become uchar RGB."""
    path = Path(path)
    v = np.asarray(verts, dtype=np.float32)
    f = np.asarray(faces, dtype=np.int32)
    props = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", "comment hravatar head model, metres",
              f"element vertex {len(v)}", "property float x", "property float y", "property float z"]
    if colors is not None:
        props += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    vert = np.empty(len(v), dtype=props)
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
        c = (np.clip(np.asarray(colors, dtype=np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
        vert["red"], vert["green"], vert["blue"] = c[:, 0], c[:, 1], c[:, 2]
    face = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, f
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vert.tobytes())
        fh.write(face.tobytes())
    return path


def write_mesh(
    path: str | Path, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None
) -> Path:
    """Write ``.ply`` or ``.obj`` according to the suffix of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".ply":
        return write_ply(path, verts, faces, colors)
    if suffix == ".obj":
        return write_obj(path, verts, faces)
    raise HRAvatarError(f"{path}: unknown mesh format {suffix!r}; use .ply or .obj")
