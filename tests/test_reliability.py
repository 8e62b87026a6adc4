"""Bad inputs, as a careless or hostile user gives them: every case ends with exit status 2, exactly one
``error:`` line (no traceback) and nothing written or destroyed (README.md, "Bad input")."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.tiny_subject import make_tiny_subject, train_tiny_avatar
from hravatar.cli import run
from hravatar.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show that nothing was written or destroyed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fails(capsys, args: list[str], *expect: str) -> str:
    """Run the CLI; assert exit 2 and one ``error:`` line containing every ``expect``; return it."""
    capsys.readouterr()
    status = run(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert status == 2, (status, err[-2000:])
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    for e in expect:
        assert e in errors[0], (e, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny subject, a tiny trained avatar (with encoder and checkpoint), a file and a folder."""
    root = tmp_path_factory.mktemp("rel")
    subj = make_tiny_subject(root / "subj", size=32, frames=6)
    av = root / "av"
    train_tiny_avatar(subj, av, 2, warmup_steps=1)
    (root / "file").write_text("not a folder")
    (root / "folder.ply").mkdir()
    return root, subj, av


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- output paths that cannot be written ---------------------------------------------------------
@pytest.mark.parametrize("case", ["render_under_file", "render_proc", "render_onto_folder", "export_under_file",
                                  "export_sys", "export_onto_folder", "canonical_proc", "head_export_sys",
                                  "head_export_under_file", "preprocess_under_file", "preprocess_proc",
                                  "train_under_file", "train_sys", "train_onto_file"])
def test_unwritable_outputs(world, capsys, case):
    root, subj, av = world
    before = _snapshot(root)
    args = {
        "render_under_file": (["render", str(av), "-o", f"{root}/file/x.mp4"], "file"),
        "render_proc": (["render", str(av), "-o", "/proc/hravatar_x.png"], "/proc"),
        "render_onto_folder": (["render", str(av), "-o", str(root)], "unsupported output type"),
        "export_under_file": (["export", str(av), "--ply", f"{root}/file/x.ply"], "is a file"),
        "export_sys": (["export", str(av), "--ply", "/sys/hravatar_x.ply"], "/sys"),
        "export_onto_folder": (["export", str(av), "--ply", f"{root}/folder.ply"], "is a folder"),
        "canonical_proc": (["export", str(av), "--canonical", "/proc/x.safetensors"], "/proc"),
        "head_export_sys": (["head", "export", "/sys/hravatar_x.ply"], "/sys"),
        "head_export_under_file": (["head", "export", f"{root}/file/h.obj"], "is a file"),
        "preprocess_under_file": (["preprocess", f"{root}/file", "-o", f"{root}/file/s"], "is a file"),
        "preprocess_proc": (["preprocess", f"{root}/file", "-o", "/proc/hravatar_s"], "/proc"),
        "train_under_file": (["train", str(subj), "-o", f"{root}/file/av"], "is a file"),
        "train_sys": (["train", str(subj), "-o", "/sys/hravatar_av"], "/sys"),
        "train_onto_file": (["train", str(subj), "-o", f"{root}/file"], "not a folder"),
    }[case]
    _fails(capsys, args[0], args[1])
    assert _snapshot(root) == before


# ---- subject folders ---------------------------------------------------------------------------------
def test_nan_in_tracked_params_is_refused_before_training(world, tmp_path, capsys):
    _, subj, _ = world
    s = _copy(subj, tmp_path / "s")
    tp = json.loads((s / "tracked_params.json").read_text())
    tp["00003"]["expcode"][0][1] = float("nan")
    (s / "tracked_params.json").write_text(json.dumps(tp))
    _fails(capsys, ["train", str(s), "-o", str(tmp_path / "av")], "tracked_params.json", "frame 00003 expcode",
           "NaN")
    assert not (tmp_path / "av").exists()


@pytest.mark.parametrize("field,value,expect", [("fullposecode", [[0.0] * 7], "fullposecode has 7 numbers"),
                                                ("world_mat", "eye", "not numeric"),
                                                ("translation", [[1.0, 2.0]], "translation has 2 numbers")])
def test_malformed_tracked_params(world, tmp_path, capsys, field, value, expect):
    _, subj, _ = world
    s = _copy(subj, tmp_path / "s")
    tp = json.loads((s / "tracked_params.json").read_text())
    tp["00001"][field] = value
    (s / "tracked_params.json").write_text(json.dumps(tp))
    _fails(capsys, ["train", str(s), "-o", str(tmp_path / "av")], "frame 00001", expect)
    assert not (tmp_path / "av").exists()


def test_missing_frame_image_is_named(world, tmp_path, capsys):
    _, subj, _ = world
    s = _copy(subj, tmp_path / "s")
    (s / "image" / "00002.png").unlink()
    _fails(capsys, ["train", str(s), "-o", str(tmp_path / "av")], "missing", "00002")
    assert not (tmp_path / "av").exists()


def test_truncated_manifest(world, tmp_path, capsys):
    _, subj, _ = world
    s = _copy(subj, tmp_path / "s")
    man = s / "manifest.json"
    man.write_bytes(man.read_bytes()[:40])
    before = _snapshot(s)
    _fails(capsys, ["train", str(s), "-o", str(tmp_path / "av")], "manifest.json", "damaged")
    _fails(capsys, ["preprocess", str(tmp_path / "clip.mp4"), "-o", str(s)], "manifest.json", "--overwrite")
    assert _snapshot(s) == before and not (tmp_path / "av").exists()


# ---- training state ------------------------------------------------------------------------------
def test_truncated_checkpoint_with_resume(world, tmp_path, capsys):
    _, subj, av = world
    out = _copy(av, tmp_path / "av")
    ck = out / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    before = _snapshot(out)
    _fails(capsys, ["train", str(subj), "-o", str(out), "--resume"], "checkpoint.pt", "damaged", "--overwrite")
    assert _snapshot(out) == before


@pytest.mark.parametrize("args,expect", [(["--lighting-lr", "nan"], "--lighting-lr"),
                                         (["--iterations", "-1"], "--iterations"),
                                         (["--lr.means", "-inf"], "--lr.means"),
                                         (["--downscale", "0"], "--downscale")])
def test_numeric_options_checked(world, tmp_path, capsys, args, expect):
    _, subj, _ = world
    _fails(capsys, ["train", str(subj), "-o", str(tmp_path / "av"), *args], expect)
    assert not (tmp_path / "av").exists()


@pytest.mark.parametrize("args,expect", [(["train", "SUBJ", "--encoder", "bogus"], "'--encoder'"),
                                         (["synth", "OUT", "--hair", "bogus"], "'--hair'"),
                                         (["train", "SUBJ", "--iterations", "abc"], "--iterations"),
                                         (["train", "SUBJ", "--no-such-option"], "--no-such-option"),
                                         (["train"], "PATH")])
def test_usage_errors_are_one_line(tmp_path, capsys, args, expect):
    """tyro's usage errors (a boxed panel of many lines) become the one ``error:`` line too."""
    args = [str(tmp_path / a) if a in ("SUBJ", "OUT") else a for a in args]
    capsys.readouterr()
    status = run(args)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    assert f"hravatar {args[0]} --help" in err[0] and not any(c in err[0] for c in "│╭╰─")
    assert not any(tmp_path.iterdir())


# ---- avatar files ------------------------------------------------------------------------------------
def _rewrite(path: Path, fn) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        md, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    fn(t)
    save_file(t, str(path), metadata=md)


@pytest.mark.parametrize("file,tensor", [("avatar.safetensors", "param.exprdirs"),
                                         ("avatar.safetensors", "param.opacities"),
                                         ("lighting.safetensors", None), ("encoder.safetensors", None)])
def test_wrong_tensor_shape_named_at_load(world, tmp_path, capsys, file, tensor):
    _, _, av = world
    out = _copy(av, tmp_path / "av")

    def damage(t):
        k = tensor or sorted(k for k in t if t[k].dim() >= 1 and t[k].shape[0] > 1)[0]
        t[k] = t[k][:-1].clone()  # one row fewer
        damage.name = k.split("param.")[-1]

    _rewrite(out / file, damage)
    before = _snapshot(out)
    _fails(capsys, ["render", str(out), "-o", str(tmp_path / "r.png")], file, damage.name, "shape")
    assert _snapshot(out) == before and not (tmp_path / "r.png").exists()


def test_nan_in_avatar_file(world, tmp_path, capsys):
    _, _, av = world
    out = _copy(av, tmp_path / "av")
    _rewrite(out / "avatar.safetensors", lambda t: t["param.means"].__setitem__((0, 0), float("nan")))
    _fails(capsys, ["export", str(out), "--ply", str(tmp_path / "x.ply")], "param.means", "NaN")
    assert not (tmp_path / "x.ply").exists()


# ---- command-line values -----------------------------------------------------------------------------
@pytest.mark.parametrize("args,expect", [
    (["head", "export", "{t}/h.ply", "--expression", "jawOpen=nan"], "--expression jawOpen"),
    (["head", "export", "{t}/h.ply", "--expression", "jawOpen=1e308"], "out of range"),
    (["head", "export", "{t}/h.ply", "--pose", "jaw=0,x,0"], "--pose jaw"),
    (["export", "{av}", "--ply", "{t}/x.ply", "--expression", "jaw=nan"], "--expression jaw"),
    (["export", "{av}", "--ply", "{t}/x.ply", "--expression", "jaw=-inf"], "--expression jaw"),
])
def test_nan_expression_values(world, tmp_path, capsys, args, expect):
    _, _, av = world
    args = [a.format(t=tmp_path, av=av) for a in args]
    _fails(capsys, args, expect)
    assert list(tmp_path.iterdir()) == []  # no PLY of NaN coordinates, no preview


# ---- doctor --------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("kind", ["garbage", "pickle"])
def test_doctor_loads_the_flame_file(tmp_path, capsys, monkeypatch, kind):
    f = tmp_path / "flame.pkl"
    marker = tmp_path / "pwned"
    if kind == "garbage":
        f.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        f.write_bytes(pickle.dumps(_Evil(str(marker))))
    monkeypatch.setenv("HRAVATAR_FLAME_PATH", str(f))
    line = _fails(capsys, ["doctor", "--no-build"], "not a usable FLAME model", str(f))
    assert "ready" not in capsys.readouterr().out and not marker.exists(), line


# ---- preprocess: foreign files and a different video --------------------------------------------------
def _finished_subject(path: Path, video: Path) -> Path:
    from hravatar.data import SubjectParams, write_subject
    from hravatar.preprocess.pipeline import file_digest

    T = 2
    p = SubjectParams(shape=np.zeros(3), expression=np.zeros((T, 2)), pose=np.zeros((T, 5, 3)),
                      translation=np.zeros((T, 3)), viewmat=np.eye(4), K=np.eye(3) * 10, image_size=(8, 8))
    src = {"video": str(video), "bytes": video.stat().st_size, "sha256": file_digest(video)}
    return write_subject(path, [np.zeros((8, 8, 4), np.uint8)] * T, p, {"source": src}, overwrite=True)


def test_different_video_into_finished_subject(tmp_path, capsys):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"video A" * 100)
    b.write_bytes(b"video B" * 100)
    s = _finished_subject(tmp_path / "s", a)
    before = _snapshot(s)
    _fails(capsys, ["preprocess", str(b), "-o", str(s)], str(s), "another input", "--overwrite")
    assert _snapshot(s) == before
    assert run(["preprocess", str(a), "-o", str(s)]) == 0  # the same video: already complete, untouched
    assert _snapshot(s) == before


def test_overwrite_keeps_foreign_files(tmp_path, capsys):
    a = tmp_path / "a.mp4"
    a.write_bytes(b"video A" * 100)
    s = tmp_path / "s"
    s.mkdir()
    (s / "notes.txt").write_text("mine")
    (s / "mine").mkdir()
    (s / "mine" / "keep.bin").write_bytes(b"\x00\x01")
    # without --overwrite: refused, nothing touched
    _fails(capsys, ["preprocess", str(a), "-o", str(s)], "--overwrite")
    assert sorted(p.name for p in s.iterdir()) == ["mine", "notes.txt"]
    # replacing the subject (what --overwrite does at the end) keeps what preprocess did not write
    _finished_subject(s, a)
    _finished_subject(s, a)
    assert (s / "notes.txt").read_text() == "mine" and (s / "mine" / "keep.bin").read_bytes() == b"\x00\x01"
    assert (s / "manifest.json").is_file() and len(list((s / "image").iterdir())) == 2


# ---- the dispatcher ----------------------------------------------------------------------------------
def test_broken_pipe_on_help_is_quiet():
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written: `hravatar train --help | head -0`
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    res = subprocess.run([sys.executable, "-m", "hravatar", "train", "--help"], stdout=w, stderr=subprocess.PIPE,
                         text=True, timeout=120, env=env)
    os.close(w)
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert res.returncode == 141


def test_unexpected_errors_are_one_line_and_verbose_shows_traceback(world, capsys, monkeypatch):
    import hravatar.apps.doctor as doc

    def boom(cfg):
        raise ZeroDivisionError("bug")

    boom.__annotations__ = {"cfg": doc.DoctorConfig}

    monkeypatch.setattr(doc, "doctor", boom)
    monkeypatch.delenv("HRAVATAR_VERBOSE", raising=False)
    assert run(["doctor"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: internal error (ZeroDivisionError: bug)")
    monkeypatch.setenv("HRAVATAR_VERBOSE", "1")
    assert run(["doctor"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_os_errors_become_one_line(capsys, monkeypatch, tmp_path):
    import hravatar.apps.doctor as doc

    def denied(cfg):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    denied.__annotations__ = {"cfg": doc.DoctorConfig}

    monkeypatch.setattr(doc, "doctor", denied)
    _fails(capsys, ["doctor"], str(tmp_path / "x"), "permission denied", "writable")


def test_checkpoint_never_holds_non_finite_state(world, tmp_path, caplog):
    from hravatar.train import Trainer

    _, subj, _ = world
    t = Trainer.create(TrainConfig(subject=subj, output=tmp_path / "av", iterations=2, points_per_face=1,
                                   encoder="none", quiet=True))
    t.out.mkdir()
    assert t.save_checkpoint() is not None
    good = (tmp_path / "av" / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        t.avatar.params["albedo"][0, 0] = float("nan")
    assert t.non_finite_state() == ["avatar.albedo"]
    assert t.save_checkpoint() is None and "previous checkpoint is kept" in caplog.text
    assert (tmp_path / "av" / "checkpoint.pt").read_bytes() == good


def test_old_configs_with_the_retired_test_hook_still_load(tmp_path):
    """``inject_nan_at`` left the user config (tests inject NaN with monkeypatch); saved configs that
    still hold it load, while other unknown settings stay an error."""
    from hravatar.config import load_config
    from hravatar.errors import HRAvatarError

    p = tmp_path / "train_config.yaml"
    p.write_text("subject: s\ninject_nan_at: []\niterations: 7\n")
    assert load_config(TrainConfig, p).iterations == 7
    p.write_text("subject: s\nbogus_setting: 1\n")
    with pytest.raises(HRAvatarError, match="bogus_setting"):
        load_config(TrainConfig, p)
