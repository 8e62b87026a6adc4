"""Package structure rules (issue 14): who may import the trainer, no import cycles, no test helpers shipped."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hravatar"


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (absolute names, at any depth of the file)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_only_the_training_commands_import_the_trainer():
    users = sorted(_module(p) for p in SRC.rglob("*.py")
                   if p.name != "train.py" or p.parent != SRC
                   if any(m == "hravatar.train" or m.startswith("hravatar.train.") for m in _imports(p)))
    assert users == ["hravatar.apps.demo", "hravatar.apps.train"]


def test_no_import_cycles_between_package_modules():
    mods = {_module(p): p for p in SRC.rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in mods and i != m and not m.startswith(i + ".")}
             for m, p in mods.items()}
    # package __init__ re-exports are not dependencies of the package's own modules
    cycles = []
    for a, deps in graph.items():
        for b in deps:
            if a in graph.get(b, set()) and a < b and not (a.startswith(b + ".") or b.startswith(a + ".")):
                cycles.append((a, b))
    assert cycles == []


def test_no_test_helpers_in_the_package():
    names = {p.stem for p in SRC.rglob("*.py")}
    assert not names & {"testing", "train_testing", "synthetic"}
