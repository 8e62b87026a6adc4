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

    setup_logging(verbose=bool(os.environ.get("HRAVATAR_VERBOSE")))
    func = _resolve(COMMANDS[key][0])
    params = list(inspect.signature(func).parameters.values())
    cfg_type = typing.get_type_hints(func)[params[0].name]
    try:
        cfg = tyro.cli(cfg_type, args=rest, prog=f"hravatar {key}", description=COMMANDS[key][1])
        status = func(cfg)
    except HRAvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished outputs are kept, rerun to resume", file=sys.stderr)
        return 130
    return int(status or 0)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
