"""``hravatar batch INPUTS... -o OUT``: many avatars at once, on one machine or a Ray cluster.

Every input (a video, a subject folder, or a ``.txt``/``.csv`` manifest listing them) becomes a
subject ``OUT/<name>/`` and a chain of Ray tasks, one per stage::

    preprocess -> train -> evaluate -> render

Each task runs the same library function as the single-subject command (looked up in
:data:`hravatar.cli.COMMANDS`, so ``hravatar batch`` and ``hravatar train`` cannot drift apart),
with declared resources (``--cpus-per-job``, ``--gpus-per-job``); Ray runs the chains of all
subjects concurrently as the resources allow. Without ``--address`` the command starts a local
Ray sized to this machine (bound to the loopback interface) and stops it at the end; with one it
joins that cluster. Every path is absolute, so a cluster needs ``OUT`` (and the inputs) on storage
that all nodes share at the same path (NFS, a cluster file system, a mounted bucket).

Per subject::

    OUT/<name>/subject/                 preprocess output (video inputs; a subject-folder input is used in place)
    OUT/<name>/avatar/                  train output (checkpoint.pt while training; --resume semantics)
    OUT/<name>/avatar/eval/metrics.json evaluate output (PSNR, SSIM, LPIPS, ...)
    OUT/<name>/avatar/render_test.mp4   render output (self-reenactment of the test frames)
    OUT/<name>/thumbnail.png            first test frame of the avatar (for the summary page)
    OUT/<name>/logs/<stage>.log         everything the stage printed
    OUT/<name>/.batch/<stage>.json      the running attempt: node, pid, attempt number

and for the whole batch ``OUT/batch.json`` and ``OUT/batch.html`` (rewritten atomically after
every finished stage; see :mod:`hravatar.apps.batch_summary`).

Resumable and idempotent: a stage whose outputs exist is skipped; training with a checkpoint
continues from it (``hravatar train --resume``), so a task retried by Ray after its worker died
(``--max-retries``) resumes instead of starting over. A stage that fails records the one-line
``error: ...`` of the single-subject command; the subject's later stages are not run, the other
subjects go on, and the exit status is 1.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib
import json
import logging
import os
import socket
import sys
import time
import traceback
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import tyro

from hravatar.errors import HRAvatarError

STAGES: tuple[str, ...] = ("preprocess", "train", "evaluate", "render")
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg"}
MANIFEST_SUFFIXES = {".txt", ".csv", ".lst"}
INSTALL_HINT = "install it with `pip install 'hravatar[cluster]'` (or `pip install ray`)"
#: per-stage settings the batch sets itself (a --config value for them is ignored)
_FORCED = {
    "preprocess": {"video", "output", "overwrite"},
    "train": {"subject", "output", "resume", "overwrite", "quiet", "threads", "stop_after"},
    "evaluate": {"avatar", "output"},
    "render": {"avatar", "output"},
}


@dataclass
class BatchConfig:
    """Run preprocess -> train -> evaluate -> render for many subjects at once on Ray."""

    inputs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """videos, subject folders, or .txt/.csv manifests listing them (one per line; CSV: a `path`
    column and an optional `name` column; relative paths are relative to the manifest)"""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("avatars")
    """batch folder: OUT/<subject>/..., OUT/batch.json, OUT/batch.html (shared by all nodes)"""
    address: str | None = None
    """Ray cluster to join (e.g. 10.0.0.5:6379, or `auto` on a cluster node); default: start a
    local Ray on this machine and stop it at the end"""
    cpus_per_job: float = 1.0
    """CPUs each stage task declares (and torch threads it uses)"""
    gpus_per_job: float = 0.0
    """GPUs each stage task declares (e.g. 1 or 0.5); 0 = CPU only"""
    stages: str = ",".join(STAGES)
    """comma-separated stages to run, in chain order (others are left as they are)"""
    config: Path | None = None
    """YAML of TrainConfig settings (like a train_config.yaml), or with sections
    preprocess: / train: / evaluate: / render: holding each command's settings"""
    max_retries: int = 2
    """times Ray reruns a stage task whose worker or node died (training resumes from its checkpoint)"""
    num_cpus: int = 0
    """CPUs of the local Ray (0: all of this machine's); ignored with --address"""
    num_gpus: int | None = None
    """GPUs of the local Ray (default: those Ray detects); ignored with --address"""
    object_store_mb: int = 100
    """object-store memory of the local Ray in MiB (the tasks pass only small records)"""


# ---- inputs -------------------------------------------------------------------------------------
@dataclass
class Job:
    """One subject of the batch: where its input is and where its outputs go (absolute paths)."""

    name: str
    input: str
    kind: str  # "video" or "subject"
    dir: str

    @property
    def subject(self) -> Path:
        return Path(self.input) if self.kind == "subject" else Path(self.dir) / "subject"

    @property
    def avatar(self) -> Path:
        return Path(self.dir) / "avatar"

    @property
    def video(self) -> Path:
        return self.avatar / "render_test.mp4"

    @property
    def thumbnail(self) -> Path:
        return Path(self.dir) / "thumbnail.png"


def read_manifest(path: Path) -> list[tuple[Path, str | None]]:
    """``(input path, name or None)`` of each line of a manifest; relative paths are taken from the
    manifest's folder. ``.csv``: a header with a ``path`` (or ``video``/``subject``) column and an
    optional ``name`` column; otherwise one path per line (``#`` starts a comment)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise HRAvatarError(f"{path}: cannot read the manifest ({e.__class__.__name__}); give a text "
                            "file with one video or subject folder per line") from None
    base = path.parent
    rows: list[tuple[Path, str | None]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        key = next((cols[k] for k in ("path", "video", "subject", "input") if k in cols), None)
        if key is None:
            raise HRAvatarError(f"{path}: no `path` column in the CSV header; start the file with a line "
                                "`path,name` (name optional)")
        for r in reader:
            p = (r.get(key) or "").strip()
            if p:
                name = (r.get(cols["name"]) or "").strip() if "name" in cols else ""
                rows.append((base / Path(p).expanduser(), name or None))
    else:
        for line in text.splitlines():
            p = line.split("#", 1)[0].strip()
            if p:
                rows.append((base / Path(p).expanduser(), None))
    if not rows:
        raise HRAvatarError(f"{path}: the manifest lists no inputs; put one video or subject folder per line")
    return rows


def _kind(path: Path) -> str:
    if path.is_dir():
        if (path / "manifest.json").is_file() or (path / "tracked_params.json").is_file():
            return "subject"
        raise HRAvatarError(f"{path}: folder is not a subject folder (no manifest.json or tracked_params.json); "
                            "give a video, a folder written by `hravatar preprocess`, or a manifest")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    raise HRAvatarError(f"{path}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}), subject folder or "
                        "manifest (.txt, .csv); give one of those")


def _safe_name(s: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in s).strip("._")
    return keep or "subject"


def plan_jobs(inputs: typing.Sequence[Path], out: Path) -> list[Job]:
    """The batch's subjects: manifests expanded, inputs checked (one-line error for a missing or
    unknown input), names unique (``name``, ``name-2``, ...), outputs under ``out``."""
    if not inputs:
        raise HRAvatarError("INPUTS: none given; pass videos, subject folders or a manifest")
    items: list[tuple[Path, str | None]] = []
    for p in inputs:
        p = Path(p).expanduser()
        if not p.exists():
            raise HRAvatarError(f"{p}: no such file or folder; check the path")
        if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            for q, name in read_manifest(p):
                if not q.exists():
                    raise HRAvatarError(f"{q}: no such file or folder (listed in {p}); fix the manifest")
                items.append((q, name))
        else:
            items.append((p, None))
    jobs: list[Job] = []
    seen_inputs: set[str] = set()
    names: set[str] = set()
    for p, name in items:
        ap = str(p.resolve())
        if ap in seen_inputs:
            continue
        seen_inputs.add(ap)
        kind = _kind(p)
        base = _safe_name(name or (p.resolve().name if kind == "subject" else p.stem))
        n, i = base, 2
        while n in names:
            n, i = f"{base}-{i}", i + 1
        names.add(n)
        jobs.append(Job(n, ap, kind, str((out / n).resolve())))
    return jobs


def parse_stages(text: str) -> list[str]:
    """The stages of ``--stages`` in chain order (one-line error for an unknown one)."""
    want = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in want if s not in STAGES]
    if bad or not want:
        raise HRAvatarError(f"--stages {text!r}: unknown stage {bad[0] if bad else '(none)'}; use a "
                            f"comma-separated subset of {','.join(STAGES)}")
    return [s for s in STAGES if s in want]


# ---- stage settings (--config) ----------------------------------------------------------------
def _command(stage: str) -> tuple[Any, type]:
    """The single-subject command's function and config type for ``stage`` (from the CLI registry)."""
    from hravatar.cli import COMMANDS

    module, func_name = COMMANDS[stage][0].split(":")
    func = getattr(importlib.import_module(module), func_name)
    first = next(iter(typing.get_type_hints(func)))
    return func, typing.get_type_hints(func)[first]


def load_settings(path: Path | None) -> dict[str, dict[str, Any]]:
    """Per-stage settings from ``--config``: a TrainConfig YAML, or sections named after stages."""
    import yaml

    out: dict[str, dict[str, Any]] = {s: {} for s in STAGES}
    if path is None:
        return out
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise HRAvatarError(f"{path}: config file not found; check --config") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise HRAvatarError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix --config") from None
    data = data or {}
    if not isinstance(data, dict):
        raise HRAvatarError(f"{path}: must be a mapping of settings; see `hravatar train --help`")
    if data and set(data) <= set(STAGES):
        for s, v in data.items():
            if not isinstance(v, dict):
                raise HRAvatarError(f"{path}: section {s}: must be a mapping of `hravatar {s}` settings")
            out[s] = dict(v)
    else:
        out["train"] = dict(data)
    return out


def stage_config(stage: str, settings: dict[str, Any], forced: dict[str, Any], source: str = "--config") -> Any:
    """The config dataclass of ``stage``'s command from user ``settings`` plus the batch's ``forced``
    values (one-line error naming ``source`` for unknown or ill-typed settings)."""
    from hravatar.config import from_dict

    _, cfg_type = _command(stage)
    user = {k: v for k, v in settings.items() if k not in _FORCED[stage]}
    try:
        return from_dict(cfg_type, {**user, **forced})
    except HRAvatarError as e:
        raise HRAvatarError(f"{source}: {stage}: {e}; see `hravatar {stage} --help`") from None
    except (TypeError, ValueError) as e:
        raise HRAvatarError(f"{source}: {stage}: settings do not fit ({str(e).splitlines()[0]}); "
                            f"see `hravatar {stage} --help`") from None


# ---- one stage of one subject (runs inside a Ray task) ------------------------------------------
def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return -1.0


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _node() -> dict[str, Any]:
    """Where this task runs: Ray node id and IP (when inside Ray), host name, pid."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        if ray.is_initialized():
            info["node_id"] = ray.get_runtime_context().get_node_id()
            info["node_ip"] = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - location is informative only
        pass
    return info


def _attempt(job: Job, stage: str, node: dict[str, Any], run_id: str) -> int:
    """Count this attempt of the stage in this batch run and record where it runs
    (``OUT/<name>/.batch/<stage>.json``: a retried task finds its predecessor still "running")."""
    from hravatar.io.atomic import atomic_write_text

    path = Path(job.dir) / ".batch" / f"{stage}.json"
    prev = _read_json(path)
    same = prev.get("state") == "running" and prev.get("run") == run_id
    n = int(prev.get("attempt", 0)) + 1 if same else 1
    atomic_write_text(path, json.dumps({"state": "running", "run": run_id, "attempt": n, "started": time.time(),
                                        **node}))
    return n


def _finish_attempt(job: Job, stage: str, status: str) -> None:
    from hravatar.io.atomic import atomic_write_text

    path = Path(job.dir) / ".batch" / f"{stage}.json"
    atomic_write_text(path, json.dumps({**_read_json(path), "state": status, "ended": time.time()}))


def _threads(cpus: float) -> None:
    """torch's intra-op threads = the task's declared CPUs (imported only when a stage computes)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def _run_preprocess(job: Job, settings: dict[str, Any], cpus: float) -> dict[str, Any]:
    if job.kind == "subject":
        return {"status": "input", "note": "the input is a subject folder"}
    man = _read_json(job.subject / "manifest.json")
    if man.get("complete"):
        return {"status": "skipped", "frames": man.get("num_frames") or man.get("frames")}
    _threads(cpus)
    func, _ = _command("preprocess")
    func(stage_config("preprocess", settings, {"video": job.input, "output": str(job.subject)}))
    return {"status": "done"}


def _run_train(job: Job, settings: dict[str, Any], cpus: float) -> dict[str, Any]:
    av = job.avatar
    info_path = av / "training.json"
    if (av / "avatar.safetensors").is_file() and info_path.is_file():
        res: dict[str, Any] = {"status": "skipped"}
    else:
        res = {"status": "done"}
        _threads(cpus)
        resume = (av / "checkpoint.pt").is_file()
        if resume:
            import torch

            ck = torch.load(av / "checkpoint.pt", map_location="cpu", weights_only=True)
            res["resumed_from"] = int(ck["iteration"])
            del ck
        func, _ = _command("train")
        cfg = stage_config("train", settings, {"subject": str(job.subject), "output": str(av), "resume": resume,
                                               "quiet": True, "threads": max(1, int(cpus))})
        status = int(func(cfg) or 0)
        if status != 0:
            raise HRAvatarError(f"{av}: training stopped after repeated non-finite steps (exit {status}); "
                                "see its curves and try a lower learning rate")
    info = _read_json(info_path)
    res.update(points=info.get("points"), iterations=info.get("iterations"), train_psnr=info.get("final_psnr"))
    return res


def _run_evaluate(job: Job, settings: dict[str, Any], cpus: float) -> dict[str, Any]:
    out = job.avatar / "eval"
    mpath = out / "metrics.json"
    if _mtime(mpath) >= _mtime(job.avatar / "avatar.safetensors") > 0:
        res: dict[str, Any] = {"status": "skipped"}
    else:
        _threads(cpus)
        func, _ = _command("evaluate")
        func(stage_config("evaluate", settings, {"avatar": str(job.avatar), "output": str(out)}))
        res = {"status": "done"}
    m = _read_json(mpath)
    res.update(psnr=m.get("psnr"), ssim=m.get("ssim"), lpips=m.get("lpips_alex"), frames=m.get("num_frames"))
    return res


def _run_render(job: Job, settings: dict[str, Any], cpus: float) -> dict[str, Any]:
    av_time = _mtime(job.avatar / "avatar.safetensors")
    if min(_mtime(job.video), _mtime(job.thumbnail)) >= av_time > 0:
        return {"status": "skipped", "video": str(job.video)}
    _threads(cpus)
    func, _ = _command("render")
    func(stage_config("render", settings, {"avatar": str(job.avatar), "output": str(job.video)}))
    thumb = {k: v for k, v in settings.items() if k in ("split", "use_encoder", "device")}
    func(stage_config("render", {"size": 160, **thumb}, {"avatar": str(job.avatar), "output": str(job.thumbnail),
                                                         "max_frames": 1}))
    return {"status": "done", "video": str(job.video)}


def run_stage(stage: str, job: dict[str, Any], settings: dict[str, Any], cpus: float = 1.0,
              previous: dict[str, Any] | None = None, run_id: str = "") -> dict[str, Any]:
    """Run ``stage`` of one subject (the body of a Ray task; also callable directly).

    ``job`` is a :class:`Job` as a dict, ``settings`` the stage's ``--config`` settings,
    ``previous`` the result of the subject's previous stage (``None`` for the first), ``run_id``
    names the batch run (to count Ray's retries of this task). Never raises
    for a failing subject: returns ``{"stage", "status", "seconds", "error", "node", "attempt", ...}``
    with status ``done``, ``skipped``, ``input``, ``failed`` or ``not run`` (an earlier stage failed).
    Output goes to ``OUT/<name>/logs/<stage>.log``.
    """
    j = Job(**job)
    node = _node()
    base = {"stage": stage, "node": node}
    if previous is not None and previous.get("status") in ("failed", "not run"):
        return {**base, "status": "not run", "seconds": 0.0, "error": None}
    attempt = _attempt(j, stage, node, run_id)
    log_path = Path(j.dir) / "logs" / f"{stage}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any]
    with open(log_path, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        from hravatar.progress import log

        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
        old_level = log.level
        log.setLevel(logging.INFO)
        print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {stage} of {j.name}, attempt {attempt}, "
              f"{node.get('host')} pid {node['pid']}", flush=True)
        try:
            if stage == "preprocess":
                res = _run_preprocess(j, settings, cpus)
            elif stage == "train":
                res = _run_train(j, settings, cpus)
            elif stage == "evaluate":
                res = _run_evaluate(j, settings, cpus)
            else:
                res = _run_render(j, settings, cpus)
            res.setdefault("error", None)
        except HRAvatarError as e:
            res = {"status": "failed", "error": f"error: {e}"}
            print(res["error"], flush=True)
        except Exception as e:  # noqa: BLE001 - a bug in one subject must not stop the batch
            traceback.print_exc()
            first = (str(e).splitlines() or [""])[0]
            res = {"status": "failed", "error": f"error: {j.name}: {stage} crashed ({type(e).__name__}: {first}); "
                                                f"see {log_path}"}
        finally:
            print(f"== {stage}: {res['status'] if 'res' in locals() else 'interrupted'}", flush=True)
            log.removeHandler(handler)
            log.setLevel(old_level)
    _finish_attempt(j, stage, res["status"])
    return {**base, **res, "seconds": round(time.perf_counter() - t0, 2), "attempt": attempt}


# ---- the driver ---------------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise HRAvatarError(f"ray: not installed (hravatar batch runs its jobs on Ray); {INSTALL_HINT}") from None
    return ray


def _start_ray(ray: Any, cfg: BatchConfig) -> dict[str, Any]:
    common = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if cfg.address:
            ray.init(address=cfg.address, **common)
            mode = f"cluster {cfg.address}"
        else:
            ray.init(num_cpus=cfg.num_cpus or os.cpu_count() or 1, num_gpus=cfg.num_gpus,
                     object_store_memory=max(cfg.object_store_mb, 80) * 1024 * 1024, include_dashboard=False,
                     **common)
            mode = "local"
    except (ConnectionError, RuntimeError, ValueError) as e:
        what = f"--address {cfg.address}" if cfg.address else "local Ray"
        hint = ("check the address (`ray status` on the head node) and that this machine can reach it"
                if cfg.address else "see the session_latest/logs folder in Ray's temporary directory")
        raise HRAvatarError(f"{what}: could not start or join Ray ({str(e).splitlines()[0]}); {hint}") from None
    nodes = [{"node_id": n["NodeID"], "node_ip": n.get("NodeManagerAddress"),
              "host": n.get("NodeManagerHostname"), "cpus": n.get("Resources", {}).get("CPU", 0),
              "gpus": n.get("Resources", {}).get("GPU", 0)} for n in ray.nodes() if n.get("Alive")]
    return {"mode": mode, "nodes": nodes}


def _say(bar: Any, line: str) -> None:
    if bar is not None:
        bar.write(line)
    else:
        print(line, flush=True)


def _describe(r: dict[str, Any]) -> str:
    bits = [f"{r.get('seconds', 0):.1f} s"]
    node = r.get("node") or {}
    if node.get("node_id"):
        bits.append(f"node {node.get('node_ip')}/{node['node_id'][:8]}")
    if r.get("attempt", 1) > 1:
        bits.append(f"attempt {r['attempt']}")
    if r.get("resumed_from") is not None:
        bits.append(f"resumed at iteration {r['resumed_from']}")
    if r.get("psnr") is not None:
        bits.append(f"PSNR {r['psnr']:.2f}")
    if r.get("error"):
        bits.append(r["error"])
    return ", ".join(bits)


def batch(cfg: BatchConfig) -> int:
    """Run the batch; returns 0 when every subject finished its stages, 1 when any failed."""
    from hravatar.apps.batch_summary import Summary

    stages = parse_stages(cfg.stages)
    if cfg.cpus_per_job <= 0 or cfg.gpus_per_job < 0:
        raise HRAvatarError(f"--cpus-per-job {cfg.cpus_per_job} / --gpus-per-job {cfg.gpus_per_job}: "
                            "use a positive CPU count and a GPU count >= 0")
    if cfg.max_retries < 0:
        raise HRAvatarError(f"--max-retries {cfg.max_retries}: use 0 or more")
    out = Path(cfg.output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise HRAvatarError(f"{out}: exists and is not a folder; choose another -o")
    settings = load_settings(cfg.config)
    src = str(cfg.config)
    for s in stages:  # bad settings fail now, before anything runs
        dummy = {"preprocess": {"video": "v.mp4"}, "train": {"subject": "s"}, "evaluate": {"avatar": "a"},
                 "render": {"avatar": "a"}}[s]
        stage_config(s, settings[s], dummy, src)
    jobs = plan_jobs(cfg.inputs, out)

    if not cfg.address:
        # a local Ray only for this machine: advertise the loopback address, not the network's
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = _import_ray()
    out.mkdir(parents=True, exist_ok=True)
    meta = {"cpus_per_job": cfg.cpus_per_job, "gpus_per_job": cfg.gpus_per_job, "max_retries": cfg.max_retries,
            "config": str(cfg.config) if cfg.config else None}
    summary = Summary(out, jobs, list(STAGES), stages, meta)
    t_start = time.perf_counter()
    print(f"batch: {len(jobs)} subject(s) x {len(stages)} stage(s) -> {out}", flush=True)
    cluster = _start_ray(ray, cfg)
    summary.meta.update(cluster)
    print(f"batch: Ray {cluster['mode']}: {len(cluster['nodes'])} node(s), "
          f"{sum(n['cpus'] for n in cluster['nodes']):g} CPU(s)", flush=True)
    summary.write()
    bar = None
    try:
        task = ray.remote(run_stage)
        pending: dict[Any, tuple[Job, str]] = {}
        for j in jobs:
            prev = None
            for s in stages:
                ref = task.options(num_cpus=cfg.cpus_per_job, num_gpus=cfg.gpus_per_job, max_retries=cfg.max_retries,
                                   retry_exceptions=False, name=f"{j.name}:{s}").remote(
                    s, dataclasses.asdict(j), settings[s], cfg.cpus_per_job, prev, summary.meta["run_id"])
                pending[ref] = (j, s)
                prev = ref
        from hravatar.progress import is_tty

        if is_tty():
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), desc="batch", unit="stage", file=sys.stderr)
        done = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                j, s = pending.pop(ref)
                try:
                    r = ray.get(ref)
                except ray.exceptions.RayError as e:
                    earlier = [t for t in stages[: stages.index(s)]
                               if summary.status(j.name, t) in (None, "failed", "not run")]
                    if earlier:
                        r = {"stage": s, "status": "not run", "seconds": 0.0, "error": None}
                    else:
                        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
                        r = {"stage": s, "status": "failed", "seconds": 0.0, "attempt": cfg.max_retries + 1,
                             "error": f"error: {j.name}: {s} task lost after {cfg.max_retries + 1} attempt(s) "
                                      f"({type(e).__name__}: {msg[:160]}); rerun the batch to resume"}
                summary.record(j.name, s, r)
                done += 1
                _say(bar, f"[{done}/{len(jobs) * len(stages)}] {j.name} {s}: {r['status']} ({_describe(r)})")
                if bar is not None:
                    bar.update(1)
                summary.write()
    finally:
        if bar is not None:
            bar.close()
        summary.meta["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        summary.write()
        ray.shutdown()
    failed = summary.failed()
    print(f"batch: {len(jobs) - len(failed)} of {len(jobs)} subject(s) done in {summary.meta['wall_seconds']:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f"; summary: {out / 'batch.html'}", flush=True)
    return 1 if failed else 0
