"""The trainer's CPU allocator tuning."""

from __future__ import annotations

from hravatar.device import tune_cpu_allocator


def test_tune_cpu_allocator_is_idempotent():
    assert tune_cpu_allocator() == tune_cpu_allocator()
