"""Seeded mutation fuzzing of the file readers (PLY, HDR, EXR, subject JSON, avatar safetensors).

Each reader gets a small valid file; every mutation (bit flips, byte overwrites with digits or
0xff, truncation, deleted or duplicated spans, numbers in text swapped for huge or odd ones) is
written to disk and read back. A mutation passes when the reader returns or raises
:class:`~hravatar.errors.HRAvatarError`; any other exception is a failure.

Used by ``tests/test_fuzz_readers.py`` (a few dozen mutations per reader) and runnable alone for a
long run::

    PYTHONPATH=src python tests/fuzz_readers.py 2000
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hravatar.errors import HRAvatarError

_ODD_NUMBERS = [b"999999996", b"-1", b"0", b"1e308", b"nan", b"-inf", b"4294967297", b"1" * 400, b"0.5"]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random mutation of ``data``."""
    b = bytearray(data)
    n = len(b)
    kind = int(rng.integers(0, 7))
    if kind == 0:  # flip 1-8 bits
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, n))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # truncate
        return bytes(b[: int(rng.integers(0, n))])
    elif kind == 2:  # overwrite a few bytes with interesting values
        i = int(rng.integers(0, n))
        vals = [0x00, 0xFF, 0x7F, 0x80, ord("9"), ord("-"), ord(" "), ord("\n")]
        for k in range(int(rng.integers(1, 5))):
            if i + k < n:
                b[i + k] = vals[int(rng.integers(0, len(vals)))]
    elif kind == 3:  # delete a span
        i = int(rng.integers(0, n))
        del b[i : i + int(rng.integers(1, 64))]
    elif kind == 4:  # duplicate a span
        i = int(rng.integers(0, n))
        b[i:i] = b[i : i + int(rng.integers(1, 64))]
    else:  # replace a number in the (text) header by an odd one
        head = bytes(b[: min(n, 4096)])
        nums = list(re.finditer(rb"-?\d+(\.\d+)?(e-?\d+)?", head))
        if not nums:
            b[int(rng.integers(0, n))] ^= 0xFF
        else:
            m = nums[int(rng.integers(0, len(nums)))]
            new = _ODD_NUMBERS[int(rng.integers(0, len(_ODD_NUMBERS)))]
            b[m.start() : m.end()] = new
    return bytes(b)


# ---- valid seeds and readers ------------------------------------------------------------------------
def _ply_seed(root: Path) -> tuple[Path, Callable[[Path], object]]:
    from hravatar.io.ply import read_gaussian_ply, write_gaussian_ply

    g = np.random.default_rng(0)
    n = 12
    p = write_gaussian_ply(root / "seed.ply", g.normal(size=(n, 3)), np.full((n, 3), 0.01), g.normal(size=(n, 4)),
                           np.full(n, 0.5), g.uniform(size=(n, 3)), sh_rest=g.normal(size=(n, 3, 3)) * 0.1,
                           extra={"roughness": np.full(n, 0.7)})
    return p, read_gaussian_ply


def _ply_ascii_seed(root: Path) -> tuple[Path, Callable[[Path], object]]:
    from hravatar.io.ply import read_gaussian_ply

    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    lines = ["ply", "format ascii 1.0", "element vertex 3"] + [f"property float {k}" for k in names] + ["end_header"]
    lines += [" ".join(f"{0.1 * (i + j):.3f}" for j in range(len(names))) for i in range(3)]
    p = root / "seed_ascii.ply"
    p.write_text("\n".join(lines) + "\n")
    return p, read_gaussian_ply


def _envmap_seed(suffix: str) -> Callable[[Path], tuple[Path, Callable[[Path], object]]]:
    def seed(root: Path) -> tuple[Path, Callable[[Path], object]]:
        from hravatar.io.envmap import read_envmap, write_envmap

        g = np.random.default_rng(1)
        p = write_envmap(root / f"seed{suffix}", g.uniform(0, 4, size=(8, 16, 3)).astype(np.float32))
        return p, read_envmap

    return seed


def _subject_seed(name: str) -> Callable[[Path], tuple[Path, Callable[[Path], object]]]:
    """A 3-frame subject; the mutated file is its ``name`` (tracked_params.json or manifest.json)."""

    def seed(root: Path) -> tuple[Path, Callable[[Path], object]]:
        from hravatar.data import SubjectParams, load_subject, write_subject

        T = 3
        vm = np.eye(4)
        vm[2, 3] = 0.5
        params = SubjectParams(shape=np.zeros(4), expression=np.full((T, 3), 0.1), pose=np.zeros((T, 5, 3)),
                               translation=np.zeros((T, 3)), viewmat=vm,
                               K=np.array([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]), image_size=(16, 16),
                               crop_boxes=np.tile([8.0, 8.0, 12.0], (T, 1)))
        frames = [np.full((16, 16, 4), 200, np.uint8) for _ in range(T)]
        subj = write_subject(root / f"subj_{name.split('.')[0]}", frames, params, {"source": "fuzz"})

        def read(p: Path) -> object:
            ds = load_subject(p.parent, "all")
            return ds[0]

        return subj / name, read

    return seed


def _avatar_seed(root: Path) -> tuple[Path, Callable[[Path], object]]:
    from helpers.synthetic_head import synthetic_head
    from hravatar.gaussians import AvatarConfig, GaussianHead, load_gaussians, save_gaussians

    av = GaussianHead.from_head_model(synthetic_head(subdivisions=0), AvatarConfig(points_per_face=1))
    p = root / "seed.safetensors"
    save_gaussians(av, p)

    def read(path: Path) -> object:
        a = load_gaussians(path)
        with torch.no_grad():
            return a.deform(None, None, None, None)

    return p, read


READERS: dict[str, Callable[[Path], tuple[Path, Callable[[Path], object]]]] = {
    "ply": _ply_seed,
    "ply_ascii": _ply_ascii_seed,
    "hdr": _envmap_seed(".hdr"),
    "exr": _envmap_seed(".exr"),
    "subject_json": _subject_seed("tracked_params.json"),
    "manifest_json": _subject_seed("manifest.json"),
    "avatar": _avatar_seed,
}


def fuzz(name: str, root: Path, n: int, seed: int = 0) -> dict[str, object]:
    """Run ``n`` mutations of reader ``name`` in ``root``; returns counts, the slowest mutation's
    seconds and the first few non-HRAvatarError failures (``(index, type, message)``)."""
    root.mkdir(parents=True, exist_ok=True)
    path, read = READERS[name](root)
    original = path.read_bytes()
    rng = np.random.default_rng(seed)
    ok = user_err = 0
    failures: list[tuple[int, str, str]] = []
    slowest = 0.0
    try:
        for i in range(n):
            path.write_bytes(mutate(original, rng))
            t0 = time.perf_counter()
            try:
                read(path)
                ok += 1
            except HRAvatarError:
                user_err += 1
            except Exception as e:  # noqa: BLE001 - what the fuzzer looks for
                tb = traceback.extract_tb(e.__traceback__)[-1]
                failures.append((i, type(e).__name__, f"{str(e)[:150]} at {Path(tb.filename).name}:{tb.lineno}"))
            slowest = max(slowest, time.perf_counter() - t0)
    finally:
        path.write_bytes(original)
    return {"reader": name, "mutations": n, "loaded": ok, "hravatar_error": user_err,
            "other_exceptions": len(failures), "failures": failures[:5], "slowest_s": round(slowest, 3)}


def main(argv: list[str]) -> int:
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    n = int(argv[0]) if argv else 2000
    names = argv[1:] or list(READERS)
    total_bad = 0
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            t0 = time.perf_counter()
            r = fuzz(name, Path(d) / name, n, seed=1)
            r["seconds"] = round(time.perf_counter() - t0, 1)
            total_bad += int(r["other_exceptions"])
            print(json.dumps(r))
    print(f"non-HRAvatarError exceptions: {total_bad}")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
