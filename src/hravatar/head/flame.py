"""FLAME loader for the user's own file (FLAME 2020 ``generic_model.pkl``, FLAME 2023, FLAME 2023 Open).

FLAME is not shipped with hravatar and nothing derived from it is written to disk: the user
downloads it from https://flame.is.tue.mpg.de after accepting its licence and points hravatar at
it (``--flame-path`` or ``$HRAVATAR_FLAME_PATH``).

The pickle is read by a **restricted unpickler** that rebuilds only numpy arrays and dtypes, scipy
sparse matrices, plain containers, and chumpy ``Ch`` objects (turned into numpy arrays without
importing chumpy). Any other global a pickle asks for is refused with :class:`HRAvatarError`, so a
malicious file cannot run code.

Fields used (FLAME's names): ``v_template [V,3]``, ``f [F,3]``, ``shapedirs [V,3,400]`` (300 shape
+ 100 expression components), ``posedirs [V,3,36]`` (or ``[V*3,36]``), ``J_regressor [5,V]``
(sparse or dense), ``weights [V,5]``, ``kintree_table [2,5]``. The model keeps the first 100
shape and 50 expression components. FLAME's frame and units already match hravatar's (metres,
+y up, +z out of the face).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hravatar.errors import HRAvatarError
from hravatar.head.model import PARENTS, REGION_NAMES, HeadModel

WHERE = ("FLAME is the user's own file: download generic_model.pkl (FLAME 2020) or flame2023.pkl / "
         "FLAME 2023 Open from https://flame.is.tue.mpg.de after accepting the licence, then pass "
         "--flame-path or set $HRAVATAR_FLAME_PATH")
NUM_SHAPE, NUM_EXPR = 100, 50


class _ChumpyStub:
    """Stands in for any chumpy class; keeps the pickled state so the array ``x`` can be read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # pragma: no cover
        from numpy.core.numeric import _frombuffer
    out: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = ma._reconstruct
        out[(mod, "scalar")] = ma.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = _frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    return out


def _sparse_globals() -> dict[tuple[str, str], Any]:
    import scipy.sparse as sp

    out: dict[tuple[str, str], Any] = {}
    for kind in ("csc", "csr", "coo"):
        cls = getattr(sp, f"{kind}_matrix")
        for mod in (f"scipy.sparse.{kind}", f"scipy.sparse._{kind}", "scipy.sparse"):
            out[(mod, f"{kind}_matrix")] = cls
    return out


_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple,
             "int": int, "float": float, "complex": complex, "bool": bool, "str": str, "bytes": bytes,
             "bytearray": bytearray, "slice": slice}


def _latin1_encode(obj: str, encoding: str = "latin1") -> bytes:
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise HRAvatarError("refusing a pickle that encodes text with an unexpected codec")
    return obj.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy / scipy.sparse / chumpy-stub / builtin container globals."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.allowed = {**_numpy_globals(), **_sparse_globals()}
        self.allowed.update({("collections", "OrderedDict"): dict})
        # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1")
        self.allowed[("_codecs", "encode")] = _latin1_encode
        self.allowed.update({(m, n): c for n, c in _BUILTINS.items() for m in ("builtins", "__builtin__")})
        self.allowed[("copyreg", "_reconstructor")] = self._reconstructor
        self.allowed[("copy_reg", "_reconstructor")] = self._reconstructor

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        if base is not object or not (cls is _ChumpyStub or cls in self.allowed.values()):
            raise HRAvatarError(f"{self.source}: refusing to rebuild {cls!r} from a pickle; {WHERE}")
        return object.__new__(cls) if cls is _ChumpyStub else cls.__new__(cls)

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStub
        key = (module, name)
        if key in self.allowed:
            return self.allowed[key]
        raise HRAvatarError(
            f"{self.source}: refusing to load {module}.{name} from a pickle (only numpy, scipy.sparse and "
            f"chumpy arrays are allowed); this is not a FLAME model file. {WHERE}"
        )


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; chumpy objects become numpy arrays."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HRAvatarError(f"{path}: cannot read the FLAME model ({e.strerror}); {WHERE}") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except HRAvatarError:
        raise
    except Exception as e:  # truncated / not a pickle
        msg = f"{type(e).__name__}: {e}"
        raise HRAvatarError(f"{path}: not a readable FLAME pickle ({msg}); {WHERE}") from None
    return _unstub(obj, str(path))


def _unstub(obj: Any, source: str) -> Any:
    if isinstance(obj, _ChumpyStub):
        st = obj.state
        x = st.get("x") if isinstance(st, dict) else None
        if x is None:
            raise HRAvatarError(f"{source}: a chumpy object without array data (x); re-export the model "
                                "with numpy arrays")
        return np.asarray(x)
    if isinstance(obj, dict):
        return {k: _unstub(v, source) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unstub(v, source) for v in obj)
    return obj


def _dense(x: Any) -> np.ndarray:
    if hasattr(x, "toarray"):
        return np.asarray(x.toarray())
    return np.asarray(x)


def flame_regions(v: torch.Tensor, weights: torch.Tensor, joints: torch.Tensor) -> dict[str, torch.Tensor]:
    """Approximate regions computed from geometry and skinning (no FLAME mask file is used).

    ``v [V,3]`` template, ``weights [V,5]``, ``joints [5,3]`` rest joints.
    """
    V = v.shape[0]
    eyes = weights[:, 3] + weights[:, 4] > 0.5
    eye_y = float(joints[3:, 1].mean())
    eye_z = float(joints[3:, 2].mean())
    jaw = joints[2]
    face_front = v[:, 2] > float(jaw[2]) + 0.01
    # lips: near the front of the mouth, between nose and chin
    mouth_y = eye_y - 0.065
    lips = (~eyes) & ((v[:, 1] - mouth_y).abs() < 0.015) & (v[:, 0].abs() < 0.03) & (v[:, 2] > eye_z + 0.01)
    neck = (~eyes) & (v[:, 1] < float(jaw[1]) - 0.045) & (v[:, 2] < float(jaw[2]) + 0.02)
    skin = ~(eyes | lips | neck)
    face = skin & face_front & (v[:, 1] < eye_y + 0.055)
    regions = {"face": face | lips, "scalp": skin & ~face, "neck": neck, "eyes": eyes, "lips": lips}
    for name in REGION_NAMES:
        regions.setdefault(name, torch.zeros(V, dtype=torch.bool))
    return regions


def load_flame(path: str | Path, num_shape: int = NUM_SHAPE, num_expr: int = NUM_EXPR) -> HeadModel:
    """Read the user's FLAME pickle into a float32 CPU :class:`HeadModel` (without mouth interior).

    Args:
        path: FLAME 2020 ``generic_model.pkl``, FLAME 2023 or FLAME 2023 Open pickle.
        num_shape: shape components kept (first of the 300).
        num_expr: expression components kept (first of the 100).
    Raises:
        HRAvatarError: missing file, refused pickle content, or fields with unexpected shapes.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise HRAvatarError(f"{path}: FLAME model file not found; {WHERE}")
    d = safe_load_pickle(path)
    if not isinstance(d, dict):
        raise HRAvatarError(f"{path}: not a FLAME model (expected a dict of arrays); {WHERE}")
    need = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
    missing = [k for k in need if k not in d]
    if missing:
        raise HRAvatarError(f"{path}: not a FLAME model (missing {', '.join(missing)}); {WHERE}")
    try:
        v = _dense(d["v_template"]).astype(np.float32).reshape(-1, 3)
        V = v.shape[0]
        f = _dense(d["f"]).astype(np.int64).reshape(-1, 3)
        sd = _dense(d["shapedirs"]).astype(np.float32).reshape(V, 3, -1)
        pdirs = _dense(d["posedirs"]).astype(np.float32)
        if pdirs.shape == (36, V * 3):
            pdirs = pdirs.T
        pdirs = pdirs.reshape(V, 3, 36)
        jr = _dense(d["J_regressor"]).astype(np.float32).reshape(5, V)
        w = _dense(d["weights"]).astype(np.float32).reshape(V, 5)
        kt = _dense(d["kintree_table"]).astype(np.int64).reshape(2, 5)
    except (ValueError, TypeError) as e:
        raise HRAvatarError(f"{path}: FLAME fields have unexpected shapes ({e}); {WHERE}") from None
    parents = [int(p) if p < 5 else -1 for p in kt[0]]
    parents[0] = -1
    if tuple(parents) != PARENTS:
        raise HRAvatarError(f"{path}: kinematic tree {parents} is not FLAME's {list(PARENTS)}; {WHERE}")
    n_total = sd.shape[-1]
    n_shape_total = 300 if n_total >= 400 else n_total - 100
    if n_shape_total < num_shape or n_total - n_shape_total < num_expr:
        raise HRAvatarError(f"{path}: shapedirs has {n_total} components, expected 300 shape + 100 "
                            f"expression; {WHERE}")
    shapedirs = torch.from_numpy(sd[..., :num_shape].copy())
    exprdirs = torch.from_numpy(sd[..., n_shape_total : n_shape_total + num_expr].copy())
    vt = torch.from_numpy(v)
    wt = torch.from_numpy(w)
    jrt = torch.from_numpy(jr)
    name = "flame2023" if "2023" in path.name else "flame"
    model = HeadModel(
        name=name, v_template=vt, faces=torch.from_numpy(f), shapedirs=shapedirs, exprdirs=exprdirs,
        expr_names=[f"exp_{i}" for i in range(num_expr)], posedirs=torch.from_numpy(pdirs.copy()),
        j_regressor=jrt, lbs_weights=wt, regions={}, units="m",
        meta={"source": "FLAME (user's own file, not redistributed)", "path": str(path),
              "licence": "FLAME licence accepted by the user (https://flame.is.tue.mpg.de)"},
    )
    model.regions = flame_regions(vt, wt, jrt @ vt)
    return model
