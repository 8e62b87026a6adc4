"""``hravatar batch`` on Ray: three tiny synthetic subjects and a corrupt video on a local Ray, a
rerun that skips everything, a two-node cluster on this machine where a training worker is killed
and its task resumes from the checkpoint, and the one-line errors (no Ray, bad inputs).

Ray on two shared cores is slow to start (5-30 s a cluster), so the Ray runs are few and shared:
one local batch (module fixture) checked by two tests, one two-node cluster for one test. Every
Ray process is started here and ended here (driver subprocesses in their own process group;
`ray start --block` nodes terminated by pid), with Ray's temp folder in a temp dir that is removed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hravatar.apps.batch import load_settings, parse_stages, plan_jobs
from hravatar.cli import run
from hravatar.errors import HRAvatarError

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = {"iterations": 30, "points_per_face": 1, "encoder_width": 0.25, "encoder_input_size": 32,
              "encoder_warmup_steps": 3, "log_every": 1}


def _yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def ray_env():
    """Environment of every Ray process of these tests (this checkout's source, one thread, a
    private temp folder with a short path for Ray's sockets, no auth token)."""
    tmp = tempfile.mkdtemp(prefix="hrb")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0", HRAVATAR_PLAIN="1",
               RAY_AUTH_MODE="disabled")  # loopback-only test clusters; no token in ~/.ray
    yield env
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """Three tiny subjects written by `hravatar synth` (64 px, 12 frames) and a corrupt video."""
    import torch

    from hravatar.synth.subject import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("batch_in")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        subs = [synthesize(SynthConfig(root / f"sub{i}", size=64, frames=12, seed=i, points_per_face=1,
                                       env_height=16)) for i in range(3)]
    finally:
        torch.set_num_threads(n)
    bad = root / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # an mp4 header, then garbage
    return subs, bad, root


def _batch(args: list[str], env: dict, timeout: float = 420, wait: bool = True):
    """Run `hravatar batch ARGS` in its own process group; kills the group if it overruns."""
    p = subprocess.Popen([sys.executable, "-m", "hravatar.cli", "batch", *args], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if not wait:
        return p
    return _finish(p, timeout)


def _finish(p: subprocess.Popen, timeout: float):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p)
        out, err = p.communicate()
        pytest.fail(f"hravatar batch overran {timeout} s\n{out}\n{err}")
    return p.returncode, out, err


def _kill_group(p: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def local_run(subjects, ray_env, tmp_path_factory):
    """One batch on a local Ray of 2 CPUs: three subjects and the corrupt video."""
    subs, bad, root = subjects
    out = tmp_path_factory.mktemp("batch_out") / "avatars"
    cfg = _yaml(root / "tiny.yaml", {"train": TINY_TRAIN, "evaluate": {"images": 1}})
    args = [*map(str, subs), str(bad), "-o", str(out), "--num-cpus", "2", "--cpus-per-job", "1",
            "--config", str(cfg)]
    t0 = time.perf_counter()
    rc, so, se = _batch(args, ray_env)
    wall = time.perf_counter() - t0
    print(f"local batch of 3 subjects + 1 corrupt video: {wall:.1f} s wall, load {os.getloadavg()}")
    return {"rc": rc, "out": out, "stdout": so, "stderr": se, "args": args, "wall": wall}


def _summary(out: Path) -> dict:
    return json.loads((out / "batch.json").read_text())


def test_local_batch_three_subjects_and_a_corrupt_video(local_run, subjects, capsys):
    subs, bad, _ = subjects
    r, out = local_run, local_run["out"]
    assert r["rc"] == 1, r["stdout"] + r["stderr"]  # a subject failed
    lines = [ln for ln in r["stdout"].splitlines() if re.match(r"\[\d+/16\] ", ln)]
    assert len(lines) == 16, r["stdout"]  # one line per subject and stage
    d = _summary(out)
    assert d["mode"] == "local" and d["ok"] == 3 and d["failed"] == ["broken"]
    by = {s["name"]: s for s in d["subjects"]}
    assert set(by) == {"sub0", "sub1", "sub2", "broken"}
    for name in ("sub0", "sub1", "sub2"):
        s = by[name]
        assert s["status"] == "done" and s["error"] is None
        assert [s["stages"][t]["status"] for t in ("preprocess", "train", "evaluate", "render")] == \
            ["input", "done", "done", "done"]
        assert 10 < s["psnr"] < 60 and 0 < s["ssim"] <= 1 and 0 <= s["lpips"] < 1 and s["points"] > 1000
        assert s["stages"]["train"]["iterations"] == 30
        assert (out / s["thumbnail"]).is_file() and (out / name / "avatar" / "render_test.mp4").is_file()
        m = json.loads((out / name / "avatar" / "eval" / "metrics.json").read_text())
        assert m["psnr"] == pytest.approx(s["psnr"])
    b = by["broken"]
    assert b["status"] == "failed" and b["stages"]["preprocess"]["status"] == "failed"
    assert [b["stages"][t]["status"] for t in ("train", "evaluate", "render")] == ["not run"] * 3
    # the single-subject command's one-line error, verbatim
    assert run(["preprocess", str(bad), "-o", str(out / "single")]) == 2
    single = capsys.readouterr().err.strip().splitlines()[-1]
    assert single.startswith("error: ") and str(bad) in single
    assert b["error"] == single
    page = (out / "batch.html").read_text()
    assert all(n in page for n in by) and "sub0/thumbnail.png" in page
    assert single.split(": ", 2)[-1][:40].replace("'", "&#x27;") in page


def test_rerun_skips_finished_stages(local_run, ray_env):
    out = local_run["out"]
    before = {p: p.stat().st_mtime for p in out.glob("sub*/avatar/*.safetensors")}
    assert len(before) == 9
    rc, so, se = _batch(local_run["args"], ray_env)
    assert rc == 1, so + se
    d = _summary(out)
    for s in d["subjects"]:
        if s["name"] == "broken":
            assert s["stages"]["preprocess"]["status"] == "failed"
            continue
        for t in ("train", "evaluate", "render"):
            st = s["stages"][t]
            assert st["status"] == "skipped" and st["seconds"] < 2.0, (s["name"], t, st)
        assert s["psnr"] is not None and s["points"] > 0  # metrics still reported
    assert {p: p.stat().st_mtime for p in before} == before  # nothing rewritten


# ---- a two-node cluster on this machine -----------------------------------------------------------
def _ray_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    ray_bin = Path(sys.executable).with_name("ray")
    f = open(log, "w")  # noqa: SIM115 - closed with the process
    p = subprocess.Popen([str(ray_bin), "start", "--block", "--disable-usage-stats", "--num-cpus", "1",
                          "--object-store-memory", str(80 * 1024 * 1024), *args], env=env, stdout=f,
                         stderr=subprocess.STDOUT, start_new_session=True)
    p.log_file = f  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while "block forever" not in log.read_text():
        if p.poll() is not None or time.monotonic() > deadline:
            _stop_node(p)
            pytest.fail(f"ray start {' '.join(args)} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return p


def _stop_node(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()  # `ray start --block` stops its node's processes on SIGTERM
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(p)
    p.log_file.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def cluster(ray_env, tmp_path_factory):
    """A head node (127.0.0.2) and a worker node (127.0.0.3) on this machine, 1 CPU each.

    Loopback addresses other than 127.0.0.1: in multi-node mode Ray replaces 127.0.0.1 and
    localhost by the machine's network address, which these tests must not use."""
    logs = tmp_path_factory.mktemp("ray_logs")
    port = _free_port()
    nodes = []
    try:
        nodes.append(_ray_node(["--head", "--node-ip-address", "127.0.0.2", "--port", str(port),
                                "--include-dashboard", "false"], ray_env, logs / "head.log"))
        nodes.append(_ray_node(["--address", f"127.0.0.2:{port}", "--node-ip-address", "127.0.0.3"],
                               ray_env, logs / "worker.log"))
        yield f"127.0.0.2:{port}"
    finally:
        for p in reversed(nodes):
            _stop_node(p)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_cluster_spreads_jobs_and_resumes_a_killed_worker(cluster, subjects, ray_env, tmp_path):
    subs, _, root = subjects
    out = tmp_path / "avatars"
    iters = 40
    # a checkpoint every ~5 s (each one also draws curves.png: ~1 s, more on a loaded machine)
    cfg = _yaml(tmp_path / "train.yaml", {**TINY_TRAIN, "iterations": iters, "checkpoint_minutes": 0.08})
    p = _batch([str(subs[0]), str(subs[1]), "-o", str(out), "--address", cluster, "--config", str(cfg),
                "--stages", "train,evaluate", "--max-retries", "2"], ray_env, wait=False)
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and p.poll() is None and time.monotonic() < deadline:
            for name in ("sub0", "sub1"):
                st = json.loads((out / name / ".batch" / "train.json").read_text()) \
                    if (out / name / ".batch" / "train.json").is_file() else {}
                if st.get("state") == "running" and (out / name / "avatar" / "checkpoint.pt").is_file():
                    os.kill(st["pid"], signal.SIGKILL)  # the Ray worker running this training task
                    killed = name
                    break
            time.sleep(0.2)
        rc, so, se = _finish(p, 400)
    finally:
        if p.poll() is None:
            _kill_group(p)
    assert killed is not None, "no training task was caught mid-way"
    assert rc == 0, so + se
    d = _summary(out)
    assert d["mode"].startswith("cluster") and len(d["nodes"]) == 2 and d["ok"] == 2
    by = {s["name"]: s for s in d["subjects"]}
    tr = by[killed]["stages"]["train"]
    assert tr["status"] == "done" and tr["attempt"] == 2, tr  # Ray retried the task once
    assert 0 < tr["resumed_from"] < iters, tr
    assert by[killed]["stages"]["preprocess"]["status"] == "not selected"
    with open(out / killed / "avatar" / "curves.csv") as f:
        its = [int(r["iteration"]) for r in csv.DictReader(f)]
    assert its == list(range(iters))  # one uninterrupted curve: no restart from zero, no repeats
    assert json.loads((out / killed / "avatar" / "training.json").read_text())["iterations"] == iters
    assert "attempt 2" in so and f"resumed at iteration {tr['resumed_from']}" in so
    used = {st["node"]["node_id"] for s in d["subjects"] for st in s["stages"].values() if "node" in st}
    assert used == {n["node_id"] for n in d["nodes"]}  # jobs ran on both nodes, as the summary records
    assert {st["node"]["node_ip"] for s in d["subjects"] for st in s["stages"].values() if "node" in st} == \
        {"127.0.0.2", "127.0.0.3"}


# ---- errors before anything runs --------------------------------------------------------------------
def test_without_ray_one_line_error(tmp_path, monkeypatch, capsys):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert run(["batch", str(video), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ray: not installed") and "hravatar[cluster]" in err[0]
    assert not (tmp_path / "out").exists()


def test_inputs_manifests_and_bad_options(tmp_path, monkeypatch, capsys):
    (tmp_path / "clips").mkdir()
    for n in ("a.mp4", "b.mov"):
        (tmp_path / "clips" / n).write_bytes(b"x")
    subj = tmp_path / "subj"
    subj.mkdir()
    (subj / "manifest.json").write_text("{}")
    (tmp_path / "list.txt").write_text("# my clips\nclips/a.mp4\nclips/b.mov  # second\n\nsubj\n")
    (tmp_path / "list.csv").write_text("path,name\nclips/a.mp4,alice\nclips/b.mov,\n")
    jobs = plan_jobs([tmp_path / "list.txt", tmp_path / "clips" / "a.mp4"], tmp_path / "out")
    assert [(j.name, j.kind) for j in jobs] == [("a", "video"), ("b", "video"), ("subj", "subject")]  # deduplicated
    assert jobs[2].subject == subj.resolve() and jobs[0].subject == (tmp_path / "out" / "a" / "subject").resolve()
    jobs = plan_jobs([tmp_path / "list.csv", tmp_path / "clips" / ".." / "clips" / "b.mov"], tmp_path / "out")
    assert [j.name for j in jobs] == ["alice", "b"]
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.mp4").write_bytes(b"y")
    assert [j.name for j in plan_jobs([tmp_path / "clips" / "a.mp4", tmp_path / "x" / "a.mp4"], tmp_path)] == \
        ["a", "a-2"]
    assert parse_stages("render, train") == ["train", "render"]
    cfg = _yaml(tmp_path / "t.yaml", {"iterations": 5})
    assert load_settings(cfg)["train"] == {"iterations": 5}

    monkeypatch.setitem(sys.modules, "ray", None)  # every error below comes before Ray is needed
    video = str(tmp_path / "clips" / "a.mp4")
    cases = [
        ([str(tmp_path / "nope.mp4")], "nope.mp4: no such file"),
        ([str(tmp_path / "list.txt"), "--stages", "train,paint"], "--stages"),
        ([video, "--config", str(_yaml(tmp_path / "bad.yaml", {"train": {"iterashuns": 3}}))], "iterashuns"),
        ([video, "--config", str(tmp_path / "missing.yaml")], "config file not found"),
        ([str(subj.parent / "clips")], "not a subject folder"),
        ([video, "--cpus-per-job", "0"], "--cpus-per-job"),
    ]
    for args, needle in cases:
        assert run(["batch", *args, "-o", str(tmp_path / "o")]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (args, err)
    assert not (tmp_path / "o").exists()
    with pytest.raises(HRAvatarError, match="path"):
        (tmp_path / "nopath.csv").write_text("file\nclips/a.mp4\n")
        plan_jobs([tmp_path / "nopath.csv"], tmp_path / "o")
