"""Diagnosis (issue 18): which part of a trained synthetic avatar knows the training light's colour?

For avatars trained on ``hravatar synth`` subjects (e.g. the folders that
``benchmarks/relight_priors.py --work DIR`` leaves), compares with the subject's ground truth:

* the learned diffuse light: the chromaticity error (degrees) of its mean front irradiance
  against the true training environment's (:func:`hravatar.light_priors.mean_front_irradiance`);
* the learned specular light: the same for its mean over front directions at roughness 0.75 and
  0.3 (F0 is achromatic, so a specular light that fitted the highlights would carry the light's
  colour whatever the albedo), and its angle to the learned diffuse light; the dynamic range of
  the activated specular map (a map with little range is a uniform sheen, not highlights);
* the face: the angle between the face points' mean albedo and the skin locus of its luminance
  (what the skin-locus gauge pulls to), and the albedo chromaticity error of the evaluation;
* the sclera: bright, near-neutral pixels of the ground-truth albedo (an oracle mask, every 5th
  training frame): how many pixels per frame show it, and the chromaticity error of the learned
  albedo there (a white reference is only as good as this).

    python benchmarks/light_colour_diagnosis.py WORK/subject_s1_k0.5_cool__spec_light_half ... \
        --out benchmarks/results/light_colour_diagnosis.json

Writes the JSON and a Markdown table beside it, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, write_record  # noqa: E402


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    from hravatar.light_priors import chromaticity_angle_deg

    return round(float(chromaticity_angle_deg(a.float(), b.float())), 2)


@torch.no_grad()
def diagnose(avatar_dir: Path, frame_step: int = 5) -> dict:
    """The numbers above for one trained avatar folder (its subject folder must exist)."""
    from hravatar import light_priors as lp
    from hravatar.avatar.load import load_avatar
    from hravatar.synth.envmaps import make_lighting
    from hravatar.train import face_point_weights, face_region_grid

    av = load_avatar(avatar_dir, device="cpu")
    syn = json.loads((Path(av.subject_path) / "gt" / "synth.json").read_text())
    truth = make_lighting(syn["train_env"], height=64)[1]
    learned = av.lighting
    e_l, e_t = lp.mean_front_irradiance(learned), lp.mean_front_irradiance(truth)
    spec = {r: (lp.mean_front_specular(learned, r), lp.mean_front_specular(truth, r)) for r in (0.75, 0.3)}
    spec_act = torch.sigmoid(learned.specular_levels()[0])

    p = av.gaussians.params
    w = face_point_weights(face_region_grid(av.head_model(), "cpu"), p["means"], p["opacities"])
    face = (torch.sigmoid(p["albedo"]) * w[:, None]).sum(0) / w.sum().clamp_min(1e-9)

    ds = av.subject("train")
    s_pred, s_gt, n_px, n_fr = torch.zeros(3), torch.zeros(3), 0, 0
    for i in range(0, len(ds), frame_step):
        out = av.render_frame(av.frame(ds, i))
        a = out.alpha[0]
        pred = out.albedo[0] / a.clamp_min(1e-6)
        gt = ds.gt_map(i, "albedo").to(pred)
        neutral = gt.amax(-1) / gt.amin(-1).clamp_min(1e-4) < 1.35
        m = (lp.luminance(gt) > 0.5) & neutral & (a[..., 0] > 0.95)
        s_pred += pred[m].sum(0)
        s_gt += gt[m].sum(0)
        n_px += int(m.sum())
        n_fr += 1
    metrics = json.loads((Path(avatar_dir) / "metrics.json").read_text()) if (
        Path(avatar_dir) / "metrics.json").is_file() else {}
    h = metrics.get("headline", {})
    return {
        "avatar": Path(avatar_dir).name,
        "train_env": syn["train_env"],
        "diffuse_light_error_deg": _angle(e_l, e_t),
        "specular_light_error_deg": {str(r): _angle(*spec[r]) for r in spec},
        "specular_vs_diffuse_deg": _angle(spec[0.75][0], e_l),
        "specular_map_range": [round(float(spec_act.min()), 3), round(float(spec_act.max()), 3)],
        "face_vs_locus_deg": _angle(face, lp.skin_locus_colour(lp.luminance(face))),
        "albedo_chroma_error_deg": h.get("albedo_chroma_error_deg"),
        "self_reenactment_psnr": h.get("self_reenactment_psnr"),
        "relit_psnr_raw": h.get("relit_psnr_raw"),
        "sclera_pixels_per_frame": round(n_px / max(n_fr, 1), 1),
        "sclera_error_deg": _angle(s_pred, s_gt) if n_px else None,
        "sclera_truth_vs_grey_deg": _angle(s_gt, torch.ones(3)) if n_px else None,
    }


def table(rows: list[dict]) -> str:
    head = ("| avatar | diffuse light err | specular light err (r 0.75 / 0.3) | specular vs diffuse | "
            "specular map range | face vs locus | albedo chroma err | sclera px / frame | sclera err | "
            "self PSNR | relit PSNR raw |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    f = "{:.2f}".format
    body = "".join(
        f"| {r['avatar']} | {f(r['diffuse_light_error_deg'])} | {f(r['specular_light_error_deg']['0.75'])} / "
        f"{f(r['specular_light_error_deg']['0.3'])} | {f(r['specular_vs_diffuse_deg'])} | "
        f"{r['specular_map_range'][0]}-{r['specular_map_range'][1]} | {f(r['face_vs_locus_deg'])} | "
        f"{f(r['albedo_chroma_error_deg'] or float('nan'))} | {r['sclera_pixels_per_frame']} | "
        f"{f(r['sclera_error_deg'] if r['sclera_error_deg'] is not None else float('nan'))} | "
        f"{f(r['self_reenactment_psnr'] or float('nan'))} | {f(r['relit_psnr_raw'] or float('nan'))} |\n"
        for r in rows)
    return head + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("avatars", nargs="+", type=Path, help="trained avatar folders of synthetic subjects")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "light_colour_diagnosis.json")
    ap.add_argument("--note", default="", help="what the avatars are (stored in the JSON)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    before = os.getloadavg()
    rows = [diagnose(d) for d in a.avatars]
    rec = {"what": __doc__.splitlines()[0], "note": a.note, "rows": rows, "machine": machine(before, os.getloadavg())}
    write_record(a.out, rec, table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
