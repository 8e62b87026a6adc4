"""Photometric refinement of a landmark track: render the tracked head and compare it to the frames.

After :func:`hravatar.preprocess.tracking.track`, the per-frame pose, jaw, eyes, expressions and
translation (and the shared shape and focal length) are refined by rendering the posed head-model
mesh with the project's differentiable Gaussian rasterizer (:func:`hravatar.render.rasterize`, C++
CPU kernel or gsplat) at a low resolution and comparing it to the matted crops on the face region.

The rendered head ("mesh splats"): one flat Gaussian per triangle of the posed mesh, centred on the
triangle's centroid, its thin axis along the triangle normal, its two wide axes
``0.5 sqrt(area)`` (so neighbours overlap into an opaque surface), opacity 0.99. The centroids are
differentiable functions of every tracked parameter (through the head model's blendshapes and
skinning), so the image gradient reaches pose, jaw, expressions, shape, translation and focal length.

Appearance (optimised jointly, shared by all frames): a per-triangle linear albedo, a second-order
spherical-harmonics irradiance (9 x RGB coefficients) over the camera-frame normals (the light is
fixed to the camera, the head turns in it), a per-frame exposure gain (prior towards 1); the shaded
colour is gamma-encoded (1/2.2) and compared with the sRGB crop.

Objective per step, over a batch of frames: a robust (Charbonnier) colour difference, averaged over
the face region (the convex hull of the frame's MediaPipe landmarks, inside the matte) + the
landmark loss and all priors and temporal smoothness of tracking over *all* frames (so the track
cannot drift from the landmarks; see :func:`hravatar.preprocess.tracking.tracking_priors`).

Two phases: ``appearance_steps`` with the geometry frozen (fits albedo and light to the landmark
track; the photometric error at its end is the "before" number), then ``steps`` of joint refinement.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from hravatar.preprocess.tracking import (
    CAM_ROT,
    LandmarkHead,
    SubsetHead,
    TrackingConfig,
    TrackingResult,
    _project,
    expression_init,
    is_arkit,
    robust_landmark_loss,
    tracking_priors,
)
from hravatar.progress import log, progress


@dataclass
class PhotometricConfig:
    """Settings of :func:`refine_photometric`.

    Attributes:
        resolution: render side in pixels (the crops are area-downsampled to it).
        appearance_steps: Adam steps fitting albedo and light with the geometry frozen.
        steps: Adam steps of the joint refinement (geometry + appearance); 0 = automatic
            (:func:`auto_steps`: about ``updates_per_frame`` updates of every frame's parameters).
        batch_frames: frames rendered per step (chosen at random, without replacement per epoch).
        updates_per_frame: with ``steps = 0``, the number of steps that draw each frame (every frame's
            pose and expression move only when it is drawn).
        min_steps, max_steps: bounds of the automatic step count (the cost of a step does not depend
            on the clip's length, so long clips get fewer updates per frame).
        w_photo: weight of the photometric term (its per-pixel Charbonnier in [0,1] colour units).
        charbonnier_eps: robust scale of the colour difference.
        lr_pose: Adam learning rate of rotations (radians); translation uses ``lr_pose * 0.02``
            (metres), expressions ``lr_pose * 3``, shape ``lr_pose``, focal ``lr_pose * 0.2``; linear
            warm-up over the first steps, then cosine decay to a tenth.
        lr_albedo, lr_light: Adam learning rates of the appearance.
        w_gain: prior pulling per-frame exposure gains to 1.
        refine_geometry: False keeps the tracked geometry fixed (appearance only, for comparisons).
        threads: torch (and rasterizer) threads; 0 = 1: the renders are small, and on a shared, busy
            machine extra OpenMP threads waiting on each other made steps 10-20x slower.
        seed: batch order.
    """

    resolution: int = 160
    appearance_steps: int = 40
    steps: int = 0
    batch_frames: int = 4
    updates_per_frame: float = 15.0
    min_steps: int = 80
    max_steps: int = 1500
    w_photo: float = 500.0
    charbonnier_eps: float = 0.02
    lr_pose: float = 0.006
    lr_albedo: float = 0.03
    lr_light: float = 0.02
    w_gain: float = 10.0
    refine_geometry: bool = True
    threads: int = 0
    seed: int = 0


def auto_steps(cfg: PhotometricConfig, num_frames: int) -> int:
    """The joint refinement's step count: ``cfg.steps`` when set, else about ``cfg.updates_per_frame``
    draws of each of ``num_frames`` frames (``batch_frames`` per step), within
    ``[cfg.min_steps, cfg.max_steps]``. Measured on the shared real clip (216 frames, 810 steps against
    80; README, "Photometric refinement"): +0.36 dB held-out PSNR of the trained avatar."""
    if cfg.steps > 0:
        return int(cfg.steps)
    n = math.ceil(cfg.updates_per_frame * max(int(num_frames), 1) / max(cfg.batch_frames, 1))
    return int(min(max(n, cfg.min_steps), cfg.max_steps))


@dataclass
class PhotometricResult:
    """What :func:`refine_photometric` returns.

    Attributes:
        track: the refined :class:`TrackingResult`.
        photo_error_before: mean absolute colour error (sRGB, [0,1], face region, all frames with
            landmarks) of the appearance fitted on the landmark track.
        photo_error_after: the same after the joint refinement.
        info: loss history and settings.
    """

    track: TrackingResult
    photo_error_before: float
    photo_error_after: float
    info: dict = field(default_factory=dict)


def sh_basis(n: Tensor) -> Tensor:
    """Unnormalised second-order spherical-harmonics basis ``[...,9]`` of unit normals ``n [...,3]``."""
    x, y, z = n.unbind(-1)
    return torch.stack([torch.ones_like(x), x, y, z, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], -1)


def face_hull_masks(landmarks: np.ndarray, valid: np.ndarray, alpha: np.ndarray, size: int, res: int) -> np.ndarray:
    """Face region per frame: the convex hull of the landmarks, inside the matte.

    Args:
        landmarks: ``[N,P,2]`` pixels in the ``size`` crops.
        valid: ``[N]`` frames with landmarks (others get an empty mask).
        alpha: ``[N,res,res]`` matte at the render resolution, in [0,1].
        size: crop side; ``res``: mask side.
    Returns:
        ``[N,res,res]`` float32 in {0,1}.
    """
    import cv2

    N = len(valid)
    out = np.zeros((N, res, res), np.float32)
    s = res / size
    for i in range(N):
        if not valid[i]:
            continue
        hull = cv2.convexHull((landmarks[i] * s * 16).astype(np.int32))
        m = np.zeros((res, res), np.uint8)
        cv2.fillConvexPoly(m, hull, 1, lineType=cv2.LINE_8, shift=4)
        out[i] = m * (alpha[i] > 0.5)
    return out


class MeshSplats:
    """Renders a posed head-model mesh as flat Gaussians, one per triangle (see module docstring)."""

    def __init__(self, model: object):
        self.head = SubsetHead(model)
        self.faces = model.faces  # type: ignore[attr-defined]

    def gaussians(self, verts: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Posed vertices ``[V,3]`` (world, metres) -> ``means [F,3]``, ``quats [F,4]`` (wxyz),
        ``scales [F,3]`` (metres), ``normals [F,3]`` (unit, world)."""
        tri = verts[self.faces]  # [F,3,3]
        means = tri.mean(1)
        cr = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        area2 = cr.norm(dim=-1).clamp_min(1e-12)
        n = cr / area2[:, None]
        # rotation taking +z to n: axis z x n, half-angle quaternion (1 + n_z, -n_y, n_x, 0)
        w = (1 + n[:, 2]).clamp_min(1e-6)
        quats = torch.stack([w, -n[:, 1], n[:, 0], torch.zeros_like(w)], -1)
        flip = n[:, 2] < -0.999  # facing exactly -z: rotate by pi about x
        if bool(flip.any()):
            quats = torch.where(flip[:, None], quats.new_tensor([0.0, 1.0, 0.0, 0.0]), quats)
        s = (0.5 * area2.sqrt() / math.sqrt(2)).detach()
        scales = torch.stack([s, s, 0.1 * s], -1)
        return means, quats, scales, n


def refine_photometric(
    model: object,
    embedding: object,
    track_result: TrackingResult,
    images: np.ndarray,
    landmarks: np.ndarray,
    valid: np.ndarray,
    blendshapes: np.ndarray | None = None,
    blendshape_names: tuple[str, ...] | None = None,
    cfg: PhotometricConfig | None = None,
    track_cfg: TrackingConfig | None = None,
    show_progress: bool = True,
) -> PhotometricResult:
    """Refine a landmark track photometrically (see the module docstring).

    Args:
        model: the tracked :class:`~hravatar.head.HeadModel` (its device is used).
        embedding: its :class:`~hravatar.preprocess.embedding.LandmarkEmbedding`.
        track_result: the landmark track (:func:`hravatar.preprocess.tracking.track`).
        images: ``[N,H,H,4]`` uint8 RGBA crops (alpha = matte) or ``[N,H,H,3]`` (no matte), at the
            crop size or already downsampled (any ``H``; resized to ``cfg.resolution``).
        landmarks: ``[N,478,2]`` MediaPipe pixel positions in the crops; ``valid [N]`` bool.
        blendshapes, blendshape_names: the ARKit scores used by tracking (expression prior).
        cfg: :class:`PhotometricConfig`; ``track_cfg``: the :class:`TrackingConfig` of the track
            (its prior weights, robust scale and frame rate are reused).
    Returns:
        :class:`PhotometricResult` (CPU tensors in ``track``).
    """
    import cv2

    from hravatar.render import rasterize

    cfg = cfg or PhotometricConfig()
    cfg = dataclasses.replace(cfg, steps=auto_steps(cfg, len(images)))
    tcfg = track_cfg or TrackingConfig()
    tr = track_result
    dev = model.v_template.device  # type: ignore[attr-defined]
    dt = torch.float32
    N, S = images.shape[0], int(tr.image_size)
    R = int(cfg.resolution)
    valid = np.asarray(valid, bool)

    # ---- targets at the render resolution ------------------------------------------------------
    small = np.stack(
        [im if im.shape[0] == R else cv2.resize(im, (R, R), interpolation=cv2.INTER_AREA) for im in images]
    )
    rgb = small[..., :3].astype(np.float32) / 255.0
    alpha = small[..., 3].astype(np.float32) / 255.0 if small.shape[-1] == 4 else np.ones(rgb.shape[:3], np.float32)
    masks = face_hull_masks(landmarks, valid, alpha, S, R)
    target = torch.as_tensor(rgb, device=dev)
    mask_t = torch.as_tensor(masks, device=dev)[..., None]
    frames = np.nonzero(valid & (masks.reshape(N, -1).sum(1) > 16))[0]
    if len(frames) == 0:
        raise ValueError("no frame has a usable face region")

    # ---- parameters (from the track) -----------------------------------------------------------
    Sd = min(tcfg.num_shape, model.num_shape)  # type: ignore[attr-defined]

    def P(x: Tensor) -> torch.nn.Parameter:
        return torch.nn.Parameter(x.detach().to(dev, dt).clone())

    shape = P(tr.shape[:Sd])
    expr = P(tr.expression)
    glob_p, neck, jaw = P(tr.pose[:, 0]), P(tr.pose[:, 1]), P(tr.pose[:, 2])
    eyes = P(tr.pose[:, 3:].reshape(N, 6))
    trans = P(tr.translation)
    log_f = P(torch.log(tr.K[0, 0]))
    f0 = float(tr.info.get("focal_init_px", float(tr.K[0, 0])))
    cx, cy = float(tr.K[0, 2]), float(tr.K[1, 2])  # the landmark track's principal point
    c = torch.tensor([cx, cy], device=dev, dtype=dt)
    expr0, _, _, frozen, _ = expression_init(model, blendshapes, blendshape_names, valid)
    expr_mask = (~frozen).to(dev, dt)
    e_init = torch.as_tensor(expr0, device=dev, dtype=dt)
    arkit = is_arkit(model)
    cam_rot = torch.as_tensor(CAM_ROT, dtype=dt, device=dev)
    cam_t = tr.viewmat[:3, 3].to(dev, dt)
    viewmat = tr.viewmat.to(dev, dt)[None]
    lm_target = torch.as_tensor(np.nan_to_num(landmarks), dtype=dt, device=dev)
    w_lm = torch.as_tensor(np.asarray(embedding.weights, np.float32), device=dev)  # type: ignore[attr-defined]
    wf = torch.as_tensor(valid, dtype=dt, device=dev)[:, None] * w_lm[None]
    sigma = tcfg.robust_px * S / 512.0

    splats = MeshSplats(model)
    lm_head = LandmarkHead(model, embedding)
    F = splats.faces.shape[0]
    # appearance: linear albedo per triangle, SH irradiance, per-frame gain
    m = masks[frames].astype(bool)
    mean_col = (rgb[frames][m].mean(0) if m.any() else np.full(3, 0.5)) ** 2.2
    albedo = torch.nn.Parameter(torch.as_tensor(np.tile(mean_col, (F, 1)), dtype=dt, device=dev))
    light = torch.zeros(9, 3, dtype=dt, device=dev)
    light[0] = 1.0
    light = torch.nn.Parameter(light)
    log_gain = torch.nn.Parameter(torch.zeros(N, dtype=dt, device=dev))

    def pose_all() -> Tensor:
        return torch.stack([glob_p, neck, jaw, eyes[:, :3], eyes[:, 3:]], 1)

    def render(idx: np.ndarray) -> Tensor:
        """Rendered sRGB ``[B,R,R,3]`` of frames ``idx``."""
        ii = torch.as_tensor(idx, device=dev)
        verts = splats.head(shape, (expr * expr_mask)[ii], pose_all()[ii], trans[ii])
        K = torch.stack(
            [
                torch.stack([log_f.exp(), log_f.new_zeros(()), log_f.new_tensor(cx)]),
                torch.stack([log_f.new_zeros(()), log_f.exp(), log_f.new_tensor(cy)]),
                log_f.new_tensor([0.0, 0.0, 1.0]),
            ]
        )
        K = K * K.new_tensor([[R / S], [R / S], [1.0]])
        outs = []
        for b in range(len(idx)):
            means, quats, scales, n = splats.gaussians(verts[b])
            irr = sh_basis(n @ cam_rot.T) @ light  # [F,3]
            col = albedo.clamp(0, 1) * irr.clamp_min(0) * log_gain[ii[b]].exp()
            img, _, _ = rasterize(
                means,
                quats,
                scales,
                torch.full((F,), 0.99, dtype=dt, device=dev),
                col,
                viewmat,
                K[None],
                R,
                R,
            )
            outs.append(img[0])
        lin = torch.stack(outs).clamp(1e-4, 1.0)
        return lin ** (1 / 2.2)

    def photo_loss(idx: np.ndarray) -> Tensor:
        pred = render(idx)
        ii = torch.as_tensor(idx, device=dev)
        d = pred - target[ii]
        rho = torch.sqrt(d * d + cfg.charbonnier_eps**2) - cfg.charbonnier_eps
        mk = mask_t[ii]
        return (rho * mk).sum() / (mk.sum() * 3).clamp_min(1)

    def landmark_and_priors() -> tuple[Tensor, Tensor]:
        pts = lm_head(shape, expr * expr_mask, pose_all(), trans)
        uv, _ = _project(pts, cam_rot, cam_t, log_f.exp(), c)
        r = (uv - lm_target).norm(dim=-1)
        loss_lm = robust_landmark_loss(r, wf, sigma, S, warmup=False)
        pri = tracking_priors(tcfg, shape, expr, expr_mask, e_init, pose_all(), trans, log_f, f0, arkit)
        return loss_lm, pri

    @torch.no_grad()
    def photo_error() -> float:
        tot, cnt = 0.0, 0.0
        for k in range(0, len(frames), 8):
            idx = frames[k : k + 8]
            ii = torch.as_tensor(idx, device=dev)
            d = (render(idx) - target[ii]).abs() * mask_t[ii]
            tot += float(d.sum())
            cnt += float(mask_t[ii].sum()) * 3
        return tot / max(cnt, 1.0)

    rng = np.random.default_rng(cfg.seed)
    order: list[int] = []

    def next_batch() -> np.ndarray:
        nonlocal order
        if len(order) < cfg.batch_frames:
            order += list(rng.permutation(frames))
        b, order = order[: cfg.batch_frames], order[cfg.batch_frames :]
        return np.sort(np.array(b))

    hist: list[tuple[str, int, float, float]] = []
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or 1)
    try:
        # phase 1: appearance on the landmark track
        opt_a = torch.optim.Adam(
            [{"params": [albedo], "lr": cfg.lr_albedo}, {"params": [light], "lr": cfg.lr_light},
             {"params": [log_gain], "lr": cfg.lr_light}]
        )
        for it in progress(range(cfg.appearance_steps), desc="photometric: appearance", disable=not show_progress):
            opt_a.zero_grad(set_to_none=True)
            lp = photo_loss(next_batch())
            loss = cfg.w_photo * lp + cfg.w_gain * log_gain.pow(2).mean()
            loss.backward()
            opt_a.step()
            if it % 10 == 0:
                hist.append(("appearance", it, round(lp.item(), 5), 0.0))
        before = photo_error()
        # phase 2: joint refinement
        lr = cfg.lr_pose
        groups = [
            {"params": [albedo], "lr": cfg.lr_albedo},
            {"params": [light, log_gain], "lr": cfg.lr_light},
        ]
        if cfg.refine_geometry:
            groups += [
                {"params": [glob_p, neck, jaw, eyes], "lr": lr},
                {"params": [trans], "lr": lr * 0.02},
                {"params": [expr], "lr": lr * 3},
                {"params": [shape], "lr": lr},
            ]
            if tcfg.optimize_focal:
                groups.append({"params": [log_f], "lr": lr * 0.2})
        opt = torch.optim.Adam(groups)
        warm = max(1, min(10, cfg.steps // 4))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda i: min((i + 1) / warm, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i / max(cfg.steps, 1), 1.0)))),
        )
        for it in progress(range(cfg.steps), desc="photometric: refine", disable=not show_progress):
            opt.zero_grad(set_to_none=True)
            lp = photo_loss(next_batch())
            loss = cfg.w_photo * lp + cfg.w_gain * log_gain.pow(2).mean()
            if cfg.refine_geometry:
                loss_lm, pri = landmark_and_priors()
                loss = loss + loss_lm + pri
            else:
                loss_lm = lp.new_zeros(())
            loss.backward()
            opt.step()
            sched.step()
            if it % 10 == 0 or it == cfg.steps - 1:
                hist.append(("refine", it, round(lp.item(), 5), round(loss_lm.item(), 4)))
        after = photo_error()
    finally:
        torch.set_num_threads(threads_before)

    with torch.no_grad():
        exact = LandmarkHead(model, embedding, exact=True)
        pts = exact(shape, expr * expr_mask, pose_all(), trans)
        uv, _ = _project(pts, cam_rot, cam_t, log_f.exp(), c)
        r = (uv - lm_target).norm(dim=-1)
        good = w_lm > 0.5
        err = r[:, good].mean(-1)
        err = torch.where(torch.as_tensor(valid, device=dev), err, torch.full_like(err, float("nan")))
        f = float(log_f.exp())
        K = torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
        new = TrackingResult(
            shape=torch.nn.functional.pad(shape.detach().cpu(), (0, model.num_shape - Sd)),  # type: ignore[attr-defined]
            expression=(expr * expr_mask).detach().cpu(),
            pose=pose_all().detach().cpu(),
            translation=trans.detach().cpu(),
            viewmat=tr.viewmat.clone(),
            K=K,
            landmark_error_px=err.cpu(),
            image_size=tr.image_size,
            info=dict(tr.info) | {"focal_px": f},
        )
    info = {
        "photo_error_before": before,
        "photo_error_after": after,
        "photo_history": hist,
        "resolution": R,
        "steps": cfg.steps,
        "appearance_steps": cfg.appearance_steps,
        "refine_geometry": cfg.refine_geometry,
        "mean_landmark_error_before_px": float(np.nanmean(tr.landmark_error_px.numpy())),
        "mean_landmark_error_after_px": float(np.nanmean(err.cpu().numpy())),
    }
    new.info["photometric"] = info
    log.info(
        f"photometric refinement: colour error {before:.4f} -> {after:.4f}, landmark error "
        f"{info['mean_landmark_error_before_px']:.2f} -> {info['mean_landmark_error_after_px']:.2f} px"
    )
    return PhotometricResult(new, before, after, info)
