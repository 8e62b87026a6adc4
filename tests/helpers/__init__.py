"""Test helpers (not part of the library): synthetic heads, subjects, clips and G-buffers.

Tests import them as ``from helpers.<module> import ...`` (``tests/`` is on ``sys.path`` under
pytest); benchmarks and scripts that reuse them put ``tests/`` on ``sys.path`` first.
"""
