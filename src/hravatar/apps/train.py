"""``hravatar train SUBJECT -o AVATAR``: train an avatar (see :mod:`hravatar.train`)."""

from __future__ import annotations

from hravatar.train import TrainConfig
from hravatar.train import train as _train


def train(cfg: TrainConfig) -> int:
    """Train, or with ``--resume`` continue, the avatar of ``cfg.subject`` into ``cfg.output``."""
    return _train(cfg)
