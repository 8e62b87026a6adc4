"""Loading a module's weights from a safetensors file with every problem named in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hravatar.errors import HRAvatarError


def read_safetensors(path: str | Path, what: str = "weights") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file on the CPU; a damaged or foreign file is one
    :class:`HRAvatarError` line naming it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HRAvatarError(f"{path}: {what} file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise HRAvatarError(f"{path}: damaged {what} file, not readable as safetensors ({reason}); "
                            "copy it again or retrain") from None
    return tensors, md


def load_state_file(module: torch.nn.Module, path: str | Path, what: str = "weights",
                    device: torch.device | str | None = None) -> dict[str, str]:
    """Load ``module``'s state dict from a safetensors file, checked first: the same tensor names,
    shapes and floating/integer kinds as ``module`` has, finite values. Returns the file's metadata.

    Raises:
        HRAvatarError: one line naming the file and the first offending tensor.
    """
    path = Path(path)
    tensors, md = read_safetensors(path, what)
    want = module.state_dict()
    for k in getattr(module, "optional_state", ()):  # entries older files may lack: keep the default
        if k in want and k not in tensors:
            tensors[k] = want[k]
    missing = [k for k in want if k not in tensors]
    extra = [k for k in tensors if k not in want]
    if missing or extra:
        k = (missing or extra)[0]
        problem = "is missing" if missing else "is not expected"
        raise HRAvatarError(f"{path}: tensor {k} {problem} ({len(missing)} missing, {len(extra)} unexpected); "
                            f"the {what} file is damaged or from another model")
    for k, ref in want.items():
        x = tensors[k]
        if tuple(x.shape) != tuple(ref.shape):
            raise HRAvatarError(f"{path}: tensor {k} has shape {list(x.shape)}, expected {list(ref.shape)}; "
                                f"the {what} file is damaged or from another model")
        if x.is_floating_point() != ref.is_floating_point():
            raise HRAvatarError(f"{path}: tensor {k} has type {x.dtype}, expected {ref.dtype}; "
                                f"the {what} file is damaged")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise HRAvatarError(f"{path}: tensor {k} contains NaN or Inf; the {what} file is damaged")
    dev: Any = device if device is not None else next((t.device for t in want.values()), "cpu")
    module.load_state_dict({k: v.to(dev) for k, v in tensors.items()})
    return md
