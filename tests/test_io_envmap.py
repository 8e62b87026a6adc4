import numpy as np
import pytest

from hravatar.errors import HRAvatarError
from hravatar.io.envmap import read_envmap, write_envmap


def _env(h=16, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) ** 4 * 500).astype(np.float32)


def test_hdr_round_trip_rgb_order(tmp_path):
    env = _env()
    env[0, 0] = [100.0, 1.0, 0.01]
    got = read_envmap(write_envmap(tmp_path / "a.hdr", env))
    assert got.dtype == np.float32 and got.shape == env.shape
    # RGBE: one shared exponent per pixel, 8-bit mantissas -> error relative to the pixel's max channel
    assert (np.abs(got - env) <= 1e-2 * env.max(-1, keepdims=True) + 1e-6).all()
    assert got[0, 0, 0] > got[0, 0, 1] > got[0, 0, 2]


def test_exr_round_trip_exact(tmp_path):
    env = _env()
    got = read_envmap(write_envmap(tmp_path / "a.exr", env))
    assert np.array_equal(got, env)


def test_negative_clamped_and_nan_rejected(tmp_path):
    env = _env()
    env[1, 1] = [-5.0, 2.0, 3.0]
    assert read_envmap(write_envmap(tmp_path / "n.exr", env))[1, 1, 0] == 0.0
    env[2, 2, 1] = np.nan
    write_envmap(tmp_path / "nan.exr", env)
    with pytest.raises(HRAvatarError, match="NaN"):
        read_envmap(tmp_path / "nan.exr")


@pytest.mark.parametrize("suffix", [".hdr", ".exr"])
def test_corrupt_files(tmp_path, suffix):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(b"#?RADIANCE\ngarbage" if suffix == ".hdr" else b"\x76\x2f\x31\x01garbage")
    with pytest.raises(HRAvatarError, match=f"bad{suffix}"):
        read_envmap(p)
    with pytest.raises(HRAvatarError, match="unsupported"):
        read_envmap(tmp_path / "x.png")


@pytest.mark.parametrize("suffix", [".hdr", ".exr"])
def test_truncated_files(tmp_path, suffix, capfd):
    data = write_envmap(tmp_path / f"ok{suffix}", _env(64, 128)).read_bytes()
    p = tmp_path / f"cut{suffix}"
    p.write_bytes(data[: int(len(data) * 0.7)])
    capfd.readouterr()
    with pytest.raises(HRAvatarError, match=f"cut{suffix}.*(corrupt|truncated)") as e:
        read_envmap(p)
    assert "\n" not in str(e.value)
    out, err = capfd.readouterr()
    assert out == "" and err == "", "the libraries' own diagnostics should be silenced"


def test_shared_envmaps_load(shared_dir):
    env = read_envmap(shared_dir / "data" / "envmaps" / "studio_small_03_1k.hdr")
    assert env.shape == (512, 1024, 3) and env.max() > 100
