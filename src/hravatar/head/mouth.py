"""Mouth interior (teeth rows and cavity) for any head model (work in progress: currently a no-op)."""

from __future__ import annotations

from hravatar.head.model import HeadModel


def add_mouth_interior(model: HeadModel) -> HeadModel:
    """Return ``model`` with teeth and a mouth cavity added (placeholder: returns it unchanged)."""
    return model
