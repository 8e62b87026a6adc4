"""A calibrated correspondence from MediaPipe's ARKit scores to the open head model's expressions.

Name to name with unit gains assumes MediaPipe reads the head model's ``mouthSmileLeft`` as
``mouthSmileLeft``; it does not (it reads it mostly as dimple / stretch). This module measures what
MediaPipe sees instead and inverts it:

1. :func:`probe`: the open head model is rendered through the synthetic subject's appearance
   (``hravatar synth``'s procedural skin, eyes and light, :func:`~hravatar.synth.render.build_gt_avatar`)
   for a few identities, at neutral and with random sparse expression vectors ``c [K]`` (1-3
   expressions at 0.3-1, jaw and gaze held at zero), and MediaPipe's face landmarker scores each
   render: ``s [52]``.
2. :func:`fit_forward`: per identity, the change from its neutral render is fitted linearly,
   ``s - s_neutral ~ A c`` (ridge least squares; ``A [52,K]``).
3. :func:`inverse_rows`: each expression ``k`` is read from a few scores (its own name and the
   ``top`` scores that respond most to it): the row ``m_k >= 0`` minimising
   ``|A_S^T m_k - e_k|^2 + ridge |m_k|^2`` (non-negative least squares). Together the rows form the
   sparse matrix ``M [K,52]`` of the driver mapping: ``c = c_neutral + M (s - s_neutral)``, clamped
   to [0, 1] (:func:`hravatar.avatar.drive.map_scores`; ``web/drive.js`` applies the same rows).

The fit is deterministic (fixed seeds) and computed on first use (600 renders, under a minute on a CPU), then
cached as ``<cache>/correspondence/<model>-<hash>-v<version>.json`` (:func:`calibrated_rows`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from hravatar.head.arkit import ARKIT_NAMES
from hravatar.progress import log, progress

CORRESPONDENCE_VERSION = 1

#: Scores that never feed an expression: the jaw (it drives the jaw joint) and gaze (eye joints).
EXCLUDED_SOURCES = ("jawForward", "jawLeft", "jawOpen", "jawRight", "eyeLookDownLeft", "eyeLookDownRight",
                    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
                    "eyeLookUpRight", "tongueOut")


def random_expressions(n: int, k: int, seed: int, max_active: int = 3) -> np.ndarray:
    """``[n,k]`` random sparse expression vectors: 1..``max_active`` entries in [0.3, 1], others 0."""
    rng = np.random.default_rng(seed)
    c = np.zeros((n, k))
    for i in range(n):
        idx = rng.choice(k, size=int(rng.integers(1, max_active + 1)), replace=False)
        c[i, idx] = rng.uniform(0.3, 1.0, len(idx))
    return c


def probe(targets: list[str], identities: tuple[int, ...] = (0, 1), samples: int = 90, size: int = 256,
          seed: int = 0, readable: bool = False) -> dict[str, np.ndarray]:
    """Render the open head model with random sparse expressions and read MediaPipe's scores back.

    Args:
        targets: the expression names varied (names of the head model's expressions).
        identities: ``hravatar synth`` seeds (identity, appearance).
        samples: random expression vectors per identity (plus one neutral render each).
        size: render size (pixels).
        seed: seed of the expression draws.
        readable: render the readable face (``hravatar synth --readable-face``: visible eyes, lash
            lines, dark brows).
    Returns:
        ``{"c": [N,K], "s": [N,52], "identity": [N] int, "neutral": [N] bool, "found": [N] bool}``.
    """
    import torch

    from hravatar.avatar import Camera, FrameParams
    from hravatar.preprocess.mediapipe_models import FaceLandmarker
    from hravatar.synth.appearance import random_identity
    from hravatar.synth.envmaps import make_lighting, train_env_name
    from hravatar.synth.render import build_gt_avatar, default_camera, shade_maps, surface_maps
    from hravatar.synth.subject import load_head

    head = load_head("open")
    col = {n: i for i, n in enumerate(head.expr_names)}
    viewmat, K = default_camera(size)
    cam = Camera(viewmat, K, size, size)
    _, light = make_lighting(train_env_name("neutral"), 64)
    lmk = FaceLandmarker(require_task=True)
    C, S, ident, neut, found = [], [], [], [], []
    try:
        for idn in identities:
            shape = random_identity(head, idn)
            avatar, _ = build_gt_avatar(head, shape, seed=idn, points_per_face=8, readable=readable)
            cs = np.concatenate([np.zeros((1, len(targets))), random_expressions(samples, len(targets), seed + idn)])
            for i in progress(range(len(cs)), desc=f"correspondence: identity {idn}"):
                e = torch.zeros(1, len(head.expr_names))
                for j, n in enumerate(targets):
                    e[0, col[n]] = float(cs[i, j])
                fp = FrameParams(shape[None], e, torch.zeros(1, 5, 3), torch.zeros(1, 3))
                with torch.no_grad():
                    img = shade_maps(surface_maps(avatar, fp, cam), cam, light)["color"][0].clamp(0, 1)
                r = lmk.detect((img.numpy() * 255 + 0.5).astype(np.uint8))
                ok = r is not None and r.blendshapes is not None
                s = np.zeros(len(ARKIT_NAMES))
                if ok:
                    s[: len(r.blendshapes)] = r.blendshapes  # type: ignore[union-attr]
                C.append(cs[i])
                S.append(s)
                ident.append(idn)
                neut.append(i == 0)
                found.append(ok)
    finally:
        lmk.close()
    return {"c": np.array(C), "s": np.array(S), "identity": np.array(ident), "neutral": np.array(neut),
            "found": np.array(found)}


def fit_forward(c: np.ndarray, s: np.ndarray, identity: np.ndarray, neutral: np.ndarray,
                ridge: float = 1e-2) -> np.ndarray:
    """``A [52,K]`` of ``s - s_neutral(identity) ~ A c`` (ridge least squares over all samples).

    ``c [N,K]``, ``s [N,52]``, ``identity [N]``, ``neutral [N]`` bool (one neutral render per identity).
    """
    ds = np.array(s, np.float64)
    for idn in np.unique(identity):
        sel = identity == idn
        ds[sel] -= s[sel & neutral].mean(0)
    X = np.asarray(c, np.float64)
    G = X.T @ X + ridge * np.eye(X.shape[1])
    return np.linalg.solve(G, X.T @ ds).T


def inverse_rows(A: np.ndarray, targets: list[str], names: list[str] | tuple[str, ...] = ARKIT_NAMES,
                 top: int = 3, ridge: float = 0.02, min_response: float = 0.04) -> dict[str, list[list]]:
    """The calibrated sparse inverse of ``A [52,K]``: per target expression ``k`` a list of
    ``[score name, gain]`` terms (gains >= 0; see the module docstring), from its own score and the
    ``top`` scores responding most to it by at least ``min_response`` per unit expression (never
    :data:`EXCLUDED_SOURCES`). An expression no score responds to, or whose own score MediaPipe does
    not give (``tongueOut``), keeps name to name (gain 1)."""
    from scipy.optimize import nnls

    col = {n: i for i, n in enumerate(names)}
    allowed = [i for i, n in enumerate(names) if n not in EXCLUDED_SOURCES]
    rows: dict[str, list[list]] = {}
    for k, name in enumerate(targets):
        if name in EXCLUDED_SOURCES:  # tongueOut: MediaPipe gives no such score; keep name to name
            rows[name] = [[name, 1.0]]
            continue
        resp = sorted(allowed, key=lambda i: -A[i, k])
        support = [i for i in resp[:top] if A[i, k] >= min_response]
        if not support:
            rows[name] = [[name, 1.0]] if name in col and col[name] in allowed else []
            continue
        if name in col and col[name] in allowed and col[name] not in support:
            support.append(col[name])
        support.sort()
        e = np.zeros(A.shape[1])
        e[k] = 1.0
        lhs = np.concatenate([A[support].T, np.sqrt(ridge) * np.eye(len(support))])
        rhs = np.concatenate([e, np.zeros(len(support))])
        m, _ = nnls(lhs, rhs)
        rows[name] = [[names[i], float(g)] for i, g in zip(support, m, strict=True) if g > 1e-6]
    return rows


def calibrated_region(name: str) -> bool:
    """Whether the ``calibrated`` correspondence uses the fitted row of expression ``name``: the mouth
    (``mouth*``) except ``mouthClose``. Elsewhere it keeps name to name: the default synthetic face's
    eyes and brows are barely readable by MediaPipe (a full ``eyeBlinkLeft`` moves its score by
    0.03-0.22), so their fitted rows are mostly cross-talk (a fit on readable faces, ``probe(...,
    readable=True)``, did not transfer blinks and brows better on a real clip either: README), and
    ``mouthClose`` (ARKit: lips closed while the jaw is open) cannot be calibrated with the jaw at
    rest (its fitted row, from ``mouthRollLower`` and ``mouthPucker``, closed the lips of a talking
    driver). ``calibrated-all`` uses every fitted row."""
    return name.startswith("mouth") and name != "mouthClose"


def rows_matrix(rows: dict[str, list[list]], targets: list[str],
                names: list[str] | tuple[str, ...] = ARKIT_NAMES) -> np.ndarray:
    """``M [K,52]`` of the sparse rows (targets x scores)."""
    col = {n: i for i, n in enumerate(names)}
    M = np.zeros((len(targets), len(names)))
    for k, t in enumerate(targets):
        for src, g in rows.get(t, []):
            M[k, col[src]] += g
    return M


def _cache_path() -> Path:
    from hravatar.assets import cache_dir
    from hravatar.synth.subject import load_head

    head = load_head("open")
    h = hashlib.sha1()
    for t in (head.v_template, head.faces, head.exprdirs):
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    h.update(" ".join(head.expr_names).encode())
    return cache_dir() / "correspondence" / f"open-{h.hexdigest()[:12]}-v{CORRESPONDENCE_VERSION}.json"


def compute_calibration(targets: list[str], identities: tuple[int, ...] = (0, 1, 2), samples: int = 200) -> dict:
    """Probe, fit and invert (see the module docstring). Returns the JSON-serialisable record:
    ``version``, ``targets``, ``scores`` (names), ``A`` ``[52][K]``, ``fit`` (samples, faces found,
    R^2 of the forward fit), ``settings``."""
    d = probe(targets, identities, samples)
    ok = d["found"]
    if not ok[d["neutral"]].all():
        raise RuntimeError("correspondence: MediaPipe found no face in a neutral render")
    c, s, idn, neu = d["c"][ok], d["s"][ok], d["identity"][ok], d["neutral"][ok]
    A = fit_forward(c, s, idn, neu)
    ds = s.copy()
    for i in np.unique(idn):
        ds[idn == i] -= s[(idn == i) & neu].mean(0)
    res = ds - c @ A.T
    r2 = 1.0 - float((res ** 2).sum() / max(((ds - ds.mean(0)) ** 2).sum(), 1e-12))
    return {"version": CORRESPONDENCE_VERSION, "targets": list(targets), "scores": list(ARKIT_NAMES),
            "A": A.tolist(),
            "fit": {"samples": int(len(ok)), "faces_found": int(ok.sum()), "r2": r2},
            "settings": {"identities": list(identities), "samples_per_identity": samples, "size": 256,
                         "top": 3, "ridge_forward": 1e-2, "ridge_inverse": 0.02, "min_response": 0.04}}


def calibrated_rows(targets: list[str], recompute: bool = False) -> dict:
    """The calibration record (:func:`compute_calibration`) for ``targets`` plus ``rows``, the sparse
    inverse (:func:`inverse_rows`) of its ``A`` (every target; see :func:`calibrated_region` for the
    ones the ``calibrated`` correspondence uses). The fit is computed on first use (under a minute)
    and stored in the user cache under a version key; the inverse is recomputed from it (milliseconds)."""
    path = _cache_path()
    if path.is_file() and not recompute:
        try:
            rec = json.loads(path.read_text())
            if rec.get("version") == CORRESPONDENCE_VERSION and rec.get("targets") == list(targets):
                return dict(rec, rows=inverse_rows(np.asarray(rec["A"]), list(targets)))
        except (OSError, ValueError):
            pass
        log.warning(f"{path}: stale or unreadable correspondence; recomputing")
    log.info("fitting the calibrated MediaPipe -> head model correspondence (once; then cached)")
    rec = compute_calibration(list(targets))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)
    return dict(rec, rows=inverse_rows(np.asarray(rec["A"]), list(targets)))
