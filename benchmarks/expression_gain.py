"""MediaPipe's reading of the open head model's expressions and jaw, the source of ``drive.EXPRESSION_GAINS``.

``python benchmarks/expression_gain.py [--samples 300] [--identities 2,3,4]``: the probe of
``benchmarks/head_gain.py`` (one implementation: the readable synthetic face at random head rotations,
256 px, MediaPipe's face landmarker reads each render) with one expression at a time (``--max-active
1``) and, half of the time, an open jaw up to ``--jaw-max`` radians. For every mapped expression
(:func:`hravatar.avatar.drive.mapped_expressions`) and for the jaw it fits the round-trip slope: the
change of MediaPipe's score of the same name from the identity's neutral render, per unit coefficient
applied (the jaw: per unit ``jawOpen`` as the driver mapping applies it, ``jaw angle /
DEFAULT_JAW_RAD``).

The slope is a least-squares line through the origin over the clean renders of that expression: it
alone is active (the jaw closed; for the jaw: no expression), and MediaPipe's score is below
``SATURATED`` (clipped at 1: such renders are left out and counted). Clipping at 0 does not bias these
fits (the scores rise from the neutral one). MediaPipe's response is not linear (it is slow near 0);
the slope over the low half and the high half of the coefficient range is reported beside the pooled
one, and the slope per identity. An expression's gain (1 / slope, clamped to ``GAIN_RANGE``) is
proposed only where the slope is well determined (:func:`well_determined`: enough renders, a small
standard error, the identities agree, a slope MediaPipe can read).

It also measures the coupling of head pitch and jaw on these renders: the measured pitch regressed on
the true rotation and the applied jaw (degrees per unit ``jawOpen``), and on the true rotation and
MediaPipe's own ``jawOpen`` reading. Identities 2-4 are neither the reenactment benchmark's avatar A
(seed 0) nor its driver B (seed 1). Writes benchmarks/results/expression_gain.json and prints a table.
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
import head_gain  # noqa: E402
import reenact as bench  # noqa: E402

#: MediaPipe scores at or above this are treated as clipped (left out of the slope fit).
SATURATED = 0.98
#: The range an expression gain is clamped to.
GAIN_RANGE = (0.5, 2.5)
#: Score changes at or below this are MediaPipe's dead zone (it reads a small jaw opening as none).
FLOOR = 0.05
#: Largest applied coefficient in the fit (jaw: 1.1 x DEFAULT_JAW_RAD = 0.36 rad, a wide-open mouth;
#: beyond it MediaPipe's jawOpen flattens, see ``binned``).
FIT_MAX = 1.1


def through_origin(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares slope of ``y ~ a x`` with its standard error and count."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    if n < 2 or float(x @ x) <= 0:
        return {"slope": float("nan"), "se": float("nan"), "n": n}
    a = float(x @ y / (x @ x))
    r = y - a * x
    return {"slope": a, "se": float(np.sqrt((r @ r) / (n - 1) / (x @ x))), "n": n}


def fit_channel(x: np.ndarray, dy: np.ndarray, y: np.ndarray, identity: np.ndarray, clean: np.ndarray) -> dict:
    """Round-trip fit of one channel: ``x [N]`` applied coefficient, ``dy [N]`` MediaPipe's score change
    from the identity's neutral render, ``y [N]`` the score itself (for clipping), ``clean [N]`` the
    renders where only this channel is active (including neutral renders, ``x = 0``).

    ``slope``: through the origin over the active renders MediaPipe reads (``dy > FLOOR``: below it the
    reading is clipped at its dead zone near 0 and says nothing about the scale), unsaturated
    (``y < SATURATED``), with ``x <= FIT_MAX``; ``read``: the fraction of active renders it reads.
    Beside it: ``slope_all`` (every clean render, through the origin), ``low`` / ``high`` (``slope``
    over the lower / upper half of the active ``x``), ``per_identity`` (``slope`` per identity)."""
    act = clean & (x > 0) & (x <= FIT_MAX)
    sat = act & (y >= SATURATED)
    use = act & (y < SATURATED) & (dy > FLOOR)
    out = through_origin(x[use], dy[use])
    out["saturated"], out["active"] = int(sat.sum()), int(act.sum())
    out["read"] = float(use.sum() / max(act.sum(), 1))
    out["slope_all"] = through_origin(x[clean & (y < SATURATED)], dy[clean & (y < SATURATED)])["slope"]
    mid = float(np.median(x[use])) if use.any() else 0.0
    out["low"] = through_origin(x[use & (x <= mid)], dy[use & (x <= mid)])["slope"]
    out["high"] = through_origin(x[use & (x > mid)], dy[use & (x > mid)])["slope"]
    out["per_identity"] = {int(i): through_origin(x[use & (identity == i)], dy[use & (identity == i)])["slope"]
                           for i in np.unique(identity)}
    return out


def well_determined(f: dict, min_renders: int = 6, min_read: float = 0.5, max_rel_se: float = 0.15,
                    max_spread: float = 0.35) -> bool:
    """Whether a fit from :func:`fit_channel` determines a gain: at least ``min_renders`` renders in the
    fit, MediaPipe reads at least ``min_read`` of the active ones, a slope of at least ``1 /
    GAIN_RANGE[1]`` (a gain the clamp does not cut), a standard error within ``max_rel_se`` of the
    slope, and every identity's slope within ``max_spread`` (relative) of the pooled one."""
    a = f["slope"]
    if (not np.isfinite(a) or f["n"] < min_renders or f["read"] < min_read or a < 1.0 / GAIN_RANGE[1]
            or f["se"] > max_rel_se * a):
        return False
    per = [v for v in f["per_identity"].values() if np.isfinite(v)]
    return bool(per) and max(abs(v - a) for v in per) <= max_spread * a


def analyse(d: dict[str, np.ndarray]) -> dict:
    """Slopes per mapped expression and the jaw, proposed gains, and the pitch / jaw coupling."""
    from hravatar.avatar.drive import DEFAULT_JAW_RAD
    from hravatar.head.arkit import ARKIT_NAMES

    col = {n: i for i, n in enumerate(ARKIT_NAMES)}
    names = [str(n) for n in d["names"]]
    ok, ident, C, S = d["found"], d["identity"], d["coeffs"], d["scores"]
    neutral = np.zeros_like(S)
    for i in np.unique(ident):
        first = np.flatnonzero(ident == i)[0]  # the probe's first render per identity: frontal, neutral
        neutral[ident == i] = S[first]
    dS = S - neutral
    jaw_units = d["jaw"] / DEFAULT_JAW_RAD
    active = C > 0
    fits, gains = {}, {}
    for k, n in enumerate(names):
        only = active[:, k] & (active.sum(1) == 1)
        clean = ok & (jaw_units == 0) & (only | ~active.any(1))
        f = fit_channel(C[:, k], dS[:, col[n]], S[:, col[n]], ident, clean)
        f["well_determined"] = well_determined(f)
        fits[n] = f
        if f["well_determined"]:
            gains[n] = round(float(np.clip(1.0 / f["slope"], *GAIN_RANGE)), 2)
    clean = ok & ~active.any(1)
    f = fit_channel(jaw_units, dS[:, col["jawOpen"]], S[:, col["jawOpen"]], ident, clean)
    f["well_determined"] = well_determined(f)
    fits["jawOpen"] = f
    bins = np.linspace(0, jaw_units[clean].max() if clean.any() else 1, 6)
    f["binned"] = []
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        inb = (jaw_units > lo) & (jaw_units <= hi) & clean
        if inb.any():
            f["binned"].append({"units": [float(lo), float(hi)], "n": int(inb.sum()),
                                "mean_score_change": float(dS[inb, col["jawOpen"]].mean())})
    if f["well_determined"]:
        gains["jawOpen"] = round(float(np.clip(1.0 / f["slope"], *GAIN_RANGE)), 2)
    # pitch / jaw coupling over every render with a face (expressions vary freely)
    T, M = d["true"][ok], d["measured"][ok]
    ones = np.ones(len(T))
    X1 = np.c_[T, jaw_units[ok], ones]
    c1 = np.linalg.lstsq(X1, M[:, 0], rcond=None)[0]
    X2 = np.c_[T, dS[ok, col["jawOpen"]], ones]
    c2 = np.linalg.lstsq(X2, M[:, 0], rcond=None)[0]
    X0 = np.c_[T, ones]
    r0 = M[:, 0] - X0 @ np.linalg.lstsq(X0, M[:, 0], rcond=None)[0]
    coupling = {
        "n": int(ok.sum()),
        "pitch_deg_per_applied_jawopen": float(c1[3]),
        "pitch_deg_per_mediapipe_jawopen": float(c2[3]),
        "pitch_resid_std_deg_without_jaw": float(r0.std()),
        "pitch_resid_std_deg_with_applied_jaw": float((M[:, 0] - X1 @ c1).std()),
        "pitch_resid_corr_with_applied_jaw": float(np.corrcoef(r0, jaw_units[ok])[0, 1]),
    }
    return {"fits": fits, "gains_proposed": gains, "pitch_jaw_coupling": coupling}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=300, help="renders per identity (plus a neutral one)")
    ap.add_argument("--identities", default="2,3,4", help="hravatar synth seeds (never 0 or 1: the benchmark's A, B)")
    ap.add_argument("--max-active", type=int, default=1, help="expressions active per render (1..N)")
    ap.add_argument("--jaw-max", type=float, default=0.6, help="largest jaw angle rendered (radians)")
    ap.add_argument("--probe", type=Path, default=None, help="cache the probe's renders' readings here (.npz)")
    ap.add_argument("--out", type=Path, default=bench.REPO / "benchmarks" / "results" / "expression_gain.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    load0, t0 = os.getloadavg(), time.time()
    ids = tuple(int(x) for x in a.identities.split(","))
    if a.probe is not None and a.probe.is_file():
        d = dict(np.load(a.probe))
    else:
        d = head_gain.probe(ids, a.samples, max_active=a.max_active, jaw_max=a.jaw_max)
        d["probe_seconds"] = np.array(time.time() - t0)
        d["probe_loadavg_before"], d["probe_loadavg_after"] = np.array(load0), np.array(os.getloadavg())
        if a.probe is not None:
            np.savez(a.probe, **d)
    res = analyse(d)
    from hravatar.avatar.drive import EXPRESSION_GAINS

    rec = {"benchmark": "expression_gain", "command": " ".join(sys.argv), "machine": bench.machine(),
           "identities": list(ids), "samples_per_identity": a.samples, "max_active": a.max_active,
           "jaw_max_rad": a.jaw_max, "found": float(d["found"].mean()), "saturated_at": SATURATED,
           "gain_range": list(GAIN_RANGE), **res, "gains_in_use": EXPRESSION_GAINS["calibrated"],
           "probe": {"cached": str(a.probe) if a.probe is not None else None,
                     "seconds": round(float(d["probe_seconds"]), 1),
                     "loadavg_before": d["probe_loadavg_before"].tolist(),
                     "loadavg_after": d["probe_loadavg_after"].tolist()},
           "seconds": round(time.time() - t0, 1)}
    rec["machine"]["loadavg_before"], rec["machine"]["loadavg_after"] = load0, os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rec, indent=1) + "\n")
    print("| channel | active | read | saturated | slope | se | slope (all renders) | low / high half | per identity "
          "| gain |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, f in res["fits"].items():
        per = " / ".join(f"{v:.2f}" for v in f["per_identity"].values())
        g = res["gains_proposed"].get(n)
        gs = "-" if g is None else f"{g:.2f}"
        print(f"| {n} | {f['active']} | {f['read']:.2f} | {f['saturated']} | {f['slope']:.3f} | {f['se']:.3f} "
              f"| {f['slope_all']:.3f} | {f['low']:.2f} / {f['high']:.2f} | {per} | {gs} |")
    jb = res["fits"]["jawOpen"]["binned"]
    print("jawOpen response (applied units -> mean score change): "
          + ", ".join(f"{(b['units'][0] + b['units'][1]) / 2:.2f} -> {b['mean_score_change']:.2f}" for b in jb))
    c = res["pitch_jaw_coupling"]
    print(f"pitch vs jaw ({c['n']} renders): {c['pitch_deg_per_applied_jawopen']:+.2f} deg per unit applied jawOpen, "
          f"{c['pitch_deg_per_mediapipe_jawopen']:+.2f} deg per unit MediaPipe jawOpen; pitch residual std "
          f"{c['pitch_resid_std_deg_without_jaw']:.2f} -> {c['pitch_resid_std_deg_with_applied_jaw']:.2f} deg")
    pr = rec["probe"]
    print(f"probe: {pr['seconds']} s, load average {pr['loadavg_before']} -> {pr['loadavg_after']}; "
          f"wrote {a.out}")


if __name__ == "__main__":
    main()
