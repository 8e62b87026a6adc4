"""The ``hravatar`` command: a thin dispatcher over the library.

Each subcommand is a library function taking one config dataclass; tyro turns the dataclass into
command-line options (``hravatar train --help`` lists them with their documented defaults). The
function is imported only when its command runs, so ``hravatar --help`` stays fast.

To add a command, add one line to :data:`COMMANDS`: ``"name [sub]": ("module:function", "help")``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from hravatar.errors import HRAvatarError

#: command words -> ("module:function", one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("hravatar.apps.doctor:doctor", "check this machine before a long run"),
    "render": ("hravatar.apps.render:render_cmd", "self-reenactment video of the subject's frames"),
    "reenact": ("hravatar.apps.reenact:reenact_cmd", "drive the avatar with another video or subject"),
    "relight": ("hravatar.apps.relight:relight_cmd", "render under an HDR environment (optionally rotating)"),
    "edit": ("hravatar.apps.relight:edit_cmd", "edit materials (F0, roughness), render or save"),
    "orbit": ("hravatar.apps.render:orbit_cmd", "novel views around the head"),
    "export": ("hravatar.apps.export:export_cmd", "3DGS PLY of the posed avatar / canonical avatar"),
    "view": ("hravatar.apps.view:view_cmd", "interactive viewer in the browser"),
    "head export": ("hravatar.apps.head_export:head_export", "head-model mesh (PLY/OBJ) + PNG preview"),
    "preprocess": ("hravatar.apps.preprocess:preprocess", "video -> subject folder (crop, matte, track)"),
    "envmap prefilter": ("hravatar.apps.envmap:envmap_prefilter", "prefilter an HDR map for relighting"),
    "train": ("hravatar.apps.train:train", "subject folder -> trained avatar (checkpoints, --resume)"),
    "evaluate": ("hravatar.apps.evaluate:evaluate", "test-frame metrics (PSNR, SSIM, LPIPS, MAE*), images"),
    "synth": ("hravatar.apps.synth:synth", "built-in synthetic talking head with ground truth"),
    "demo": ("hravatar.apps.demo:demo", "synthetic subject -> train -> evaluate -> relight -> HTML report"),
    "batch": ("hravatar.apps.batch:batch", "many subjects at once on Ray: preprocess, train, evaluate, render"),
}


def _resolve(target: str) -> Callable[[Any], Any]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _usage() -> str:
    width = max(len(k) for k in COMMANDS)
    lines = [
        "usage: hravatar COMMAND [OPTIONS]   (hravatar COMMAND --help for its options)",
        "",
        "Animatable, relightable 3D Gaussian head avatars from a monocular video.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def _match(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """Longest command prefix of ``argv`` (commands may be two words, e.g. ``head export``)."""
    for n in (2, 1):
        key = " ".join(argv[:n])
        if len(argv) >= n and key in COMMANDS:
            return key, list(argv[n:])
    return None


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from hravatar import __version__

        print(f"hravatar {__version__}")
        return 0
    found = _match(argv)
    if found is None:
        groups = sorted({k.split()[0] for k in COMMANDS if " " in k and k.split()[0] == argv[0]})
        if groups:
            subs = [k.split()[1] for k in COMMANDS if k.startswith(argv[0] + " ")]
            print(f"error: `hravatar {argv[0]}` needs one of: {', '.join(subs)}", file=sys.stderr)
        else:
            print(f"error: unknown command {argv[0]!r}; run `hravatar --help` for the list", file=sys.stderr)
        return 2
    key, rest = found
    from hravatar.progress import setup_logging

    verbose = bool(os.environ.get("HRAVATAR_VERBOSE"))
    setup_logging(verbose=verbose)
    func = _resolve(COMMANDS[key][0])
    params = list(inspect.signature(func).parameters.values())
    cfg_type = typing.get_type_hints(func)[params[0].name]
    try:
        cfg = _parse(tyro, cfg_type, rest, key)
        check_options(cfg)
        status = func(cfg)
    except KeyboardInterrupt:
        print("interrupted; finished outputs are kept, rerun to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    except SystemExit as e:  # tyro: --help (0) or a usage error (2)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        _flush_stdout()
        return code
    except Exception as e:  # noqa: BLE001 - the one place where errors become one line
        status, line = user_error(e)
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"error: {line}", file=sys.stderr)
        return status
    return int(status or 0)


def _parse(tyro: Any, cfg_type: type, rest: list[str], key: str) -> Any:
    """``tyro.cli`` with its usage errors (a boxed, multi-line panel on stderr) turned into the
    one ``error:`` line every bad input gets (exit 2); ``--help`` is untouched."""
    import contextlib
    import io

    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            return tyro.cli(cfg_type, args=rest, prog=f"hravatar {key}", description=COMMANDS[key][1])
    except SystemExit as e:
        if e.code in (0, None):
            sys.stderr.write(buf.getvalue())
            raise
        print(f"error: {usage_error_line(buf.getvalue())}; run `hravatar {key} --help`", file=sys.stderr)
        raise SystemExit(2) from None


def usage_error_line(panel: str) -> str:
    """The message of a tyro usage-error panel as one line: its body up to the first rule, box
    characters and runs of spaces removed (``"invalid choice 'x' for argument '--encoder'. ..."``)."""
    body = []
    for raw in panel.splitlines()[1:]:
        text = raw.strip().strip("│╭╮╰╯").strip()
        if text and set(text) <= set("─━"):
            break
        if text:
            body.append(text)
    line = " ".join(" ".join(body).split()).rstrip(".")
    return line or "invalid command line"


#: Messages of torch.save's RuntimeError when its zip writer could not write (a full disk).
_WRITE_FAILURES = ("PytorchStreamWriter failed", "unexpected pos")


def user_error(e: BaseException) -> tuple[int, str]:
    """``(exit status, message)`` for an exception that reached the CLI: exit 2 and
    ``<file or option>: <problem>; <what to do>`` for everything a user can cause (bad paths,
    unwritable folders, damaged files); exit 1 and an "internal error" line for anything else (a bug)."""
    import json

    if isinstance(e, HRAvatarError):
        return 2, str(e).splitlines()[0] if str(e) else "failed"
    if isinstance(e, OSError):
        where = e.filename if e.filename is not None else "file system"
        problem = e.strerror or type(e).__name__
        hints = {
            FileNotFoundError: "check the path",
            FileExistsError: "choose another path or remove it",
            IsADirectoryError: "give a file name, not a folder",
            NotADirectoryError: "a parent of this path is a file; choose another path",
            PermissionError: "choose a writable path or fix its permissions",
        }
        hint = next((h for t, h in hints.items() if isinstance(e, t)), "check the path, the disk and permissions")
        extra = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
        return 2, f"{where}{extra}: {problem.lower()}; {hint}"
    if isinstance(e, json.JSONDecodeError):
        return 2, f"invalid JSON ({e.msg} at line {e.lineno}); the file is damaged, re-create it"
    if isinstance(e, UnicodeDecodeError):
        return 2, f"a text file is not valid UTF-8 ({e.reason}); the file is damaged, re-create it"
    if isinstance(e, MemoryError):
        return 2, "out of memory; use smaller inputs (e.g. --downscale) or a machine with more memory"
    if isinstance(e, RuntimeError) and any(s in str(e) for s in _WRITE_FAILURES):
        return 2, ("writing a file failed (is the disk full?); free some space and rerun: finished "
                   "outputs are kept, a training run resumes from its last checkpoint")
    try:
        import yaml

        if isinstance(e, yaml.YAMLError):
            return 2, f"invalid YAML ({str(e).splitlines()[0]}); the file is damaged, re-create it"
    except ImportError:  # pragma: no cover
        pass
    msg = str(e).splitlines()[0] if str(e) else ""
    return 1, (f"internal error ({type(e).__name__}: {msg[:200]}); rerun with HRAVATAR_VERBOSE=1 for the "
               "traceback and report it")


def check_options(cfg: Any, prefix: str = "--") -> None:
    """Refuse non-finite floats (``nan``, ``inf``) anywhere in a command's (nested) config dataclass,
    naming the option: every numeric option must be a finite number."""
    import dataclasses
    import math

    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        opt = prefix + f.name.replace("_", "-")
        if dataclasses.is_dataclass(v):
            check_options(v, opt + ".")
            continue
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if isinstance(x, float) and not math.isfinite(x):
                raise HRAvatarError(f"{opt}: {x} is not a finite number; give a finite value")


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _broken_pipe()


def _broken_pipe() -> int:
    """The reader of our output went away (``hravatar train --help | head -1``): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout
        pass
    return 141  # 128 + SIGPIPE, what a shell tool killed by the closed pipe reports


def main() -> None:
    """Console-script entry point."""
    try:
        status = run()
        sys.stdout.flush()
    except BrokenPipeError:
        status = _broken_pipe()
    sys.exit(status)


if __name__ == "__main__":
    main()
