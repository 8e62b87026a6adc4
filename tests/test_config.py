from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hravatar.config import load_config, save_config
from hravatar.errors import HRAvatarError


@dataclass
class Inner:
    lr: float = 1e-3
    size: tuple[int, int] = (256, 256)


@dataclass
class Outer:
    name: str = "x"
    path: Path = Path("a/b")
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=lambda: ["a"])


def test_round_trip(tmp_path):
    cfg = Outer(name="run", path=Path("/data/s"), maybe=3, inner=Inner(lr=2, size=(64, 32)), tags=["p", "q"])
    p = save_config(cfg, tmp_path / "config.yaml")
    text = p.read_text()
    assert "!!python" not in text  # plain YAML, no object tags
    back = load_config(Outer, p)
    assert back == cfg and isinstance(back.path, Path) and isinstance(back.inner.size, tuple)
    assert isinstance(back.inner.lr, float)


def test_json_round_trip_and_defaults(tmp_path):
    cfg = Outer(maybe=None, inner=Inner(size=(8, 4)))
    p = save_config(cfg, tmp_path / "config.json")
    assert p.read_text().lstrip().startswith("{")
    assert load_config(Outer, p) == cfg
    partial = tmp_path / "partial.yaml"
    partial.write_text("inner:\n  lr: 0.5\n")
    assert load_config(Outer, partial) == Outer(inner=Inner(lr=0.5))


def test_bad_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\nunknown_key: 1\n")
    with pytest.raises(HRAvatarError, match="unknown"):
        load_config(Outer, p)
    p.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(HRAvatarError):
        load_config(Outer, p)
    with pytest.raises(HRAvatarError, match="not found"):
        load_config(Outer, tmp_path / "none.yaml")
    for text in ("- a\n- b\n", "inner:\n  size: [1, 2, 3]\n", "name: [unclosed\n"):
        p.write_text(text)
        with pytest.raises(HRAvatarError, match="c.yaml") as e:
            load_config(Outer, p)
        assert "\n" not in str(e.value)
