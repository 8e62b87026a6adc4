import numpy as np
import pytest

from hravatar.errors import HRAvatarError
from hravatar.io.image import read_image, to_float, to_uint8, write_image


def test_png_rgba_round_trip(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (9, 11, 4), dtype=np.uint8)
    assert np.array_equal(read_image(write_image(tmp_path / "a.png", img)), img)
    rgb = img[..., :3]
    assert np.array_equal(read_image(write_image(tmp_path / "b.png", rgb)), rgb)


def test_float_helpers():
    x = np.array([0.0, 0.5, 1.0, 2.0, -1.0], np.float32)
    assert to_uint8(x).tolist() == [0, 128, 255, 255, 0]
    assert to_float(np.array([255], np.uint8))[0] == 1.0


def test_bad_image(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"nope")
    with pytest.raises(HRAvatarError, match="x.png"):
        read_image(p)
