"""CPU backend: the C++ kernel in ``csrc/rasterize.cpp``, built on first use and loaded with ctypes.

Build: ``$HRAVATAR_CXX`` (else ``$CXX``, else ``g++``/``c++``/``clang++``) with
``-O3 -march=native -fopenmp`` into ``hravatar.assets.cache_dir() / "kernels"``, keyed by a
hash of the source, the compiler's version, the flags and the CPU's feature flags. Concurrent
first calls are safe: compilation holds a file lock and writes to a temporary file that is
atomically renamed. The library is loaded after ``torch`` (imported above), so it binds to the
OpenMP runtime torch already loaded (one runtime per process). Set ``HRAVATAR_CXX=none`` to
disable the kernel (the reference backend is then used after a warning).
``HRAVATAR_KERNEL_FLAGS`` appends compiler flags (part of the cache key), e.g. ``-mno-avx512f``
to measure on an AVX-512 machine what an AVX2-only machine runs.

``OMP_WAIT_POLICY=PASSIVE`` is put into the environment by :mod:`hravatar.render` when the user
has not set it; the OpenMP runtime reads it only once, when it starts (``import torch``), so it
takes effect only when ``hravatar`` is imported before ``torch``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from hravatar.render.projection import TILE_SIZE, Projected, tile_bounds

_SRC = Path(__file__).with_name("csrc") / "rasterize.cpp"
_BASE_FLAGS = [
    "-O3",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-fopenmp",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-ffp-contract=off",
]
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None
_warned = False


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    env = os.environ.get("HRAVATAR_CXX")
    if env is not None:
        return None if env.strip().lower() in ("", "none", "0", "off") else env
    for cand in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _flags(cxx: str, cpu_flags: str) -> list[str]:
    flags = list(_BASE_FLAGS)
    if platform.machine() in ("x86_64", "AMD64", "i686"):
        flags.append("-march=native")
        if "avx512f" in cpu_flags.split() and "clang" not in cxx:
            flags.append("-mprefer-vector-width=512")
    else:
        flags.append("-mcpu=native")
    extra = os.environ.get("HRAVATAR_KERNEL_FLAGS", "").split()
    return flags + extra


def kernel_path(src: Path = _SRC, extra_flags: tuple[str, ...] = ()) -> tuple[Path, list[str], str]:
    """Where the compiled library of ``src`` (default: the rasterizer) for this source/compiler/CPU
    and ``extra_flags`` lives, the flags and the compiler."""
    from hravatar.assets import cache_dir  # noqa: PLC0415

    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set HRAVATAR_CXX or install g++)")
    cpu = _cpu_flags()
    flags = _flags(cxx, cpu) + list(extra_flags)
    h = hashlib.sha256()
    for part in (
        src.read_bytes(),
        cxx.encode(),
        _compiler_version(cxx).encode(),
        " ".join(flags).encode(),
        cpu.encode(),
        platform.machine().encode(),
    ):
        h.update(part)
        h.update(b"\0")
    out_dir = cache_dir() / "kernels"
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{src.stem}-{h.hexdigest()[:20]}.so", flags, cxx


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(src: Path = _SRC, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``src`` (a self-contained C++ file with ``extern "C"`` entry points) with the usual
    flags plus ``extra_flags`` into the per-user kernel cache unless already there; returns the
    shared library's path. Raises RuntimeError."""
    so, flags, cxx = kernel_path(src, extra_flags)
    if so.is_file():
        return so
    with _file_lock(so.with_suffix(".lock")):
        if so.is_file():  # built by another process while we waited
            return so
        fd, tmp = tempfile.mkstemp(prefix=so.stem + ".", suffix=".tmp.so", dir=so.parent)
        os.close(fd)
        try:
            cmd = [cxx, *flags, str(src), "-o", tmp]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if res.returncode != 0 and "-march=native" in flags:
                cmd = [
                    cxx,
                    *[f for f in flags if "native" not in f and "vector-width" not in f],
                    str(src),
                    "-o",
                    tmp,
                ]
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise RuntimeError(f"compiling {src.name} failed: {res.stderr.strip()[-2000:]}")
            os.replace(tmp, so)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return so


def _bind(lib: ctypes.CDLL) -> None:
    i32, i64, p = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    lib.hr_version.restype = i32
    lib.hr_max_channels.restype = i32
    lib.hr_channels_for.restype = i32
    lib.hr_channels_for.argtypes = [i32]
    lib.hr_max_threads.restype = i32
    lib.hr_bin.restype = i64
    lib.hr_bin.argtypes = [i32, i32, i32, i32, p, p, p, p]
    lib.hr_forward.restype = i32
    lib.hr_forward.argtypes = [i32] * 6 + [p] * 11
    lib.hr_backward.restype = i32
    lib.hr_backward.argtypes = [i32] * 6 + [p] * 13
    f32 = ctypes.c_float
    lib.hr_project_fwd.restype = i32
    lib.hr_project_fwd.argtypes = [i32] * 5 + [p] * 6 + [f32] * 4 + [p] * 4
    lib.hr_project_bwd.restype = i32
    lib.hr_project_bwd.argtypes = [i32] * 5 + [p] * 5 + [f32] + [p] * 7
    lib.hr_render.restype = i64
    lib.hr_render.argtypes = [i32] * 5 + [p] * 7 + [f32] * 4 + [i32] + [p] * 6


def load() -> ctypes.CDLL:
    """The loaded kernel library (building it if needed). Raises RuntimeError when impossible."""
    global _lib, _error
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:
            raise RuntimeError(_error)
        try:
            lib = ctypes.CDLL(str(build()))
            _bind(lib)
        except Exception as exc:  # noqa: BLE001 - any failure means: fall back
            _error = str(exc)
            raise RuntimeError(_error) from exc
        _lib = lib
        return lib


def available() -> bool:
    """Whether the C++ kernel can be used; on the first failure warns once (then ``False``)."""
    global _warned
    try:
        load()
        return True
    except RuntimeError as exc:
        if not _warned:
            _warned = True
            warnings.warn(
                f"hravatar.render: the C++ CPU rasterizer is unavailable ({exc}); using the dense "
                "PyTorch reference backend, which is slow and memory hungry. Install a C++ compiler "
                "with OpenMP (e.g. `apt install g++`) to get the fast backend.",
                RuntimeWarning,
                stacklevel=3,
            )
        return False


def num_threads() -> int:
    """Threads the kernel uses: ``torch.get_num_threads()``."""
    return max(1, torch.get_num_threads())


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def bin_tiles(
    means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Per-tile, depth-ordered Gaussian lists: ``(offsets [C*TH*TW+1] int64, ids [M] int32)``.

    ``ids`` are flat ``c * N + n``; ties in depth keep index order (as gsplat's stable radix sort).
    """
    lib = load()
    C, N = means2d.shape[:2]
    tw = (width + TILE_SIZE - 1) // TILE_SIZE
    th = (height + TILE_SIZE - 1) // TILE_SIZE
    rects = tile_bounds(means2d, radii, width, height).to(torch.int32).contiguous()
    order = torch.sort(depths.detach().float(), dim=1, stable=True).indices.contiguous()
    offsets = torch.empty(C * tw * th + 1, dtype=torch.int64)
    total = lib.hr_bin(C, N, width, height, _ptr(rects), _ptr(order), _ptr(offsets), None)
    ids = torch.empty(max(int(total), 1), dtype=torch.int32)
    lib.hr_bin(C, N, width, height, _ptr(rects), _ptr(order), _ptr(offsets), _ptr(ids))
    return offsets, ids


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, offsets, ids, width, height, absgrad):  # type: ignore[override]
        lib = load()
        C, N, D = colors.shape
        m2 = means2d.detach().float().contiguous()
        con = conics.detach().float().contiguous()
        col = colors.detach().float().contiguous()
        op = opacities.detach().float().contiguous()
        bg = None if backgrounds is None else backgrounds.detach().float().contiguous()
        out = torch.empty(C, height, width, D, dtype=torch.float32)
        alpha = torch.empty(C, height, width, dtype=torch.float32)
        t_final = torch.empty(C, height, width, dtype=torch.float32)
        last = torch.empty(C, height, width, dtype=torch.int32)
        rc = lib.hr_forward(
            C,
            N,
            D,
            width,
            height,
            num_threads(),
            _ptr(m2),
            _ptr(con),
            _ptr(col),
            _ptr(op),
            _ptr(bg),
            _ptr(offsets),
            _ptr(ids),
            _ptr(out),
            _ptr(alpha),
            _ptr(t_final),
            _ptr(last),
        )
        if rc != 0:
            raise RuntimeError(f"hr_forward failed (code {rc})")
        ctx.save_for_backward(
            m2, con, col, op, bg if bg is not None else torch.empty(0), offsets, ids, t_final, last
        )
        ctx.has_bg = bg is not None
        ctx.dims = (C, N, D, width, height)
        ctx.absgrad = absgrad
        ctx.means2d_ref = means2d if absgrad else None
        ctx.dtypes = (means2d.dtype, conics.dtype, colors.dtype, opacities.dtype)
        return out.to(colors.dtype), alpha[..., None].to(colors.dtype)

    @staticmethod
    def backward(ctx, v_out, v_alpha):  # type: ignore[override]
        lib = load()
        m2, con, col, op, bg, offsets, ids, t_final, last = ctx.saved_tensors
        C, N, D, width, height = ctx.dims
        bg = bg if ctx.has_bg else None
        v_out = (torch.zeros(C, height, width, D) if v_out is None else v_out).float().contiguous()
        v_alpha = (torch.zeros(C, height, width) if v_alpha is None else v_alpha[..., 0]).float().contiguous()
        K = 8 + D
        n_isect = int(offsets[-1])
        slots = torch.empty(max(n_isect, 1), K, dtype=torch.float32)  # zeroed per tile by the kernel
        grads = torch.zeros(C * N, K, dtype=torch.float32)
        rc = lib.hr_backward(
            C,
            N,
            D,
            width,
            height,
            num_threads(),
            _ptr(m2),
            _ptr(con),
            _ptr(col),
            _ptr(op),
            _ptr(bg),
            _ptr(offsets),
            _ptr(ids),
            _ptr(t_final),
            _ptr(last),
            _ptr(v_out),
            _ptr(v_alpha),
            _ptr(slots),
            _ptr(grads),
        )
        if rc != 0:
            raise RuntimeError(f"hr_backward failed (code {rc})")
        grads = grads.view(C, N, K)
        dt_m, dt_c, dt_col, dt_o = ctx.dtypes
        v_means2d = grads[..., 0:2].to(dt_m)
        v_conics = grads[..., 2:5].to(dt_c)
        v_op = grads[..., 5].to(dt_o)
        v_col = grads[..., 6 : 6 + D].to(dt_col)
        if ctx.absgrad and ctx.means2d_ref is not None:
            absg = grads[..., 6 + D : 8 + D].to(dt_m)
            prev = getattr(ctx.means2d_ref, "absgrad", None)
            ctx.means2d_ref.absgrad = absg if prev is None else prev + absg
        v_bg = None
        if ctx.has_bg and ctx.needs_input_grad[4]:
            v_bg = (t_final[..., None] * v_out).sum((1, 2))
        return v_means2d, v_conics, v_col, v_op, v_bg, None, None, None, None, None


def rasterize_to_pixels_cpu(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    absgrad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians with the C++ kernel (differentiable, CPU tensors).

    Same arguments and results as
    :func:`hravatar.render.reference.rasterize_to_pixels_reference`. Channel counts without a
    compiled kernel are padded with zero channels; counts above 32 are rendered in chunks of at
    most 32 (then ``absgrad`` only sees the first chunk's channels).
    """
    if means2d.device.type != "cpu":
        raise ValueError("the cpu rasterizer backend needs CPU tensors; use backend='cuda' for CUDA tensors")
    C, N = means2d.shape[:2]
    D = colors.shape[-1]
    if N == 0 or C == 0:
        img = torch.zeros(C, height, width, D, dtype=colors.dtype)
        if backgrounds is not None:
            img = img + backgrounds[:, None, None, :].to(colors.dtype)
        img = img + 0.0 * (colors.sum() + means2d.sum() + conics.sum() + opacities.sum())
        return img, torch.zeros(C, height, width, 1, dtype=colors.dtype)
    offsets, ids = bin_tiles(means2d, radii, depths, width, height)
    lib = load()
    dmax = lib.hr_max_channels()
    n_chunks = -(-D // dmax)
    bounds = [round(i * D / n_chunks) for i in range(n_chunks + 1)]
    outs, alphas = [], None
    for i in range(n_chunks):
        lo, hi = bounds[i], bounds[i + 1]
        col = colors[..., lo:hi]
        bg = None if backgrounds is None else backgrounds[:, lo:hi]
        pad = lib.hr_channels_for(hi - lo) - (hi - lo)
        if pad:  # zero channels up to the next compiled channel count
            col = torch.cat([col, col.new_zeros(C, N, pad)], dim=-1)
            bg = None if bg is None else torch.cat([bg, bg.new_zeros(C, pad)], dim=-1)
        o, a = _RasterizeCPU.apply(
            means2d, conics, col, opacities, bg, offsets, ids, width, height, absgrad and i == 0
        )
        outs.append(o[..., : hi - lo])
        alphas = a if alphas is None else alphas
    return (outs[0] if n_chunks == 1 else torch.cat(outs, dim=-1)), alphas


_extra_libs: dict[tuple, ctypes.CDLL] = {}
_extra_errors: dict[tuple, str] = {}

#: Flags of the inference-only builds (``hravatar.render.fast``, ``hravatar.shading.fast``): FMA
#: contraction is allowed there (about 15% faster compositing); the training build keeps
#: ``-ffp-contract=off`` because its forward and backward must take bit-identical decisions.
INFERENCE_FLAGS = ("-ffp-contract=fast",)


def load_library(src: Path, bind: Callable[[ctypes.CDLL], None], extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Build (on first use, cached as :func:`build` does) and load a self-contained C++ source of
    this package with ``extra_flags``; ``bind`` sets the ctypes signatures. Raises RuntimeError
    when impossible (the failure is remembered: later calls raise at once)."""
    key = (Path(src), tuple(extra_flags))
    with _lock:
        if key in _extra_libs:
            return _extra_libs[key]
        if key in _extra_errors:
            raise RuntimeError(_extra_errors[key])
        try:
            lib = ctypes.CDLL(str(build(key[0], key[1])))
            bind(lib)
        except Exception as exc:  # noqa: BLE001 - any failure means: fall back
            _extra_errors[key] = str(exc)
            raise RuntimeError(str(exc)) from exc
        _extra_libs[key] = lib
        return lib


def load_inference() -> ctypes.CDLL:
    """The rasterizer built with :data:`INFERENCE_FLAGS` (for ``hr_render``)."""
    return load_library(_SRC, _bind, INFERENCE_FLAGS)


class _ProjectCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d, clip):  # type: ignore[override]
        lib = load()
        C, N = viewmats.shape[0], means.shape[0]
        args = [t.detach().float().contiguous() for t in (means, quats, scales, opacities, viewmats, Ks)]
        m2 = torch.empty(C, N, 2)
        con = torch.empty(C, N, 3)
        dep = torch.empty(C, N)
        radii = torch.empty(C, N, 2, dtype=torch.int32)
        lib.hr_project_fwd(C, N, width, height, num_threads(), *[_ptr(t) for t in args], near, far, eps2d, clip,
                           _ptr(m2), _ptr(con), _ptr(dep), _ptr(radii))
        ctx.save_for_backward(*args[:3], args[4], args[5], radii)
        ctx.dims = (C, N, width, height, eps2d)
        ctx.mark_non_differentiable(radii)
        return m2, con, dep, radii

    @staticmethod
    def backward(ctx, v_m2, v_con, v_dep, _v_radii):  # type: ignore[override]
        lib = load()
        means, quats, scales, vms, Ks, radii = ctx.saved_tensors
        C, N, width, height, eps2d = ctx.dims
        z = torch.zeros
        v_m2 = z(C, N, 2) if v_m2 is None else v_m2.float().contiguous()
        v_con = z(C, N, 3) if v_con is None else v_con.float().contiguous()
        v_dep = z(C, N) if v_dep is None else v_dep.float().contiguous()
        gm, gq, gs = torch.empty(N, 3), torch.empty(N, 4), torch.empty(N, 3)
        lib.hr_project_bwd(C, N, width, height, num_threads(), _ptr(means), _ptr(quats), _ptr(scales), _ptr(vms),
                           _ptr(Ks), eps2d, _ptr(radii), _ptr(v_m2), _ptr(v_con), _ptr(v_dep), _ptr(gm), _ptr(gq),
                           _ptr(gs))
        return gm, gq, gs, None, None, None, None, None, None, None, None, None


def project_gaussians_cpu(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
) -> Projected:
    """:func:`hravatar.render.projection.project_gaussians` in C++ (float32, CPU), with a hand-written
    backward to ``means``, ``quats`` and ``scales`` (the cameras get no gradient: use the PyTorch
    projection when ``viewmats``/``Ks`` require one). Same arguments and result."""
    C, N = viewmats.shape[0], means.shape[0]
    m2, con, dep, radii = _ProjectCPU.apply(means, quats, scales, opacities, viewmats, Ks, int(width), int(height),
                                            float(near_plane), float(far_plane), float(eps2d), float(radius_clip))
    return Projected(m2, con, dep, opacities.expand(C, N), radii)
