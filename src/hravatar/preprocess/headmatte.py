"""Head-only matte: keep hair, face, ears and neck; remove clothes and the body below the neck.

The paper's data removes the clothes class of a face-parsing network; none can be installed here, so
the cut is derived from what preprocessing already has, per frame:

1. **Geometry.** The tracked head mesh is rasterized (its silhouette: face, ears, scalp, neck) and
   its open neck boundary (the lower rim of the neck, :func:`neck_boundary_vertices`) is projected.
   The *cut curve* ``cut(x)`` is, per image column, the lower edge of the projected neck inside the
   neck's width and a straight line fitted through the projected rim outside it (the shoulders).
2. **Seeds.** Pixels of the person matte are labelled for a GrabCut graph cut (Rother et al. 2004):
   the eroded mesh silhouette and person pixels more than ``band_m`` above the cut (hair, ears)
   are sure foreground; non-person pixels and person pixels more than
   ``band_m`` (metres, projected) below the cut are sure background; the other person pixels above
   the cut outside the mesh (the sides of the neck, a collar) are probably foreground, person pixels in
   the band just below the cut probably background (so neck skin continuing below the mesh rim is
   kept and a collar is removed, by colour).
3. **Refinement.** A graph cut with GrabCut's colour models decides the uncertain pixels (at
   ``work_size`` pixels for speed); the models are learned once over frames spread through the clip
   (:func:`clip_colour_models`), so a pixel's colour means the same in every frame. Only the
   connected foreground that touches the sure head is kept.
4. **Temporal stability.** Near the cut (within ``band_m``, where the graph cut decides) the per-frame
   head masks are averaged over ``+-temporal`` frames, each moved with the head first
   (:func:`warp_to`: the affine map between the frames' projected mesh); then the mask is
   upsampled and feathered, so the cut does not flicker; the result multiplies the person matte,
   which keeps its soft outline.

The result is ``alpha_head = alpha_person * h`` with ``h`` in [0,1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hravatar.render.mesh import project, rasterize_mesh


@dataclass
class HeadMatteConfig:
    """Settings of :func:`head_only_mattes`.

    Attributes:
        work_size: side (pixels) at which the graph cut runs (the matte's outline keeps the full
            resolution of the person matte).
        band_m: depth of the uncertain band below the neck rim, metres (projected per frame).
        erode_frac: erosion of the mesh silhouette for the sure-foreground seed, fraction of ``work_size``.
        iterations: GrabCut iterations.
        temporal: half-width (frames) of the temporal average of the head masks.
        feather_px: Gaussian feather of the cut at ``work_size`` (pixels, sigma).
        clip_models: learn one pair of colour models for the whole clip (:func:`clip_colour_models`)
            instead of one per frame (steadier cut).
    """

    work_size: int = 256
    band_m: float = 0.03
    erode_frac: float = 0.012
    iterations: int = 3
    temporal: int = 1
    feather_px: float = 1.0
    clip_models: bool = True


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Vertex sets of the open boundaries of a triangle mesh (edges used by one face only).

    Args:
        faces: ``[F,3]`` vertex indices.
    Returns:
        One int64 array of vertex ids per connected boundary component (unordered).
    """
    f = np.asarray(faces, np.int64)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    uniq, cnt = np.unique(e, axis=0, return_counts=True)
    be = uniq[cnt == 1]
    if len(be) == 0:
        return []
    verts = np.unique(be)
    idx = {int(v): i for i, v in enumerate(verts)}
    parent = list(range(len(verts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in be:
        ra, rb = find(idx[int(a)]), find(idx[int(b)])
        if ra != rb:
            parent[ra] = rb
    roots = np.array([find(i) for i in range(len(verts))])
    return [verts[roots == r] for r in np.unique(roots)]


def neck_boundary_vertices(model: object) -> np.ndarray:
    """Vertex ids ``[B]`` of the head model's neck rim: the open boundary containing the lowest vertex
    of the template (+y up)."""
    v = model.v_template.detach().cpu().numpy()  # type: ignore[attr-defined]
    loops = boundary_loops(model.faces.detach().cpu().numpy())  # type: ignore[attr-defined]
    if not loops:
        raise ValueError("the head mesh is closed; no neck boundary")
    return min(loops, key=lambda ids: float(v[ids, 1].min()))


def cut_curve(rim_uv: np.ndarray, mesh_mask: np.ndarray) -> np.ndarray:
    """Per-column y of the cut below the head: ``[W]`` float (pixels).

    Args:
        rim_uv: ``[B,2]`` projected neck-rim vertices (pixels).
        mesh_mask: ``[H,W]`` bool mesh silhouette.
    Returns:
        ``[W]``: inside the rim's x-range the lower of the fitted rim line and the mesh's lowest
        pixel in that column; outside it the rim line (extended over the shoulders).
    """
    H, W = mesh_mask.shape
    x, y = rim_uv[:, 0], rim_uv[:, 1]
    if np.ptp(x) > 1e-6:
        a, b = np.polyfit(x, y, 1)
    else:
        a, b = 0.0, float(y.mean())
    cols = np.arange(W) + 0.5
    cut = a * cols + b
    rows = np.where(mesh_mask.any(0), H - 1 - np.argmax(mesh_mask[::-1], 0), -1).astype(np.float64) + 0.5
    inside = (cols >= x.min()) & (cols <= x.max()) & (rows >= 0)
    cut[inside] = np.maximum(cut[inside], rows[inside])
    return cut


def frame_seeds(
    alpha: np.ndarray, mesh_mask: np.ndarray, cut: np.ndarray, band_px: float, erode_px: int
) -> np.ndarray:
    """GrabCut label image ``[H,W]`` uint8 (``cv2.GC_*``) of one frame at work size.

    Args:
        alpha: ``[H,W]`` person matte in [0,1].
        mesh_mask: ``[H,W]`` bool head-mesh silhouette.
        cut: ``[W]`` cut curve (:func:`cut_curve`).
        band_px: uncertain band below the cut (pixels).
        erode_px: erosion of the mesh silhouette for the sure-foreground seed.
    """
    H, W = alpha.shape
    person = alpha >= 0.5
    yy = np.arange(H)[:, None] + 0.5
    below = yy > cut[None, :]
    far_below = yy > cut[None, :] + band_px
    lab = np.full((H, W), cv2.GC_BGD, np.uint8)
    lab[person & ~below] = cv2.GC_PR_FGD
    lab[person & below & ~far_below] = cv2.GC_PR_BGD
    k = max(1, int(erode_px))
    sure = cv2.erode(mesh_mask.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
    lab[sure & person & ~below] = cv2.GC_FGD
    lab[person & (yy < cut[None, :] - band_px)] = cv2.GC_FGD  # well above the neck rim: hair, ears
    return lab


ColourModels = tuple[np.ndarray, np.ndarray]


def clip_colour_models(rgbs: list[np.ndarray], seeds: list[np.ndarray], iterations: int = 3,
                       max_frames: int = 12) -> ColourModels | None:
    """GrabCut's background and foreground colour models (``[1,65]`` float64 each) learned over up to
    ``max_frames`` evenly spaced frames at once (their images and seeds side by side), so every frame
    is then cut with the same models and the decision at the cut does not change from frame to frame
    with the colours. ``None`` when there is no foreground or no background seed."""
    if not rgbs:
        return None
    idx = np.unique(np.linspace(0, len(rgbs) - 1, min(max_frames, len(rgbs))).round().astype(int))
    img = np.ascontiguousarray(np.concatenate([rgbs[i] for i in idx], 1)[..., ::-1])
    lab = np.concatenate([seeds[i] for i in idx], 1).copy()
    if not (lab == cv2.GC_FGD).any() or not ((lab == cv2.GC_BGD) | (lab == cv2.GC_PR_BGD)).any():
        return None
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(img, lab, None, bgd, fgd, max(1, iterations), cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour model (e.g. a single colour)
        return None
    return bgd, fgd


def refine_frame(
    rgb: np.ndarray,
    seeds: np.ndarray,
    iterations: int = 3,
    person_below: np.ndarray | None = None,
    models: ColourModels | None = None,
) -> np.ndarray:
    """Graph cut of one frame from its seeds: ``rgb [H,W,3]`` uint8, ``seeds [H,W]`` -> bool head mask.

    Args:
        rgb, seeds: the frame and its :func:`frame_seeds` labels.
        iterations: GrabCut iterations when the frame learns its own colour models.
        person_below: ``[H,W]`` bool person pixels of the sure background below the cut; the mask
            grows 2 px into non-person pixels (the soft outline) but not into these.
        models: fixed colour models (:func:`clip_colour_models`); then one graph cut, no re-learning.

    Only foreground connected to the sure-foreground seed is kept. Without any foreground seed the
    result is empty; with no background seed the seeds' foreground is returned as is.
    """
    fg0 = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    if not (seeds == cv2.GC_FGD).any():
        return np.zeros(seeds.shape, bool)
    removable = seeds != cv2.GC_BGD
    if person_below is not None:
        removable = removable | person_below
    has_bg = ((seeds == cv2.GC_BGD) | (seeds == cv2.GC_PR_BGD)).any()
    fg = fg0
    undecided = ((seeds == cv2.GC_PR_FGD) | (seeds == cv2.GC_PR_BGD)).any()
    if has_bg and undecided and (iterations > 0 or models is not None):
        lab = seeds.copy()
        img = np.ascontiguousarray(rgb[..., ::-1])
        try:
            if models is not None:
                bgd, fgd = models[0].copy(), models[1].copy()
                cv2.grabCut(img, lab, None, bgd, fgd, 1, cv2.GC_EVAL_FREEZE_MODEL)
            else:
                bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
                cv2.grabCut(img, lab, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
            fg = (lab == cv2.GC_FGD) | (lab == cv2.GC_PR_FGD)
        except cv2.error:  # degenerate colour model (e.g. a single colour): keep the seeds
            fg = fg0
    n, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=4)
    if n > 2:
        ids = np.unique(comp[seeds == cv2.GC_FGD])
        fg = np.isin(comp, ids[ids > 0])
    # reach 2 px into the non-person pixels (the soft outline of hair and face) but never into the
    # person pixels that were cut away, so multiplying the person matte keeps its soft outline
    grown = cv2.dilate(fg.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return fg | (grown & ~removable)


def warp_to(mask: np.ndarray, uv_from: np.ndarray, uv_to: np.ndarray) -> np.ndarray:
    """Move a mask ``[H,W]`` float32 with the head: the least-squares 2D affine map taking the projected
    vertices ``uv_from [P,2]`` onto ``uv_to [P,2]`` (pixels), applied with bilinear sampling."""
    A = np.hstack([uv_from, np.ones((len(uv_from), 1))])
    M, *_ = np.linalg.lstsq(A, uv_to, rcond=None)  # [3,2]
    H, W = mask.shape
    return cv2.warpAffine(mask, np.ascontiguousarray(M.T, np.float64), (W, H), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _work_inputs(
    fr: np.ndarray, mesh: np.ndarray, cut: np.ndarray, band_px: float, cfg: HeadMatteConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Work-size ``(rgb [w,w,3] uint8, seeds [w,w] uint8, person_below [w,w] bool)`` of one RGBA frame."""
    S, w = fr.shape[0], mesh.shape[0]
    a = fr[..., 3].astype(np.float32) / 255.0
    rgb = np.ascontiguousarray(fr[..., :3])
    if w != S:
        a = cv2.resize(a, (w, w), interpolation=cv2.INTER_AREA)
        rgb = cv2.resize(rgb, (w, w), interpolation=cv2.INTER_AREA)
    yy = np.arange(w)[:, None] + 0.5
    seeds = frame_seeds(a, mesh, cut, band_px, round(cfg.erode_frac * w))
    return rgb, seeds, (a >= 0.5) & (yy > cut[None, :])


def head_only_mattes(
    frames: Sequence[np.ndarray],
    vertices: Callable[[int], np.ndarray],
    faces: np.ndarray,
    rim_ids: np.ndarray,
    viewmat: np.ndarray,
    K: np.ndarray,
    cfg: HeadMatteConfig | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Head-only mattes of a clip (see the module docstring).

    Args:
        frames: ``N`` RGBA uint8 ``[S,S,4]`` crops (alpha = person matte) in video order, indexable
            (a list or a memory-mapped ``[N,S,S,4]`` array; each frame is read twice).
        vertices: ``i -> [V,3]`` posed head-mesh vertices of frame ``i`` (world, metres).
        faces: ``[F,3]`` mesh triangles.
        rim_ids: ``[B]`` neck-rim vertex ids (:func:`neck_boundary_vertices`).
        viewmat: ``[4,4]`` world-to-camera (OpenCV); ``K``: ``[3,3]`` pixel intrinsics at ``S``.
        cfg: :class:`HeadMatteConfig`.
        on_frame: called with each frame index after its graph cut (progress).
    Returns:
        ``[N,S,S]`` uint8 head-only alpha (0..255). Memory: the output plus about 20 kB per frame.
    """
    cfg = cfg or HeadMatteConfig()
    vm = np.asarray(viewmat, np.float64)
    faces = np.asarray(faces, np.int64)
    n = len(frames)
    if n == 0:
        return np.zeros((0, 0, 0), np.uint8)
    S = frames[0].shape[0]
    w = min(cfg.work_size, S)
    Kw = np.asarray(K, np.float64).copy()
    Kw[:2] *= w / S
    # pass 1: geometry per frame (mesh silhouette, cut curve, band, projected vertices)
    meshes, cuts, band_px, tracks = [], [], [], []
    for i in range(n):
        uv, z = project(np.asarray(vertices(i), np.float64), vm, Kw)
        mesh = rasterize_mesh(uv, z, faces, w, w, cull_backfaces=False).mask
        meshes.append(np.packbits(mesh))
        cuts.append(cut_curve(uv[rim_ids], mesh))
        band_px.append(float(Kw[0, 0]) * cfg.band_m / max(float(np.median(z[rim_ids])), 1e-6))
        tracks.append(uv[::4].astype(np.float64))

    def inputs(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mesh = np.unpackbits(meshes[i], count=w * w).reshape(w, w).astype(bool)
        return _work_inputs(np.asarray(frames[i]), mesh, cuts[i], band_px[i], cfg)

    models = None
    if cfg.clip_models:
        sample = np.unique(np.linspace(0, n - 1, min(12, n)).round().astype(int))
        ins = [inputs(int(i)) for i in sample]
        models = clip_colour_models([x[0] for x in ins], [x[1] for x in ins], cfg.iterations)
    # pass 2: graph cut per frame
    heads = []
    for i in range(n):
        rgb, seeds, below = inputs(i)
        heads.append(np.packbits(refine_frame(rgb, seeds, cfg.iterations, below, models)))
        if on_frame is not None:
            on_frame(i)

    def head(i: int) -> np.ndarray:
        return np.unpackbits(heads[i], count=w * w).reshape(w, w).astype(np.float32)

    # pass 3: motion-compensated temporal average near the cut, feather, upsample, apply
    out = np.zeros((n, S, S), np.uint8)
    r = max(0, int(cfg.temporal))
    yy = np.arange(w)[:, None] + 0.5
    for i in range(n):
        lo, hi = max(0, i - r), min(n, i + r + 1)
        h = head(i)
        if hi - lo > 1:
            avg = np.mean([h if j == i else warp_to(head(j), tracks[j], tracks[i]) for j in range(lo, hi)], 0)
            h = np.where(np.abs(yy - cuts[i][None, :]) <= band_px[i], avg, h)
        if cfg.feather_px > 0:
            h = cv2.GaussianBlur(h, (0, 0), cfg.feather_px)
        if h.shape[0] != S:
            h = cv2.resize(h, (S, S), interpolation=cv2.INTER_LINEAR)
        # a steep ramp around 0.5 keeps the cut sharp at full resolution but continuous in time
        h = np.clip((h - 0.5) * 2.0 + 0.5, 0.0, 1.0)
        out[i] = (np.asarray(frames[i])[..., 3].astype(np.float32) * h + 0.5).astype(np.uint8)
    return out
