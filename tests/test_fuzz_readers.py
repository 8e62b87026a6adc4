"""Seeded fuzzing of the file readers: every mutated file loads or raises HRAvatarError, quickly.

The suite runs a few dozen mutations per reader (seconds); ``HRAVATAR_FUZZ_N=2000`` (or
``python tests/fuzz_readers.py 2000``) runs the long version.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_readers import READERS, fuzz  # noqa: E402


@pytest.mark.parametrize("reader", list(READERS))
def test_mutated_files_load_or_raise_one_line_errors(reader, tmp_path):
    n = int(os.environ.get("HRAVATAR_FUZZ_N", "40"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings of absurd values are fine; exceptions are not
        r = fuzz(reader, tmp_path, n, seed=0)
    assert r["other_exceptions"] == 0, r["failures"]
    assert r["loaded"] + r["hravatar_error"] == n
    assert r["loaded"] > 0 and r["hravatar_error"] > 0  # the mutations reach both outcomes
    assert r["slowest_s"] < 5.0  # no mutation makes a reader hang or allocate for long
