"""CPU backend (C++ kernel). Placeholder until the kernel lands: reports unavailable."""

from __future__ import annotations


def available() -> bool:
    """Whether the C++ kernel can be used (compiling it on first call)."""
    return False
