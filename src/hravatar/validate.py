"""Checks of user-given numbers: one :class:`~hravatar.errors.HRAvatarError` line naming the option."""

from __future__ import annotations

import math

from hravatar.errors import HRAvatarError

#: largest magnitude accepted for an expression / shape coefficient given on the command line
#: (trained coefficients stay within a few units; larger values only tear the mesh apart)
MAX_COEFF = 10.0
#: largest magnitude accepted for an angle given on the command line (radians)
MAX_ANGLE = 2 * math.pi


def number(text: str, option: str, limit: float | None = None) -> float:
    """``text`` as a finite float with ``|value| <= limit``; else a one-line error naming ``option``
    (e.g. ``"--expression jawOpen"``)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise HRAvatarError(f"{option}: {str(text)[:40]!r} is not a number; give e.g. 0.5") from None
    if not math.isfinite(v):
        raise HRAvatarError(f"{option}: {text.strip()[:40]} is not a finite number; give a finite value")
    if limit is not None and abs(v) > limit:
        raise HRAvatarError(f"{option}: {v:g} is out of range; use a value between {-limit:g} and {limit:g}")
    return v
