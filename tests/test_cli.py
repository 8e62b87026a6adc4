import json
import subprocess
import sys

from hravatar.cli import COMMANDS, run


def test_help_lists_commands(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_every_command_has_help():
    for name in COMMANDS:
        res = subprocess.run([sys.executable, "-m", "hravatar", *name.split(), "--help"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, (name, res.stderr[-500:])
        assert "usage" in res.stdout.lower()


def test_unknown_command(capsys):
    assert run(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_doctor_json(capsys):
    assert run(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["problems"] == [] and isinstance(data["warnings"], list)
    assert data["info"]["torch"] and data["info"]["rasterizer"] in ("cpu", "reference", "cuda (gsplat)")
    for key in ("python", "device", "c++ compiler", "mediapipe", "open head model", "FLAME", "assets"):
        assert data["info"][key]


def test_doctor_text_and_empty_cache(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HRAVATAR_CACHE", str(tmp_path / "cache"))  # this test only: nothing cached
    monkeypatch.delenv("HRAVATAR_FLAME_PATH", raising=False)
    assert run(["doctor", "--no-build"]) == 0
    out = capsys.readouterr().out
    assert "warning: assets missing" in out and out.rstrip().endswith("ready (with the warnings above)")
    assert "FLAME" in out and "not configured" in out


def _doctor_error(capsys) -> str:
    assert run(["doctor", "--no-build"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_doctor_fails_on_missing_requirements(capsys, monkeypatch, tmp_path):
    import hravatar.apps.doctor as doc

    monkeypatch.setenv("HRAVATAR_FLAME_PATH", str(tmp_path / "flame2023.pkl"))
    assert "flame2023.pkl" in _doctor_error(capsys)
    monkeypatch.delenv("HRAVATAR_FLAME_PATH")

    def no_torch():
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(doc, "_check_torch", no_torch)
    assert "PyTorch is not importable" in _doctor_error(capsys)
    monkeypatch.undo()

    def broken(build, out):
        raise RuntimeError("kernel crashed")

    monkeypatch.setattr(doc, "_backend", broken)
    assert "no working rasterizer: kernel crashed" in _doctor_error(capsys)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.hdr"
    bad.write_bytes(b"garbage")
    cmd = [sys.executable, "-m", "hravatar", "envmap", "prefilter", str(bad), str(tmp_path / "o.safetensors")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "bad.hdr" in lines[0]


def test_doctor_fails_in_one_line_on_missing_configured_flame(tmp_path):
    env = {**__import__("os").environ, "HRAVATAR_FLAME_PATH": str(tmp_path / "generic_model.pkl")}
    res = subprocess.run([sys.executable, "-m", "hravatar", "doctor", "--no-build"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "generic_model.pkl" in errors[0]


def test_a_full_disk_while_saving_is_a_user_error_not_an_internal_one():
    from hravatar.cli import user_error

    # torch.save's messages when its zip writer cannot write (seen with a full disk)
    status, line = user_error(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 17 vs 16"))
    assert status == 2 and "disk full" in line and "\n" not in line
    status, _ = user_error(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))
    assert status == 2
    status, line = user_error(RuntimeError("something else"))
    assert status == 1 and line.startswith("internal error")
