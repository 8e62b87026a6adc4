import numpy as np
import pytest

from hravatar.errors import HRAvatarError
from hravatar.io.ply import read_gaussian_ply, write_gaussian_ply


def _gaussians(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        scales=np.exp(rng.normal(-4, 1, size=(n, 3))).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        opacities=rng.uniform(0.01, 0.99, n).astype(np.float32),
        colors=rng.uniform(0, 1, (n, 3)).astype(np.float32),
    )


def test_round_trip_exact_stored_values(tmp_path):
    g = _gaussians()
    rest = np.random.default_rng(1).normal(size=(50, 15, 3)).astype(np.float32)
    extra = {"roughness": np.linspace(0.5, 1, 50, dtype=np.float32)}
    p = write_gaussian_ply(tmp_path / "a.ply", **g, sh_rest=rest, extra=extra)
    d = read_gaussian_ply(p)
    assert np.array_equal(d["means"], g["means"])
    assert np.array_equal(d["quats"], g["quats"])
    assert np.array_equal(d["sh_rest"], rest)
    assert np.array_equal(d["extra"]["roughness"], extra["roughness"])
    assert np.allclose(d["scales"], g["scales"], rtol=1e-6)
    assert np.allclose(d["opacities"], g["opacities"], atol=1e-6)
    assert np.allclose(d["colors"], g["colors"], atol=1e-6)
    # re-writing the read values reproduces the file byte for byte
    p2 = write_gaussian_ply(tmp_path / "b.ply", d["means"], d["scales"], d["quats"], d["opacities"],
                            d["colors"], sh_rest=d["sh_rest"], extra=d["extra"])
    raw1, raw2 = read_gaussian_ply(p)["raw"], read_gaussian_ply(p2)["raw"]
    for name in raw1.dtype.names:
        if name.startswith(("x", "y", "z", "rot", "f_rest", "rough")):
            assert np.array_equal(raw1[name], raw2[name]), name
    header = p.read_bytes()[:2000].decode("ascii", "replace")
    for prop in ("f_dc_0", "f_rest_44", "opacity", "scale_2", "rot_3", "nx"):
        assert f"property float {prop}\n" in header


def test_malformed(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply")
    with pytest.raises(HRAvatarError, match="bad.ply"):
        read_gaussian_ply(bad)
    p = write_gaussian_ply(tmp_path / "ok.ply", **_gaussians())
    trunc = tmp_path / "trunc.ply"
    trunc.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(HRAvatarError, match="truncated"):
        read_gaussian_ply(trunc)
    mesh = tmp_path / "mesh.ply"
    mesh.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                     b"property float z\nend_header\n0 0 0\n")
    with pytest.raises(HRAvatarError, match="not a Gaussian"):
        read_gaussian_ply(mesh)
