"""Typed run configuration: dataclasses with documented defaults, saved as YAML and read back.

Every stage has a dataclass config (defined next to the code that uses it). They are usable from
Python (``TrainConfig(iterations=100)``) and from the CLI (``hravatar train --iterations 100``,
through tyro). :func:`save_config` writes a config next to a run's outputs; :func:`load_config`
rebuilds the dataclass from that file with ``yaml.safe_load`` (no ``eval``, no pickle).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_write_text

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a (nested) dataclass: paths become strings, tuples lists."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def _build(tp: Any, value: Any) -> Any:
    """Rebuild ``value`` (from YAML) as type ``tp`` (dataclass, Path, tuple, Optional, ...)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _build(a, value)
            except (TypeError, ValueError):
                continue
        return value
    if origin is typing.Literal:
        return value
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(_build(a, v) for a, v in zip(args, value, strict=True))
        inner = args[0] if args else Any
        seq = [_build(inner, v) for v in value]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        k, v = typing.get_args(tp) or (Any, Any)
        return {_build(k, a): _build(v, b) for a, b in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if tp is Path:
        return Path(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild dataclass ``cls`` from :func:`to_dict` output; unknown keys are an error."""
    if not isinstance(data, dict):
        raise HRAvatarError(f"config for {cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    retired = set(getattr(cls, "RETIRED_SETTINGS", ()))  # settings older files may still hold: ignored
    data = {k: v for k, v in data.items() if k not in retired}
    unknown = set(data) - names
    if unknown:
        raise HRAvatarError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
    kwargs = {k: _build(hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``cfg`` (a dataclass) to ``path`` atomically: JSON for a ``.json`` suffix, else YAML.

    Returns the path."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(to_dict(cfg), indent=2) + "\n"
    else:
        text = f"# {type(cfg).__name__}\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic_write_text(path, text)
    return path


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config written by :func:`save_config` (YAML or JSON) back into ``cls``.

    Uses ``yaml.safe_load`` only (JSON is YAML): no ``eval``, no pickle, no object tags. Settings
    missing from the file keep their defaults; unknown settings or wrong types are an
    :class:`HRAvatarError` naming the file.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise HRAvatarError(f"{path}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise HRAvatarError(f"{path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    try:
        return from_dict(cls, {} if data is None else data)
    except HRAvatarError as e:
        raise HRAvatarError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise HRAvatarError(f"{path}: settings do not fit {cls.__name__} ({str(e).splitlines()[0]})") from None
