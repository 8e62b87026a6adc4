"""``hravatar demo``: synthetic subject -> train -> evaluate -> relight -> HTML report.

Every stage writes its outputs into the demo folder and is skipped when they already exist, so an
interrupted demo resumes where it stopped (training resumes from its last checkpoint). Layout::

    OUT/subject/        the synthetic subject with ground truth (hravatar synth)
    OUT/avatar/         the trained avatar (hravatar train)
    OUT/metrics.json    test-frame metrics against ground truth
    OUT/relight.json    the relighting figures' index
    OUT/figures/        PNG figures
    OUT/demo.json       settings, stage timings, machine
    OUT/report.html     the self-contained report (and report.json)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import tyro

from hravatar.errors import HRAvatarError
from hravatar.progress import log

#: Settings of the synthetic subject (changing them needs a new folder or --force).
_SYNTH_SETTINGS = ("size", "frames", "seed", "perturb", "points_per_face")
#: Settings of training (changing them retrains from scratch, keeping the subject).
_TRAIN_SETTINGS = ("iterations", "encoder", "encoder_input_size")


@dataclass
class DemoConfig:
    """Run the whole pipeline on the built-in synthetic subject and write an HTML report."""

    out: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("demo")
    """demo folder (created; rerunning resumes and skips finished stages)"""
    size: int = 256
    """image width = height of the synthetic video (pixels)"""
    frames: int = 300
    """frames of the synthetic video (the last 15% are the test set)"""
    iterations: int = 1500
    """training iterations (about 15 minutes at the default size on 2 CPU cores)"""
    seed: int = 0
    """seed of the synthetic person, its performance and of training"""
    perturb: float = 0.0
    """tracking noise of the synthetic subject (see hravatar synth --perturb)"""
    encoder: str = "mobilenet_v2"
    """expression encoder (mobilenet_v2, none = use the ground-truth expression as tracking)"""
    encoder_input_size: int = 0
    """encoder input side (0: 224, or 112 for videos smaller than 224 pixels)"""
    points_per_face: int = 16
    """ground-truth Gaussians per triangle of the synthetic subject"""
    eval_frames: int = 0
    """evaluate at most this many test frames (0: all)"""
    device: str = "auto"
    """cpu, cuda or auto"""
    backend: str = "auto"
    """rasterizer backend (auto, cpu, cuda, reference)"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    force: bool = False
    """redo every stage (deletes nothing else in OUT)"""


def _write_state(path: Path, state: dict[str, Any]) -> None:
    from hravatar.synth.evaluate import write_json

    write_json(path, state)


def _settings(cfg: DemoConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def demo(cfg: DemoConfig) -> int:
    """Run (or resume) the demo; prints where the report is."""
    import torch

    from hravatar.report.demo_report import build_demo_report
    from hravatar.synth.evaluate import evaluate_synthetic, relight_figures, write_json
    from hravatar.synth.subject import SynthConfig, synthesize
    from hravatar.train import TrainConfig, train

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    state_path = out / "demo.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() and not cfg.force else {}
    settings = _settings(cfg)
    old = state.get("settings", {})
    changed = [k for k in _SYNTH_SETTINGS if k in old and old[k] != settings[k]]
    if changed:
        raise HRAvatarError(
            f"{out}: was made with other settings ({', '.join(changed)}); use another --out "
            "or pass --force to redo every stage"
        )
    retrain = [k for k in _TRAIN_SETTINGS if k in old and old[k] != settings[k]]
    if retrain:
        log.info("training settings changed (%s): training again from scratch", ", ".join(retrain))
        for k in ("train", "evaluate", "relight"):
            state.get("done", {}).pop(k, None)
        state.get("timings_s", {}).pop("train", None)
    state.update(
        settings=settings,
        command="hravatar demo " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["demo"] else "hravatar demo",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        device=str(
            torch.device(
                "cuda"
                if cfg.device == "auto" and torch.cuda.is_available()
                else ("cpu" if cfg.device == "auto" else cfg.device)
            )
        ),
    )
    timings = state.setdefault("timings_s", {})
    done = state.setdefault("done", {})
    subject, avatar_dir, fig_dir = out / "subject", out / "avatar", out / "figures"
    t_all = time.perf_counter()

    def stage(name: str, n: int) -> bool:
        if done.get(name) and not cfg.force:
            log.info("[%d/5] %s: done already (%.0f s), skipped", n, name, timings.get(name, 0.0))
            return False
        log.info("[%d/5] %s ...", n, name)
        return True

    def finish(name: str, t0: float, previous: float = 0.0) -> None:
        timings[name] = round(previous + time.perf_counter() - t0, 1)
        done[name] = True
        _write_state(state_path, state)

    # 1. synthetic subject --------------------------------------------------------------------------
    if stage("synth", 1):
        t0 = time.perf_counter()
        synthesize(
            SynthConfig(
                out=subject,
                size=cfg.size,
                frames=cfg.frames,
                seed=cfg.seed,
                perturb=cfg.perturb,
                points_per_face=cfg.points_per_face,
                backend=cfg.backend,
                overwrite=True,
            )
        )
        finish("synth", t0)
        for k in ("train", "evaluate", "relight"):
            done.pop(k, None)

    # 2. training ----------------------------------------------------------------------------------------
    if stage("train", 2):
        t0 = time.perf_counter()
        resume = (avatar_dir / "checkpoint.pt").is_file() and not cfg.force and not retrain
        enc_size = cfg.encoder_input_size or (224 if cfg.size >= 224 else 112)
        tc = TrainConfig(
            subject=subject,
            output=avatar_dir,
            iterations=cfg.iterations,
            seed=cfg.seed,
            resume=resume,
            overwrite=not resume,
            encoder=cfg.encoder,  # type: ignore[arg-type]
            encoder_input_size=enc_size,
            encoder_warmup_steps=min(200, max(10, cfg.iterations // 5)),
            device=cfg.device,
            backend=cfg.backend,
            threads=cfg.threads,
        )
        try:
            status = train(tc)
        except KeyboardInterrupt:
            timings["train"] = round(float(timings.get("train", 0.0)) * resume + time.perf_counter() - t0, 1)
            _write_state(state_path, state)
            raise
        if status != 0 or not (avatar_dir / "avatar.safetensors").is_file():
            _write_state(state_path, state)
            raise HRAvatarError(f"{avatar_dir}: training stopped (status {status}); rerun `hravatar demo` to resume")
        finish("train", t0, previous=float(timings.get("train", 0.0)) if resume else 0.0)
        for k in ("evaluate", "relight"):
            done.pop(k, None)

    # 3. evaluation ------------------------------------------------------------------------------------------
    if stage("evaluate", 3):
        t0 = time.perf_counter()
        m = evaluate_synthetic(avatar_dir, subject, fig_dir, max_frames=cfg.eval_frames or None, backend=cfg.backend)
        write_json(out / "metrics.json", m)
        sr, rl = m["self_reenactment"], m["relighting"]["mean"]
        log.info(
            "test frames: PSNR %.2f dB, SSIM %.4f; relighting (unseen maps) PSNR %.2f dB raw (%.2f scale-aligned); "
            "albedo PSNR %.2f dB raw, chromaticity error %.1f deg, LMSE %.4f; normal cosine %.4f",
            sr["psnr"],
            sr["ssim"],
            rl["psnr"],
            rl["psnr_aligned"],
            m["albedo"]["psnr"],
            m["albedo"]["chroma_error_deg"],
            m["albedo"]["lmse"],
            m["normal"]["cosine"],
        )
        finish("evaluate", t0)

    # 4. relighting figures ------------------------------------------------------------------------------
    if stage("relight", 4):
        t0 = time.perf_counter()
        r = relight_figures(avatar_dir, subject, fig_dir, backend=cfg.backend)  # raw: no fitted albedo scale
        write_json(out / "relight.json", r)
        finish("relight", t0)

    # 5. report --------------------------------------------------------------------------------------------
    log.info("[5/5] report ...")
    t0 = time.perf_counter()
    timings["report"] = 0.0
    path = build_demo_report(out)
    timings["report"] = round(time.perf_counter() - t0, 1)
    state["total_session_s"] = round(time.perf_counter() - t_all, 1)
    _write_state(state_path, state)
    path = build_demo_report(out)  # again, so the report shows its own timing
    log.info("demo finished in %.0f s this session", time.perf_counter() - t_all)
    print(f"report: {path.resolve()}")
    print(f"open it with: xdg-open {path.resolve()}" if os.name == "posix" else f"open {path.resolve()} in a browser")
    return 0
