"""Logging and progress bars that degrade to plain lines when output is not a terminal."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

log = logging.getLogger("hravatar")


def setup_logging(verbose: bool = False) -> None:
    """Configure the ``hravatar`` logger: ``level: message`` lines on stderr."""
    if log.handlers:
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    # records still propagate (to pytest's caplog, or an embedding app's root handlers); the root
    # logger has no handler in the command, so nothing is printed twice


def is_tty() -> bool:
    """True when stderr is an interactive terminal (and ``HRAVATAR_PLAIN`` is not set)."""
    return sys.stderr.isatty() and not os.environ.get("HRAVATAR_PLAIN")


class _PlainBar:
    """A tqdm-like object that prints a line at most every ``interval`` seconds (non-TTY)."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str, interval: float):
        self.iterable, self.total, self.desc, self.interval = iterable, total, desc, interval
        self.n = 0
        self.postfix = ""
        self._t0 = self._last = time.monotonic()

    def _emit(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.interval:
            return
        self._last = now
        tot = f"/{self.total}" if self.total else ""
        rate = self.n / max(now - self._t0, 1e-9)
        print(f"{self.desc}: {self.n}{tot} ({rate:.2f} it/s) {self.postfix}".rstrip(), file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._emit()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kw: Any) -> None:
        d = dict(ordered_dict or {}, **kw)
        self.postfix = " ".join(f"{k}={v}" for k, v in d.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if self.n and self.n != -1:
            self._emit(final=True)
        self.n = -1

    def __enter__(self) -> _PlainBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(
    iterable: Iterable[T] | None = None,
    total: int | None = None,
    desc: str = "",
    disable: bool = False,
    interval: float = 10.0,
    **kw: Any,
) -> Any:
    """A progress bar: tqdm on a terminal, a plain line every ``interval`` s otherwise.

    Use like tqdm: ``for x in progress(xs, desc="decode")`` or ``with progress(total=n) as bar``.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if disable:
        return tqdm(iterable, total=total, desc=desc, disable=True, **kw)
    if is_tty():
        return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, **kw)
    return _PlainBar(iterable, total, desc, interval)
