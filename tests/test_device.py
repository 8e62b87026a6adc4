"""hravatar.device: the CPU allocator tuning (used by the trainer and the benchmarks)."""

from __future__ import annotations

from hravatar.device import tune_cpu_allocator


def test_tune_cpu_allocator_sets_mallopt_once(monkeypatch):
    """The two mallopt calls (no mmap for large blocks, no heap trimming) are made once; the
    environment switch turns them off."""
    import ctypes
    import platform

    import hravatar.device as tr

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(tr, "_ALLOCATOR_TUNED", None)
    monkeypatch.delenv("HRAVATAR_NO_MALLOPT", raising=False)
    assert tune_cpu_allocator() is True
    assert calls == [(-4, 0), (-1, 2**31 - 1)]  # M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 2 GiB - 1
    assert tune_cpu_allocator() is True and len(calls) == 2  # cached: not applied twice
    monkeypatch.setattr(tr, "_ALLOCATOR_TUNED", None)
    monkeypatch.setenv("HRAVATAR_NO_MALLOPT", "1")
    assert tune_cpu_allocator() is False and len(calls) == 2
