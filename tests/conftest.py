from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The workplace's ../shared folder (real clip, CC0 HDRs); tests using it skip when absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test (restored after): on a loaded 2-core machine two
    spinning threads made small training steps ~50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
