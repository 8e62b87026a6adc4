"""Benchmark (issue 18): do the albedo / light colour priors make relighting right without a fit?

Runs synthetic identities (seed, skin tone) x coloured training lights x prior settings: for each
identity and light one ``hravatar synth`` subject; for each prior setting one training run and one
evaluation on the test frames (:func:`hravatar.synth.evaluate.evaluate_synthetic`). Reports the
raw numbers (nothing fitted against the ground truth): relighting PSNR averaged over the two unseen
environments, albedo PSNR, albedo chromaticity error (degrees), and self-reenactment PSNR; the
scale-aligned relighting PSNR as a diagnostic.

    python benchmarks/relight_priors.py                 # tiny budget (the default, minutes per run)
    python benchmarks/relight_priors.py --full          # the demo's budget: 256 px, 300 frames, 1500 it.
    python benchmarks/relight_priors.py --settings none exposure --lights warm --identities 0:0.2

Writes ``benchmarks/results/relight_priors.json`` and ``.md`` (with the machine, load averages and
a calibration figure) and prints the Markdown table. Finished runs are cached in ``--work``
(``metrics.json`` per run), so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_flags, cpu_name  # noqa: E402

#: The session-5 default (cast transfer, level gauge, skin locus at 0.5) and the shared diffuse /
#: specular light colour on top of it, for the whole run (bases of the session-7 settings below).
_LOCUS = {"light_cast_transfer": 1.0, "light_level": 0.85, "skin_locus": 0.5}
_SPEC_LIGHT = {**_LOCUS, "light_cast_specular": 1.0, "light_specular_colour": 10.0}
#: Prior settings: name -> LossWeights overrides (hravatar.losses.LossWeights fields).
SETTINGS: dict[str, dict[str, float]] = {
    "none": {},
    "exposure": {"light_exposure": 1.0},
    "neutral": {"light_neutral": 1.0},
    "spec_wb": {"light_specular_wb": 1.0},
    "skin": {"skin_albedo": 1.0},
    "cast_transfer": {"light_cast_transfer": 1.0},
    "cast_transfer+skin": {"light_cast_transfer": 1.0, "skin_albedo": 1.0},
    "neutral+skin": {"light_neutral": 1.0, "skin_albedo": 1.0},
    "exposure+neutral": {"light_exposure": 1.0, "light_neutral": 1.0},
    "exposure+spec_wb": {"light_exposure": 1.0, "light_specular_wb": 1.0},
    "exposure+skin": {"light_exposure": 1.0, "skin_albedo": 1.0},
    "all": {"light_exposure": 1.0, "light_specular_wb": 1.0, "skin_albedo": 1.0},
    "level": {"light_cast_transfer": 1.0, "light_level": 0.85},
    "level_spec": {"light_cast_transfer": 1.0, "light_level_specular": 1.0},
    "level+spec_cast": {"light_cast_transfer": 1.0, "light_level": 0.85, "light_cast_specular": 1.0},
    "level+spec_cast0.5": {"light_cast_transfer": 1.0, "light_level": 0.85, "light_cast_specular": 0.5},
    "level+skin_locus": {"light_cast_transfer": 1.0, "light_level": 0.85, "skin_locus": 1.0},
    "level+skin_locus0.5": {"light_cast_transfer": 1.0, "light_level": 0.85, "skin_locus": 0.5},
    "level+skin_locus_only": {"light_level": 0.85, "skin_locus": 1.0},
    # the photometric loss with and without the saturation-aware comparison (a camera's clipping)
    "level+skin_locus0.5-saturation": {**_LOCUS, "saturation": 0.0},
    "level+skin_locus0.5+spec_colour": {**_LOCUS, "light_specular_colour": 1.0},
    "level+skin_locus0.5+spec_colour10": {**_LOCUS, "light_specular_colour": 10.0},
    "level+skin_locus0.5+spec_colour10tol": {**_LOCUS, "light_specular_colour": 10.0,
                                             "light_specular_colour_tolerance": 0.1},
    # one light colour for diffuse and specular, anchored by the skin locus (whole run; spec_light_half, the
    # default since session 7: the first half of the run only)
    "spec_light": _SPEC_LIGHT,
    "spec_light_half": {**_SPEC_LIGHT, "light_specular_until": 0.5},
    "spec_light_quarter": {**_SPEC_LIGHT, "light_specular_until": 0.25},
    "spec_light_3quarters": {**_SPEC_LIGHT, "light_specular_until": 0.75},
    "spec_light+skin_locus0.25": {**_SPEC_LIGHT, "skin_locus": 0.25},
    "spec_light+skin_locus0.1": {**_SPEC_LIGHT, "skin_locus": 0.1},
    "spec_light-skin_locus": {k: v for k, v in _SPEC_LIGHT.items() if k != "skin_locus"},
}
#: Every prior off (the base of each setting, whatever LossWeights' defaults are).
ALL_OFF = {"light_exposure": 0.0, "light_neutral": 0.0, "light_specular_wb": 0.0, "skin_albedo": 0.0,
           "light_cast_transfer": 0.0, "light_level": 0.0, "light_level_specular": 0.0, "light_cast_specular": 0.0,
           "skin_locus": 0.0, "light_specular_colour": 0.0, "light_specular_colour_tolerance": 0.0,
           "light_specular_until": 1.0}
TINY = {"size": 64, "frames": 40, "iterations": 200, "points_per_face": 1, "gt_points_per_face": 4,
        "env_height": 32, "eval_frames": 4}
FULL = {"size": 256, "frames": 300, "iterations": 1500, "points_per_face": 8, "gt_points_per_face": 16,
        "env_height": 128, "eval_frames": 0}




def calibration_gflops(n: int = 512, repeats: int = 5) -> float:
    """Median GFLOP/s of an ``n x n`` float32 matmul on one thread (how fast the machine was)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return 2 * n**3 / ts[len(ts) // 2] / 1e9


def subject_name(seed: int, skin: float, light: str, level: float = 1.0) -> str:
    """Folder name of a synthetic subject in ``--work`` (``_L<level>`` when the light level is not 1)."""
    return f"subject_s{seed}_k{skin:g}_{light}" + ("" if level == 1.0 else f"_L{level:g}")


def _synth(work: Path, seed: int, skin: float, light: str, b: dict, level: float = 1.0) -> Path:
    from hravatar.synth.subject import SynthConfig, synthesize

    out = work / subject_name(seed, skin, light, level)
    if (out / "gt" / "synth.json").is_file():
        return out
    synthesize(SynthConfig(out=out, size=b["size"], frames=b["frames"], seed=seed, skin=skin, light=light,
                           light_level=level, points_per_face=b["gt_points_per_face"], env_height=b["env_height"],
                           overwrite=True))
    return out


def _run(subject: Path, work: Path, setting: str, b: dict, threads: int, reevaluate: bool = False) -> dict:
    from hravatar.losses import LossWeights
    from hravatar.synth.evaluate import evaluate_synthetic, write_json
    from hravatar.train import TrainConfig, train

    av = work / f"{subject.name}__{setting}"
    mpath = av / "metrics.json"
    if mpath.is_file() and not reevaluate:
        return json.loads(mpath.read_text())
    if (av / "avatar.safetensors").is_file() and mpath.is_file():  # trained: evaluate again (new metrics)
        old = json.loads(mpath.read_text())
        m = evaluate_synthetic(av, subject, None, max_frames=b["eval_frames"] or None)
        m["timing_s"] = old.get("timing_s", {})
        m.pop("per_frame", None)
        write_json(mpath, m)
        return json.loads(mpath.read_text())
    t0 = time.perf_counter()
    cfg = TrainConfig(subject=subject, output=av, overwrite=True, iterations=b["iterations"], encoder="none",
                      points_per_face=b["points_per_face"], threads=threads, quiet=True, checkpoint_minutes=1e9,
                      loss=LossWeights(**{**ALL_OFF, **SETTINGS[setting]}))
    if train(cfg) != 0:
        raise RuntimeError(f"training {av} failed")
    t_train = time.perf_counter() - t0
    m = evaluate_synthetic(av, subject, None, max_frames=b["eval_frames"] or None)
    m["timing_s"] = {"train": round(t_train, 1), "evaluate": round(time.perf_counter() - t0 - t_train, 1)}
    m.pop("per_frame", None)
    write_json(mpath, m)
    return json.loads(mpath.read_text())


def _row(ident: str, light: str, setting: str, m: dict) -> dict:
    h = m["headline"]
    return {"identity": ident, "light": light, "setting": setting,
            "relit_psnr": h["relit_psnr_raw"], "albedo_psnr": h["albedo_psnr_raw"],
            "albedo_chroma_deg": h["albedo_chroma_error_deg"], "self_psnr": h["self_reenactment_psnr"],
            "relit_psnr_aligned": m["relighting"]["mean"]["psnr_aligned"],
            "relit_psnr_auto": m["relighting"]["mean"].get("psnr_auto_exposure"),
            "albedo_scale": m["albedo"]["scale"], "train_s": m.get("timing_s", {}).get("train")}


def _finite_mean(xs: list) -> float:
    xs = [x for x in xs if x is not None and x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def summarise(rows: list[dict], settings: list[str], base_setting: str = "none") -> list[dict]:
    """Mean of every number per prior setting (over identities and lights), and the mean change
    against ``base_setting`` on the same subjects (paired)."""
    keys = ("relit_psnr", "albedo_psnr", "albedo_chroma_deg", "self_psnr", "relit_psnr_auto", "relit_psnr_aligned")
    base = {(r["identity"], r["light"]): r for r in rows if r["setting"] == base_setting}
    out = []
    for s in settings:
        rs = [r for r in rows if r["setting"] == s]
        if rs:
            d = {f"d_{k}": _finite_mean([r[k] - base[(r["identity"], r["light"])][k] for r in rs
                                         if (r["identity"], r["light"]) in base])
                 for k in ("relit_psnr", "albedo_psnr", "albedo_chroma_deg", "self_psnr")}
            out.append({"setting": s, "runs": len(rs), **{k: _finite_mean([r[k] for r in rs]) for k in keys}, **d})
    return out


def _rgb(c: list[float]) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in c) + ")"


def table(result: dict) -> str:
    """Markdown: the per-setting means, then every run."""
    lines = [
        "| priors | runs | relit PSNR raw (dB) | albedo PSNR raw (dB) | albedo chroma error (deg) "
        "| self-reenactment PSNR (dB) | relit PSNR, auto exposure (dB) | relit PSNR aligned (dB, diagnostic) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        w = SETTINGS[s["setting"]]
        name = s["setting"] + (f" ({', '.join(f'{k}={v:g}' for k, v in w.items())})" if w else "")
        lines.append(f"| {name} | {s['runs']} | {s['relit_psnr']:.2f} | {s['albedo_psnr']:.2f} | "
                     f"{s['albedo_chroma_deg']:.1f} | {s['self_psnr']:.2f} | {s['relit_psnr_auto']:.2f} | "
                     f"{s['relit_psnr_aligned']:.2f} |")
    lines += ["", f"Change against `{result.get('paired_base', 'none')}` on the same subjects (paired; mean over "
              "the setting's runs):", "",
              "| priors | runs | relit PSNR raw | albedo PSNR raw | chroma error (deg) | self-reenactment PSNR |",
              "|---|---|---|---|---|---|"]
    for s in result["summary"]:
        lines.append(f"| {s['setting']} | {s['runs']} | {s['d_relit_psnr']:+.2f} | {s['d_albedo_psnr']:+.2f} | "
                     f"{s['d_albedo_chroma_deg']:+.1f} | {s['d_self_psnr']:+.2f} |")
    lines += ["", "| identity (seed:skin) | training light | priors | relit PSNR | albedo PSNR | chroma deg "
              "| self PSNR | relit PSNR, auto exposure | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        auto = "n/a" if r.get("relit_psnr_auto") is None else f"{r['relit_psnr_auto']:.2f}"
        lines.append(f"| {r['identity']} | {r['light']} | {r['setting']} | {r['relit_psnr']:.2f} | "
                     f"{r['albedo_psnr']:.2f} | {r['albedo_chroma_deg']:.1f} | {r['self_psnr']:.2f} | {auto} | "
                     f"{r['train_s']} |")
    return "\n".join(lines)


def real_check(subject: Path, hdr: Path, work: Path, settings: list[str], downscale: int, iterations: int,
               threads: int, frames: int = 4) -> list[dict]:
    """A real subject relit under a neutral studio HDR: does the skin keep a plausible tone?

    Per prior setting: train on ``subject`` (downscaled, no encoder), relight test frames under
    ``hdr`` as ``hravatar relight`` does (auto exposure), white-balanced (the render divided by the
    HDR's own mean colour cast, which is linear in the light: the same studio with white lights), and
    compare the mean colour of the
    foreground (the tracked mask) with the same pixels of the video frames (a white-balanced
    studio video: its skin colour is the reference). Returns rows with both colours, the
    angle between them (degrees) and the skin band check of the avatar's mean albedo.
    """
    from hravatar import light_priors as lp
    from hravatar.apps.common import load_environment
    from hravatar.avatar import Camera, load_avatar
    from hravatar.losses import LossWeights
    from hravatar.train import TrainConfig, train

    rows = []
    for s in settings:
        av_dir = work / f"real_{subject.name}_d{downscale}_i{iterations}__{s}"
        if not (av_dir / "avatar.safetensors").is_file():
            cfg = TrainConfig(subject=subject, output=av_dir, overwrite=True, iterations=iterations, encoder="none",
                              downscale=downscale, points_per_face=1, threads=threads, quiet=True,
                              checkpoint_minutes=1e9, loss=LossWeights(**{**ALL_OFF, **SETTINGS[s]}))
            if train(cfg) != 0:
                raise RuntimeError(f"training {av_dir} failed")
        av = load_avatar(av_dir, "cpu")
        env = load_environment(hdr, av)
        e = lp.mean_front_irradiance(env).detach()
        cast = e / lp.luminance(e)  # the HDR's own colour: divided out = the same studio, white-balanced
        ds = av.subject("test")
        idx = sorted({int(round(x)) for x in torch.linspace(0, len(ds) - 1, frames).tolist()})
        relit, video, alb = torch.zeros(3), torch.zeros(3), torch.zeros(3)
        for i in idx:
            fr = av.frame(ds, i)
            with torch.no_grad():
                out = av.render(av.frame_params(fr), Camera.of_frame(fr), lighting=env)
            m = fr.mask * (out.alpha[0] > 0.5)
            relit += (out.image[0] * m).reshape(-1, 3).sum(0) / m.sum().clamp_min(1)
            video += (fr.image * m).reshape(-1, 3).sum(0) / m.sum().clamp_min(1)
            alb += lp.mean_albedo(out.albedo[0], m, out.alpha[0])
        n = len(idx)
        relit, video, alb = relit / n, video / n, alb / n
        relit = relit / cast
        rows.append({"setting": s, "relit_mean_rgb": relit.tolist(), "video_mean_rgb": video.tolist(),
                     "albedo_mean_rgb": alb.tolist(), "relit_vs_video_deg": lp.chromaticity_angle_deg(relit, video),
                     "albedo_skin_prior_loss": float(lp.skin_albedo_loss(alb)),
                     "auto_exposure_stops": float(getattr(env, "auto_exposure", 0.0)), "hdr_cast": cast.tolist()})
        print(f"real {subject.name} {s}: relit {[round(x, 3) for x in relit.tolist()]} vs video "
              f"{[round(x, 3) for x in video.tolist()]}: {rows[-1]['relit_vs_video_deg']:.1f} deg", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--identities", nargs="+", default=["0:0.15", "1:0.5", "2:0.85"],
                    help="seed:skin-tone pairs (skin in [0, 1], lightest to darkest)")
    ap.add_argument("--lights", nargs="+", default=["warm", "cool"], help="training light colours")
    ap.add_argument("--light-level", type=float, default=1.0,
                    help="brightness of the training light relative to the relighting environments "
                         "(synth --light-level)")
    ap.add_argument("--base", default="none", choices=list(SETTINGS), help="setting the paired table compares with")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--full", action="store_true", help="the demo's budget instead of the tiny one")
    for k in TINY:
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=None, help=f"override (tiny: {TINY[k]})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--real", type=Path, default=None, help="also check a real subject folder (hravatar preprocess)")
    ap.add_argument("--real-hdr", type=Path, default=None, help="neutral studio HDR for --real")
    ap.add_argument("--real-downscale", type=int, default=8)
    ap.add_argument("--real-iterations", type=int, default=200)
    ap.add_argument("--real-settings", nargs="+", default=["none", "exposure+neutral"], choices=list(SETTINGS))
    ap.add_argument("--skip-synthetic", action="store_true", help="only the --real check")
    ap.add_argument("--reevaluate", action="store_true", help="evaluate cached avatars again (no training)")
    ap.add_argument("--cached-only", action="store_true",
                    help="tabulate the finished runs in --work only (no synthesis, training or evaluation)")
    ap.add_argument("--work", type=Path, default=Path("relight_priors_work"), help="subjects / avatars (cache)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "relight_priors.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    b = dict(FULL if a.full else TINY)
    for k in TINY:
        if getattr(a, k) is not None:
            b[k] = getattr(a, k)
    a.work.mkdir(parents=True, exist_ok=True)
    load_before, calib = os.getloadavg(), calibration_gflops()
    t_all = time.perf_counter()
    rows = []
    for ident in [] if a.skip_synthetic else a.identities:
        seed, skin = ident.split(":")
        for light in a.lights:
            subject = a.work / subject_name(int(seed), float(skin), light, a.light_level)
            if not a.cached_only:
                subject = _synth(a.work, int(seed), float(skin), light, b, a.light_level)
            for s in a.settings:
                if a.cached_only and not (a.work / f"{subject.name}__{s}" / "metrics.json").is_file():
                    continue
                m = _run(subject, a.work, s, b, a.threads, a.reevaluate)
                label = light if a.light_level == 1.0 else f"{light} x{a.light_level:g}"
                rows.append(_row(ident, label, s, m))
                print(f"{ident} {light} {s}: relit {rows[-1]['relit_psnr']:.2f} dB, albedo "
                      f"{rows[-1]['albedo_psnr']:.2f} dB, chroma {rows[-1]['albedo_chroma_deg']:.1f} deg, "
                      f"self {rows[-1]['self_psnr']:.2f} dB  (load {os.getloadavg()[0]:.1f})", flush=True)
    result = {
        "command": "python benchmarks/relight_priors.py " + " ".join(sys.argv[1:]),
        "budget": b,
        "light_level": a.light_level,
        "settings": {s: SETTINGS[s] for s in a.settings},
        "machine": {"cpu": cpu_name(), "flags": cpu_flags(), "logical_cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": a.threads, "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(), "calibration_matmul512_gflops_1thread": round(calib, 2),
                    "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
        "seconds": round(time.perf_counter() - t_all, 1),
        "rows": rows,
        "paired_base": a.base,
        "summary": summarise(rows, a.settings, a.base),
    }
    if a.real is not None:
        if a.real_hdr is None:
            ap.error("--real needs --real-hdr")
        result["real"] = {"subject": str(a.real), "hdr": str(a.real_hdr), "downscale": a.real_downscale,
                          "iterations": a.real_iterations,
                          "rows": real_check(a.real, a.real_hdr, a.work, a.real_settings, a.real_downscale,
                                             a.real_iterations, a.threads)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    md = table(result) if rows else ""
    if "real" in result:
        md += ("\n\n| real subject: priors | relit mean RGB (studio HDR, white-balanced) | video mean RGB "
               "| angle (deg) | albedo mean RGB | outside skin band |\n|---|---|---|---|---|---|\n")
        md += "\n".join(f"| {r['setting']} | {_rgb(r['relit_mean_rgb'])} | {_rgb(r['video_mean_rgb'])} | "
                        f"{r['relit_vs_video_deg']:.1f} | {_rgb(r['albedo_mean_rgb'])} | "
                        f"{r['albedo_skin_prior_loss']:.3f} |" for r in result["real"]["rows"])
    a.out.with_suffix(".md").write_text(
        f"budget: {b}\n\nmachine: {result['machine']}\n\n{md}\n")
    print(md)
    print(f"\nload average before/after: {load_before} / {result['machine']['loadavg_after']}; "
          f"calibration {calib:.2f} GFLOP/s; wrote {a.out}")


if __name__ == "__main__":
    main()
