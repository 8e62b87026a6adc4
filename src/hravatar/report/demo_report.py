"""The demo's report: one self-contained HTML page (and JSON) from a demo output folder.

Reads what the demo's stages wrote (``demo.json`` timings and settings, ``metrics.json``,
``relight.json``, ``figures/*.png``, ``avatar/curves.csv`` and ``avatar/training.json``,
``subject/gt/synth.json``) and writes ``report.html`` and ``report.json``.
"""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from hravatar.report.html import Report
from hravatar.report.plots import bar_plot, curves_plot, hstack, tonemap, training_curves

#: The paper's INSTA averages (Table 1), for orientation only (different data and resolution).
PAPER_INSTA = {"psnr": 30.36, "ssim": 0.9482, "lpips": 0.0569, "mae100": 0.845}


def _read_json(p: Path) -> dict[str, Any]:
    return json.loads(p.read_text()) if p.is_file() else {}


def _read_curves(p: Path) -> list[dict[str, float]]:
    if not p.is_file():
        return []
    rows = []
    with p.open() as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def _img(fig_dir: Path, name: str | None) -> bytes | None:
    if not name:
        return None
    p = fig_dir / name
    return p.read_bytes() if p.is_file() else None


def _pairs(fig_dir: Path, items: list[dict[str, Any]], label_key: str, fmt: str) -> list[tuple[str, list]]:
    pred = [(fmt.format(it[label_key]), _img(fig_dir, it["pred"])) for it in items]
    gt = [(fmt.format(it[label_key]), _img(fig_dir, it["gt"])) for it in items]
    return [("avatar", [c for c in pred if c[1] is not None]), ("ground truth", [c for c in gt if c[1] is not None])]


def build_demo_report(out_dir: str | Path) -> Path:
    """Write ``OUT/report.html`` and ``OUT/report.json`` from a demo folder; returns the HTML path."""
    out = Path(out_dir)
    demo = _read_json(out / "demo.json")
    metrics = _read_json(out / "metrics.json")
    relight = _read_json(out / "relight.json")
    training = _read_json(out / "avatar" / "training.json")
    synth = _read_json(out / "subject" / "gt" / "synth.json")
    fig_dir = out / "figures"
    settings = demo.get("settings", {})
    timings = demo.get("timings_s", {})

    cmd = demo.get("command", "hravatar demo")
    rep = Report("HRAvatar demo: synthetic subject with ground truth", subtitle=f"`{cmd}`", image_height=150)

    # ---- summary ---------------------------------------------------------------------------------
    size = settings.get("size", "?")
    rep.section(
        "Summary",
        note=(
            f"A synthetic talking head ({settings.get('frames', '?')} frames of {size}x{size}, open head model, "
            "procedural appearance, lit by a procedural studio environment) was rendered with this project's "
            f"Gaussian renderer; an avatar was trained on the first frames for {training.get('iterations', '?')} "
            f"iterations on {demo.get('device', 'cpu')} and evaluated on the last "
            f"{metrics.get('test_frames', '?')} frames. Ground truth exists for albedo, normals, roughness, F0 "
            "and for renders under two environments never seen in training, so relighting is measured, "
            "which the paper could not do."
        ),
    )
    sr = metrics.get("self_reenactment", {})
    rows = [
        {"metric": "PSNR (dB)", "this run": sr.get("psnr"), "paper, INSTA (512px, 1 h GPU)": PAPER_INSTA["psnr"]},
        {"metric": "SSIM", "this run": sr.get("ssim"), "paper, INSTA (512px, 1 h GPU)": PAPER_INSTA["ssim"]},
        {"metric": "LPIPS (alex)", "this run": sr.get("lpips"), "paper, INSTA (512px, 1 h GPU)": PAPER_INSTA["lpips"]},
        {"metric": "MAE* (x100)", "this run": sr.get("mae100"), "paper, INSTA (512px, 1 h GPU)": PAPER_INSTA["mae100"]},
    ]
    hl = metrics.get("headline", {})
    if hl:
        rep.paragraph(
            "Headline, raw (nothing fitted against the ground truth): relighting PSNR averaged over the unseen "
            "environments, albedo PSNR, and the albedo chromaticity error (angle between the mean avatar and "
            "ground-truth albedo colours):"
        )
        rep.table([
            {"quantity": "relighting PSNR, raw (dB)", "value": hl.get("relit_psnr_raw")},
            {"quantity": "albedo PSNR, raw (dB)", "value": hl.get("albedo_psnr_raw")},
            {"quantity": "albedo chromaticity error (degrees)", "value": hl.get("albedo_chroma_error_deg")},
            {"quantity": "self-reenactment PSNR (dB)", "value": hl.get("self_reenactment_psnr")},
        ])
    rep.paragraph("Self-reenactment on the test frames (full image, black background):")
    rep.table(rows)
    rl = metrics.get("relighting", {})
    rrows = []
    for env, m in rl.items():
        if not isinstance(m, dict):
            continue
        rrows.append(
            {
                "environment": env,
                "PSNR": m.get("psnr"),
                "SSIM": m.get("ssim"),
                "PSNR (scale-aligned)": m.get("psnr_aligned"),
                "SSIM (scale-aligned)": m.get("ssim_aligned"),
            }
        )
    rep.paragraph(
        "Relighting under the unseen environments against ground truth (beyond the paper). PSNR / SSIM are raw; "
        "as a diagnostic only, 'scale-aligned' applies one global per-channel scale per environment fitted "
        "against the ground truth over all test frames (a fit no user can make):"
    )
    rep.table(rrows)
    intr = [
        {"quantity": "albedo PSNR, raw (dB)", "value": metrics.get("albedo", {}).get("psnr")},
        {"quantity": "albedo chromaticity error (degrees)", "value": metrics.get("albedo", {}).get("chroma_error_deg")},
        {"quantity": "albedo LMSE (scale-invariant, lower is better)", "value": metrics.get("albedo", {}).get("lmse")},
        {
            "quantity": "albedo PSNR after global per-channel scale (dB)",
            "value": metrics.get("albedo", {}).get("psnr_aligned"),
        },
        {"quantity": "normal cosine similarity (1 = perfect)", "value": metrics.get("normal", {}).get("cosine")},
        {"quantity": "roughness MAE (range 0.5-1)", "value": metrics.get("roughness", {}).get("mae")},
        {"quantity": "F0 MAE (range 0.04-0.15)", "value": metrics.get("f0", {}).get("mae")},
    ]
    rep.table(intr)

    # ---- training ----------------------------------------------------------------------------------
    rep.section(
        "Training",
        note=(
            f"{training.get('iterations', '?')} iterations, {training.get('points', '?')} Gaussians at the end, "
            f"{training.get('train_seconds', float('nan')):.0f} s of training; the first "
            f"{training.get('warmup_iterations', '?')} iterations fit the albedo map directly (albedo warm-up)."
            if training
            else "no training summary found"
        ),
    )
    curves = _read_curves(out / "avatar" / "curves.csv")
    if curves:
        keep = [k for k in curves[0] if k not in ("seconds", "lr_means")]
        rep.figure(
            training_curves([{k: r.get(k, float("nan")) for k in keep} for r in curves], "iteration"),
            "training curves (red: moving average)",
        )

    frames = metrics.get("figures", {}).get("frames", [])
    # ---- reenactment ---------------------------------------------------------------------------------
    rep.section(
        "Test frames: ground truth vs avatar",
        note=(
            "Self-reenactment of held-out frames (the expression comes from the avatar's encoder when it has one). "
            "Error: mean absolute difference, black = 0, white = 0.2 or more."
        ),
    )
    rep.image_rows(
        [
            (
                f"frame {f['index']}",
                [
                    ("ground truth", _img(fig_dir, f["gt"])),
                    ("avatar", _img(fig_dir, f["pred"])),
                    ("error", _img(fig_dir, f["error"])),
                ],
            )
            for f in frames
        ]
    )

    # ---- materials -------------------------------------------------------------------------------------
    rep.section(
        "Intrinsics: avatar vs ground truth",
        note=(
            "Albedo (the avatar's raw), roughness (0.5 dark - 1 bright), F0 "
            "(0.04 dark - 0.15 bright) and normals (camera frame: x right = red, y up = green, "
            "toward the viewer = blue)."
        ),
    )
    for f in frames:
        cells = []
        for key in ("albedo", "roughness", "f0", "normal"):
            cells.append((f"{key} (avatar)", _img(fig_dir, f.get(f"{key}_pred"))))
            cells.append((f"{key} (GT)", _img(fig_dir, f.get(f"{key}_gt"))))
        rep.image_rows([(f"frame {f['index']}", [c for c in cells if c[1] is not None])], height=120)

    # ---- relighting --------------------------------------------------------------------------------------
    envs = list(synth.get("test_envs", []))
    rep.section(
        "Relighting under unseen environments",
        note=(
            "The avatar's G-buffer shaded with environments never seen in training, next to the ground-truth "
            "avatar under the same light: raw, and after the global per-channel scale of the metrics table "
        "(the 'aligned' images)."
        ),
    )
    env_dir = out / "subject" / "gt" / "envmaps"
    for env in envs:
        thumb = _env_thumb(env_dir / f"{env}.hdr")
        cells = [(f"{env} (environment)", thumb)] if thumb is not None else []
        for f in frames:
            cells.append((f"frame {f['index']}: avatar", _img(fig_dir, f.get(f"relit_{env}_pred"))))
            cells.append((f"frame {f['index']}: avatar, aligned", _img(fig_dir, f.get(f"relit_{env}_aligned"))))
            cells.append((f"frame {f['index']}: GT", _img(fig_dir, f.get(f"relit_{env}_gt"))))
        rep.image_rows([(env, [c for c in cells if c[1] is not None])], height=130)

    if relight:
        rep.section(
            "Rotating light",
            note=(
                f"The training environment rotated about the vertical axis (frame {relight.get('frame_index')}). "
                "In this and the next two strips the avatar is raw (its own albedo, nothing fitted) under the "
                "same light as the ground truth." if relight.get("albedo_scale") is None else
                "In this and the next two strips the avatar's albedo is multiplied by the global per-channel "
                "scale fitted in the evaluation, so both rows use the same light."
            ),
        )
        rep.image_rows(_pairs(fig_dir, relight.get("rotate", []), "angle", "{:.0f} deg"), height=120)
        if relight.get("f0"):
            rep.section(
                "Material edit: rising Fresnel F0",
                note=(
                    "The avatar's F0 replaced by one value everywhere (training lighting); the ground truth edited "
                    "the same way."
                ),
            )
            rep.image_rows(_pairs(fig_dir, relight["f0"], "f0", "F0 = {:.2f}"), height=130)
        rep.section("Novel views", note="A camera orbiting the head (yaw angles), training lighting.")
        rep.image_rows(_pairs(fig_dir, relight.get("views", []), "yaw", "{:+.0f} deg"), height=130)

    # ---- the synthetic performance --------------------------------------------------------------------
    if synth:
        rep.section(
            "The synthetic subject",
            note=(
                "Ground-truth animation: ARKit-style expression curves (talking, blinks, smiles) and head motion; "
                "the dashed line marks the start of the test frames."
            ),
        )
        T = len(synth.get("yaw_pitch_roll_deg", []))
        n_test = int(synth.get("test_frames", 0))
        ypr = np.asarray(synth.get("yaw_pitch_roll_deg", [[0, 0, 0]]), dtype=np.float32)
        x = np.arange(len(ypr))
        rep.figure(
            curves_plot(
                x,
                {"yaw": ypr[:, 0], "pitch": ypr[:, 1], "roll": ypr[:, 2]},
                "head rotation",
                "degrees",
                vlines=[T - n_test],
            ),
            "head motion",
        )
        ark = synth.get("arkit_curves", {})
        sel = {
            k: ark[k] for k in ("jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "mouthFunnel", "browInnerUp") if k in ark
        }
        if sel:
            rep.figure(
                curves_plot(
                    np.arange(len(next(iter(sel.values())))),
                    sel,
                    "expression curves (ARKit names)",
                    "coefficient",
                    vlines=[T - n_test],
                ),
                "expressions",
            )
        strip = _filmstrip(out / "subject" / "image", 8)
        if strip is not None:
            rep.figure(strip, "training video, evenly spaced frames")

    # ---- timings -------------------------------------------------------------------------------------------
    rep.section(
        "Timings",
        note=f"{platform.processor() or platform.machine()}, {demo.get('threads', '?')} threads, "
        f"torch {demo.get('torch', '?')}, device {demo.get('device', 'cpu')}.",
    )
    if timings:
        rep.table([{"stage": k, "seconds": v} for k, v in timings.items()])
        rep.figure(bar_plot(timings, "stage timings (this machine)"), "timings")
    rep.section("Settings")
    rep.table(
        [{"setting": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v} for k, v in settings.items()]
    )

    data = {
        "demo": demo,
        "metrics": {k: v for k, v in metrics.items() if k != "figures"},
        "training": training,
        "relight": {k: v for k, v in relight.items() if k not in ("rotate", "f0", "views")},
    }
    return rep.write(out / "report.html", json_path=out / "report.json", data=data)


def _env_thumb(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    return tonemap(img[..., ::-1].astype(np.float32), exposure=1.0)


def _filmstrip(img_dir: Path, n: int) -> np.ndarray | None:
    import cv2

    if not img_dir.is_dir():
        return None
    files = sorted(img_dir.glob("*.png"))
    if not files:
        return None
    pick = [files[int(round(i))] for i in np.linspace(0, len(files) - 1, min(n, len(files)))]
    ims = []
    for p in pick:
        a = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        rgb = a[..., [2, 1, 0]].astype(np.float32) / 255.0
        if a.shape[2] == 4:
            rgb = rgb * (a[..., 3:4].astype(np.float32) / 255.0)
        ims.append(rgb)
    return hstack(ims)
