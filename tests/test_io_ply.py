import numpy as np
import pytest

from hravatar.errors import HRAvatarError
from hravatar.io.ply import read_gaussian_ply, write_gaussian_ply, write_ply_vertices


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


def test_raw_copy_is_byte_exact(tmp_path):
    g = _gaussians(n=20, seed=3)
    p = write_gaussian_ply(tmp_path / "a.ply", **g, extra={"f0": np.full(20, 0.04, np.float32)})
    q = write_ply_vertices(tmp_path / "b.ply", read_gaussian_ply(p)["raw"])
    assert q.read_bytes() == p.read_bytes()
    # a big-endian / double file written by another tool is read and re-written as little-endian
    raw = read_gaussian_ply(p)["raw"]
    be = raw.astype([(n, ">f8") for n in raw.dtype.names])
    header = b"ply\nformat binary_big_endian 1.0\ncomment other tool\nelement vertex 20\n"
    header += b"".join(f"property double {n}\n".encode() for n in raw.dtype.names) + b"end_header\n"
    (tmp_path / "be.ply").write_bytes(header + be.tobytes())
    d = read_gaussian_ply(tmp_path / "be.ply")
    assert np.array_equal(d["means"], g["means"]) and np.array_equal(d["extra"]["f0"], np.full(20, 0.04, np.float32))


HEAD = b"ply\nformat binary_little_endian 1.0\n"
PROPS = b"".join(f"property float {n}\n".encode() for n in
                 ["x", "y", "z", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


@pytest.mark.parametrize("name,header,problem", [
    ("count.ply", HEAD + b"element vertex many\n" + PROPS + b"end_header\n", "malformed PLY header line 3"),
    ("neg.ply", HEAD + b"element vertex -2\n" + PROPS + b"end_header\n", "malformed"),
    ("nobody.ply", HEAD + b"element vertex 2\n" + PROPS + b"end_header", "truncated"),
    ("short.ply", HEAD + b"element vertex 2\n" + PROPS + b"end_header\n" + b"\0" * 40, "truncated"),
    ("rest.ply", HEAD + b"element vertex 0\n" + PROPS + b"property float f_rest_0\nend_header\n", "f_rest"),
    ("face.ply", HEAD + b"element face 0\nproperty list uchar int vertex_indices\nelement vertex 0\n" + PROPS
     + b"end_header\n", "precedes"),
    ("fmt.ply", b"ply\nformat binary_middle_endian 1.0\nelement vertex 0\n" + PROPS + b"end_header\n", "format"),
    ("kw.ply", HEAD + b"vertices 3\nelement vertex 0\n" + PROPS + b"end_header\n", "unknown keyword"),
])
def test_malformed_headers(tmp_path, name, header, problem):
    (tmp_path / name).write_bytes(header)
    with pytest.raises(HRAvatarError, match=problem) as e:
        read_gaussian_ply(tmp_path / name)
    assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)


def test_empty_ply_is_valid(tmp_path):
    (tmp_path / "empty.ply").write_bytes(HEAD + b"element vertex 0\n" + PROPS + b"end_header\n")
    d = read_gaussian_ply(tmp_path / "empty.ply")
    assert d["means"].shape == (0, 3) and d["sh_rest"].shape == (0, 0, 3)


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


def test_ascii_ply_from_another_tool(tmp_path):
    body = b"0.1 0.2 0.3 0 -2.3 -2.3 -2.3 1 0 0 0\n1 2 3 2.0 -1 -1 -1 0 0 0 1\n"
    (tmp_path / "a.ply").write_bytes(HEAD.replace(b"binary_little_endian", b"ascii")
                                     + b"element vertex 2\n" + PROPS + b"end_header\n" + body)
    d = read_gaussian_ply(tmp_path / "a.ply")
    assert np.allclose(d["means"], [[0.1, 0.2, 0.3], [1, 2, 3]])
    assert np.allclose(d["opacities"], [0.5, 1 / (1 + np.exp(-2.0))])
    assert np.allclose(d["scales"][0], np.exp(-2.3)) and np.array_equal(d["quats"][1], [0, 0, 0, 1])
    assert np.allclose(d["colors"], 0.5)  # no f_dc: grey
