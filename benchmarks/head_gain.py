"""MediaPipe's head-rotation compression on the open head model, the source of ``drive.HEAD_GAINS``.

``python benchmarks/head_gain.py [--samples 150] [--identities 2,3,4]``: the open head model is rendered
(``hravatar synth``'s readable face, 256 px, the synthetic camera, neutral light) for a few identities
at known head rotations (half of the renders small, up to 5 / 5 / 3 degrees of pitch / yaw / roll,
half large, up to 25 / 35 / 10) with random sparse expressions (40% neutral) and, half of the time, an
open jaw; MediaPipe's face landmarker reads each render. Per identity, the rotation change from its
neutral, frontal render is compared in the OpenCV camera frame (axis-angle x = pitch, y = yaw,
z = roll): the slope of MediaPipe's angle against the true one, per axis, over all renders and per
subset. The gain that undoes the compression is 1 / slope. Identities 2-4 are neither the
reenactment benchmark's avatar A (seed 0) nor its driver B (seed 1). Writes
benchmarks/results/head_gain.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reenact as bench  # noqa: E402


def probe(identities: tuple[int, ...], samples: int, size: int = 256, seed: int = 7, max_active: int = 3,
          jaw_max: float = 0.35) -> dict[str, np.ndarray]:
    """Renders at known head rotations, expressions and jaw angles, read back by MediaPipe.

    Per identity: a frontal neutral render, then ``samples`` renders with a random head rotation (half
    small, half large), a random sparse expression vector over :func:`~hravatar.avatar.drive.mapped_expressions`
    (1..``max_active`` active in [0.3, 1]; 40% of renders neutral) and, half of the time, a jaw
    rotation uniform in [0, ``jaw_max``] radians. Also the source of ``benchmarks/expression_gain.py``.

    Returns ``{"true": [N,3], "measured": [N,3]}`` (degrees, axis-angle of the change from each
    identity's frontal neutral render, OpenCV camera frame), ``expressive [N]`` bool, ``identity [N]``,
    ``found [N]``, ``coeffs [N,K]`` (the applied expression coefficients, ``names`` order), ``names``
    ``[K]``, ``jaw [N]`` (the applied jaw angle, radians about +x), ``scores [N,52]`` (MediaPipe's
    blendshape scores, ``ARKIT_NAMES`` order; zeros where no face was found)."""
    from scipy.spatial.transform import Rotation

    from hravatar.avatar import Camera, FrameParams
    from hravatar.avatar.correspondence import random_expressions
    from hravatar.avatar.drive import mapped_expressions, mediapipe_head, rotvec_to_matrix
    from hravatar.preprocess.mediapipe_models import FaceLandmarker
    from hravatar.progress import progress
    from hravatar.synth.appearance import random_identity
    from hravatar.synth.envmaps import make_lighting, train_env_name
    from hravatar.synth.render import build_gt_avatar, default_camera, shade_maps, surface_maps
    from hravatar.synth.subject import load_head

    head = load_head("open")
    col = {n: i for i, n in enumerate(head.expr_names)}
    targets = mapped_expressions()
    viewmat, K = default_camera(size)
    cam = Camera(viewmat, K, size, size)
    V = viewmat[:3, :3].double().numpy()
    _, light = make_lighting(train_env_name("neutral"), 64)
    lmk = FaceLandmarker(require_task=True)
    rng = np.random.default_rng(seed)
    true, meas, expressive, ident, found, coeffs, jaws, scores = [], [], [], [], [], [], [], []
    try:
        for idn in identities:
            shape = random_identity(head, idn)
            avatar, _ = build_gt_avatar(head, shape, seed=idn, points_per_face=8, readable=True)
            draws = random_expressions(samples, len(targets), 200 + idn, max_active)
            cs = np.concatenate([np.zeros((1, len(targets))), draws])
            R0 = None
            for i in progress(range(len(cs)), desc=f"head gain: identity {idn}"):
                if i > 0 and rng.random() < 0.4:
                    cs[i] = 0
                jaw = 0.0 if i == 0 or rng.random() < 0.5 else rng.uniform(0, jaw_max)
                big = rng.random() < 0.5
                lim = np.array([25.0, 35.0, 10.0]) if big else np.array([5.0, 5.0, 3.0])
                rot = np.zeros(3) if i == 0 else np.radians(rng.uniform(-1, 1, 3) * lim)
                e = torch.zeros(1, len(head.expr_names))
                for j, n in enumerate(targets):
                    e[0, col[n]] = float(cs[i, j])
                pose = torch.zeros(1, 5, 3)
                pose[0, 2, 0], pose[0, 0] = jaw, torch.as_tensor(rot, dtype=torch.float32)
                fp = FrameParams(shape[None], e, pose, torch.zeros(1, 3))
                with torch.no_grad():
                    img = shade_maps(surface_maps(avatar, fp, cam), cam, light)["color"][0].clamp(0, 1)
                r = lmk.detect((img.numpy() * 255 + 0.5).astype(np.uint8))
                ok = r is not None and r.matrix is not None and r.blendshapes is not None
                s = np.zeros(52)
                if ok:
                    s[: len(r.blendshapes)] = r.blendshapes
                Rm = mediapipe_head(r.matrix[None])[0][0] if ok else np.eye(3)
                if i == 0:
                    if not ok:
                        raise RuntimeError(f"identity {idn}: no face in the neutral render")
                    R0 = Rm
                Rt = V @ rotvec_to_matrix(rot) @ V.T  # the true change in the camera frame
                true.append(np.degrees(Rotation.from_matrix(Rt).as_rotvec()))
                meas.append(np.degrees(Rotation.from_matrix(Rm @ R0.T).as_rotvec()))
                expressive.append(bool(cs[i].any() or jaw > 0))
                ident.append(idn)
                found.append(ok)
                coeffs.append(cs[i].copy())
                jaws.append(jaw)
                scores.append(s)
    finally:
        lmk.close()
    return {"true": np.array(true), "measured": np.array(meas), "expressive": np.array(expressive),
            "identity": np.array(ident), "found": np.array(found), "coeffs": np.array(coeffs),
            "names": np.array(targets), "jaw": np.array(jaws), "scores": np.array(scores)}


def slopes(d: dict[str, np.ndarray], sel: np.ndarray) -> dict:
    """Per axis: slope of measured on true, the residual's std (degrees), and the count."""
    out = {"n": int(sel.sum())}
    for k, axis in enumerate(("pitch", "yaw", "roll")):
        x, y = d["true"][sel, k], d["measured"][sel, k]
        a, b = np.polyfit(x, y, 1)
        out[axis] = {"slope": float(a), "resid_std_deg": float(np.std(y - (a * x + b)))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=150, help="renders per identity (plus a neutral one)")
    ap.add_argument("--identities", default="2,3,4", help="hravatar synth seeds")
    ap.add_argument("--out", type=Path, default=bench.REPO / "benchmarks" / "results" / "head_gain.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    load0, t0 = os.getloadavg(), time.time()
    ids = tuple(int(x) for x in a.identities.split(","))
    d = probe(ids, a.samples)
    ok = d["found"]
    small = np.abs(d["true"]).max(1) < 6
    subsets = {"all": ok, "neutral face": ok & ~d["expressive"], "small (< 6 deg)": ok & small,
               "large": ok & ~small, **{f"identity {i}": ok & (d["identity"] == i) for i in ids}}
    res = {k: slopes(d, s) for k, s in subsets.items()}
    gains = [1.0 / res["all"][ax]["slope"] for ax in ("pitch", "yaw", "roll")]
    from hravatar.avatar.drive import HEAD_GAINS

    rec = {"benchmark": "head_gain", "command": " ".join(sys.argv), "machine": bench.machine(),
           "identities": list(ids), "samples_per_identity": a.samples, "found": float(ok.mean()),
           "subsets": res, "gain_fitted": gains, "gain_in_use": list(HEAD_GAINS["calibrated"]),
           "seconds": round(time.time() - t0, 1)}
    rec["machine"]["loadavg_before"], rec["machine"]["loadavg_after"] = load0, os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rec, indent=1) + "\n")
    print("| renders | n | pitch slope | yaw slope | roll slope | resid std deg (p / y / r) |")
    print("|---|---|---|---|---|---|")
    for k, r in res.items():
        sd = " / ".join(f"{r[ax]['resid_std_deg']:.2f}" for ax in ("pitch", "yaw", "roll"))
        print(f"| {k} | {r['n']} | {r['pitch']['slope']:.3f} | {r['yaw']['slope']:.3f} | {r['roll']['slope']:.3f} "
              f"| {sd} |")
    print(f"gain = 1 / slope (all): {', '.join(f'{g:.2f}' for g in gains)}; in use: {HEAD_GAINS['calibrated']}")
    print(f"{rec['seconds']} s, load average {load0} -> {os.getloadavg()}; wrote {a.out}")


if __name__ == "__main__":
    main()
