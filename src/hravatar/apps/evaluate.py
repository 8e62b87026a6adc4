"""``hravatar evaluate AVATAR``: test-frame metrics and side-by-side images (see :mod:`hravatar.evaluate`)."""

from __future__ import annotations

from hravatar.evaluate import EvaluateConfig
from hravatar.evaluate import evaluate as _evaluate


def evaluate(cfg: EvaluateConfig) -> int:
    """Evaluate ``cfg.avatar`` on its subject's test frames; writes metrics.json, per_frame.csv, images/."""
    return _evaluate(cfg)
