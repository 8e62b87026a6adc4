"""Head tracking: fit a head model to the 478 MediaPipe landmarks of every frame, batched over frames.

Unknowns: one identity (shape) and one focal length for the video; per frame the global rotation,
translation, neck, jaw and eye rotations and the expression coefficients.

Camera and world (what HRAvatar's ``tracked_params.json`` expects, see :mod:`hravatar.data.format`):
the world is the head-model frame; the camera is fixed for the whole video (``viewmat`` = OpenCV
camera on the +z side looking at the head, rotation ``diag(1,-1,-1)``, distance = the median head
distance) and the head moves through its global rotation and translation, like DECA/HRAvatar's
tracker with ``GLOBAL_POSE``. The principal point is the source video's centre mapped into the crop
(``principal_px``; the crop centre when not given): a crop window shifted or clamped at the frame
border does not move the optical axis.

Steps:

1. Per-frame rigid initialisation with OpenCV ``solvePnP`` on the embedded landmarks of the
   neutral head (focal from an assumed field of view); expressions initialised from MediaPipe's 51
   ARKit blendshape scores for models with ARKit-named expressions (matched by name); the jaw
   rotation initialised from the ``jawOpen`` score through a calibration of the model (the jaw angle
   whose mesh best matches the ``jawOpen`` expression).
2. Joint optimisation with Adam over all frames at once: a robust (Geman-McClure) landmark
   reprojection loss weighted per landmark by the embedding, temporal smoothness (first
   differences) of every per-frame parameter, priors (shape, expression towards the blendshape
   initialisation, neck and eyes towards rest, jaw mostly about its hinge axis, ARKit weights kept
   in [0,1]).

The jaw ambiguity of ARKit models: ``jawOpen``/``jawLeft``/``jawRight``/``jawForward`` displace the
jaw like the jaw joint does (see ``HeadModel.meta["jaw_expressions"]``). Tracking freezes those
expressions at zero and moves the jaw with the joint only, as the head-model docs recommend.

Only the landmark vertices are evaluated (a sub-model over the embedded triangles' vertices), so a
step over hundreds of frames takes milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from hravatar.geometry.rotations import axis_angle_to_matrix
from hravatar.head.lbs import kinematic_chain, pose_feature
from hravatar.progress import log, progress

#: OpenCV camera axes seen from the head frame: x right(-> subject's left), y down, z into the face.
CAM_ROT = np.diag([1.0, -1.0, -1.0])


@dataclass
class TrackingConfig:
    """Settings of :func:`track`.

    Attributes:
        iterations: Adam steps of the joint optimisation.
        lr: Adam learning rate (parameters are scaled to similar magnitudes).
        fov_deg: assumed horizontal field of view of the *source* video (initial focal length).
        optimize_focal: refine the focal length (weak landmark cue; prior towards ``fov_deg``).
        robust_px: Geman-McClure scale in pixels at 512 px (scaled with the image size).
        w_smooth_pose, w_smooth_expr, w_smooth_trans: temporal smoothness weights.
        w_shape, w_expr, w_expr_init, w_neck, w_eyes, w_jaw_side, w_range, w_focal: prior weights.
        num_shape: identity coefficients optimised (the rest stay zero).
        fps: frame rate of the tracked frames; smoothness weights are given for 30 fps and scaled by
            ``(fps / 30)^2`` (motion per frame shrinks with the frame rate).
        threads: torch threads while tracking (0 = 1 thread for short clips, where extra threads only
            add overhead, else torch's default).
        seed: unused by the deterministic optimiser; kept for reproducible extensions.
    """

    iterations: int = 300
    lr: float = 0.02
    fov_deg: float = 50.0
    optimize_focal: bool = True
    robust_px: float = 6.0
    w_smooth_pose: float = 2.0
    w_smooth_expr: float = 0.05
    w_smooth_trans: float = 200.0
    w_shape: float = 2e-3
    w_expr: float = 2e-3
    w_expr_init: float = 2e-2
    w_neck: float = 10.0
    w_eyes: float = 0.1
    w_jaw_side: float = 10.0
    w_range: float = 1.0
    w_focal: float = 1e-2
    num_shape: int = 100
    fps: float = 30.0
    threads: int = 0
    seed: int = 0


@dataclass
class TrackingResult:
    """Tracked parameters of a video (CPU float32 tensors).

    Attributes:
        shape: ``[S]`` identity coefficients.
        expression: ``[N,E]`` expression coefficients (jaw expressions of ARKit models are zero).
        pose: ``[N,5,3]`` axis-angle: global, neck, jaw, eye_l, eye_r (radians).
        translation: ``[N,3]`` metres, head-model/world frame.
        viewmat: ``[4,4]`` OpenCV world-to-camera (fixed over the video).
        K: ``[3,3]`` pixel intrinsics of the crops.
        landmark_error_px: ``[N]`` mean reprojection error (pixels) over well-embedded landmarks; NaN
            for frames without landmarks.
        image_size: crop side in pixels.
        info: extra numbers (loss history, calibration).
    """

    shape: Tensor
    expression: Tensor
    pose: Tensor
    translation: Tensor
    viewmat: Tensor
    K: Tensor
    landmark_error_px: Tensor
    image_size: int
    info: dict = field(default_factory=dict)


class SubsetHead:
    """Fast forward of a head model for some of its vertices (all by default), batched over frames.

    Same result as ``model.forward(...).vertices[:, vertex_ids]`` for one shared identity, using
    matrix products on flattened bases and skipping an all-zero pose-corrective basis.
    """

    def __init__(self, model: object, vertex_ids: Tensor | None = None):
        m = model
        uniq = torch.arange(m.num_vertices, device=m.v_template.device) if vertex_ids is None else vertex_ids  # type: ignore[attr-defined]
        Vs = len(uniq)
        self.v_template = m.v_template[uniq]  # type: ignore[attr-defined]
        self.shapedirs = m.shapedirs[uniq].reshape(Vs * 3, -1)  # type: ignore[attr-defined]
        self.exprdirs = m.exprdirs[uniq].reshape(Vs * 3, -1)  # type: ignore[attr-defined]
        pd = m.posedirs[uniq]  # type: ignore[attr-defined]
        self.posedirs = pd.reshape(Vs * 3, -1) if bool(pd.abs().max() > 0) else None
        self.lbs_weights = m.lbs_weights[uniq]  # type: ignore[attr-defined]
        self.j_template = m.j_regressor @ m.v_template  # type: ignore[attr-defined]
        self.j_shapedirs = torch.einsum("jv,vcs->jcs", m.j_regressor, m.shapedirs)  # type: ignore[attr-defined]
        self.parents = m.parents  # type: ignore[attr-defined]

    def forward(self, shape: Tensor, expression: Tensor, pose: Tensor, translation: Tensor) -> Tensor:
        """``shape [S']`` (shared), ``expression [N,E']``, ``pose [N,5,3]``, ``translation [N,3]`` ->
        vertices ``[N,V',3]`` (metres, world)."""
        N = expression.shape[0]
        S = shape.shape[-1]
        Vs = self.v_template.shape[0]
        joints = (self.j_template + (self.j_shapedirs[..., :S] @ shape))[None].expand(N, -1, -1)
        v = self.v_template + (self.shapedirs[:, :S] @ shape).reshape(Vs, 3)
        E = expression.shape[-1]
        rot = axis_angle_to_matrix(pose)
        off = expression @ self.exprdirs[:, :E].T  # [N,V'*3]
        if self.posedirs is not None:
            off = off + pose_feature(rot[:, 1:]) @ self.posedirs.T
        v = v[None] + off.reshape(N, Vs, 3)
        A = kinematic_chain(rot, joints, self.parents)
        # skinning per joint over the vertices it moves (most vertices follow 1-2 joints): a few
        # [V_j,3] x [3,3] products per frame instead of N*V' blended 4x4 transforms
        out = translation[:, None].expand(N, Vs, 3)
        for j, idx, w in self._joint_groups():
            vj = v[:, idx] @ A[:, j, :3, :3].transpose(-1, -2) + A[:, j, None, :3, 3]  # [N,V_j,3]
            out = out.index_add(1, idx, vj * w)
        return out

    def _joint_groups(self) -> list[tuple[int, Tensor, Tensor]]:
        """``(joint, vertex indices [V_j], weights [V_j,1])`` of every joint with non-zero weights."""
        key = (self.lbs_weights.data_ptr(), tuple(self.lbs_weights.shape))
        if getattr(self, "_groups_key", None) != key:
            W = self.lbs_weights
            self._groups = []
            for j in range(W.shape[1]):
                idx = torch.nonzero(W[:, j] != 0)[:, 0]
                if len(idx):
                    self._groups.append((j, idx, W[idx, j, None]))
            self._groups_key = key
        return self._groups

    __call__ = forward


class LandmarkHead(SubsetHead):
    """The head model evaluated at the 478 embedded landmarks only.

    Each landmark becomes a virtual vertex whose template, bases and skinning weights are the
    barycentric blend of its triangle's vertices. This equals the barycentric blend of the posed
    vertices up to a second-order term (the triangle's skinning transforms are almost equal; the
    difference is far below a pixel), at a third of the cost.

    ``forward(shape [S'], expression [N,E], pose [N,5,3], translation [N,3]) -> [N,478,3]`` world
    landmark positions, matching ``embedding.points(model.forward(...).vertices)``.
    """

    def __init__(self, model: object, embedding: object, exact: bool = False):
        dev = model.v_template.device  # type: ignore[attr-defined]
        tri = model.faces[torch.as_tensor(embedding.faces, device=dev)]  # type: ignore[attr-defined]
        uniq, inv = torch.unique(tri.reshape(-1), return_inverse=True)
        super().__init__(model, uniq)
        tl = inv.reshape(-1, 3)
        w = torch.as_tensor(embedding.bary, dtype=self.v_template.dtype, device=dev)  # type: ignore[attr-defined]
        self.exact = exact
        if exact:  # pose the triangle vertices, then blend (see forward)
            self.tri_local, self.bary = tl, w
            return
        Vs, L = len(uniq), tl.shape[0]

        def blend(x: Tensor) -> Tensor:  # [Vs,...] -> [L,...]
            return (x[tl] * w.reshape(L, 3, *([1] * (x.dim() - 1)))).sum(1)

        self.v_template = blend(self.v_template)
        self.shapedirs = blend(self.shapedirs.reshape(Vs, 3, -1)).reshape(L * 3, -1)
        self.exprdirs = blend(self.exprdirs.reshape(Vs, 3, -1)).reshape(L * 3, -1)
        if self.posedirs is not None:
            self.posedirs = blend(self.posedirs.reshape(Vs, 3, -1)).reshape(L * 3, -1)
        self.lbs_weights = blend(self.lbs_weights)

    def forward(self, shape: Tensor, expression: Tensor, pose: Tensor, translation: Tensor) -> Tensor:
        out = super().forward(shape, expression, pose, translation)
        if self.exact:
            out = (out[:, self.tri_local] * self.bary[None, :, :, None]).sum(2)
        return out

    __call__ = forward


def _project(
    points: Tensor, cam_rot: Tensor, cam_t: Tensor, focal: Tensor, c: float | Tensor
) -> tuple[Tensor, Tensor]:
    """World ``[N,P,3]`` -> pixels ``[N,P,2]``, depth ``[N,P]`` for the fixed camera; ``c`` is the
    principal point (a float for ``(c, c)`` or a ``[2]`` tensor ``(cx, cy)``, pixels)."""
    pc = points @ cam_rot.T + cam_t
    z = pc[..., 2].clamp_min(1e-4)
    return focal * pc[..., :2] / z[..., None] + c, z


def jaw_calibration(model: object, name: str = "jawOpen") -> float:
    """Jaw angle (radians about +x) whose posed mesh best matches expression ``name`` at 1.

    Returns 0.3 when the model has no such expression (e.g. FLAME: a typical wide-open jaw).
    """
    names = list(getattr(model, "expr_names", []))
    if name not in names:
        return 0.3
    with torch.no_grad():
        e = torch.zeros(1, model.num_expr, device=model.v_template.device)  # type: ignore[attr-defined]
        e[0, names.index(name)] = 1.0
        target = model.forward(expression=e).vertices[0]  # type: ignore[attr-defined]
        rest = model.forward(batch_size=1).vertices[0]  # type: ignore[attr-defined]
        moving = (target - rest).norm(dim=-1) > 1e-3
        if not moving.any():
            return 0.3
        angles = torch.linspace(0.0, 0.8, 81)
        pose = torch.zeros(len(angles), 5, 3, device=rest.device)
        pose[:, 2, 0] = angles.to(rest.device)
        best, err_best = 0.3, float("inf")
        for i in range(0, len(angles), 27):
            v = model.forward(pose=pose[i : i + 27]).vertices[:, moving]  # type: ignore[attr-defined]
            err = (v - target[moving]).norm(dim=-1).mean(-1)
            j = int(err.argmin())
            if float(err[j]) < err_best:
                err_best, best = float(err[j]), float(angles[i + j])
    return best


def _rigid_init(
    lm3d: np.ndarray, w: np.ndarray, lm2d: np.ndarray, valid: np.ndarray, K: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame OpenCV (rvec [N,3], tvec [N,3]) of the neutral landmarks ``lm3d [P,3]``; invalid frames
    are filled from their neighbours."""
    import cv2

    N = len(lm2d)
    rv = np.full((N, 3), np.nan)
    tv = np.full((N, 3), np.nan)
    use = w > 0.5
    obj = lm3d[use].astype(np.float64)
    for i in range(N):
        if not valid[i]:
            continue
        ok, r, t = cv2.solvePnP(obj, lm2d[i, use].astype(np.float64), K, None, flags=cv2.SOLVEPNP_SQPNP)
        if ok and t[2, 0] > 0:
            ok, r, t = cv2.solvePnP(
                obj, lm2d[i, use].astype(np.float64), K, None, r, t, True, flags=cv2.SOLVEPNP_ITERATIVE
            )
        if ok and t[2, 0] > 0:
            rv[i], tv[i] = r[:, 0], t[:, 0]
    good = np.isfinite(rv[:, 0])
    if not good.any():
        raise ValueError("pose initialisation failed in every frame")
    idx = np.arange(N)
    for k in range(3):
        rv[:, k] = np.interp(idx, idx[good], rv[good, k])
        tv[:, k] = np.interp(idx, idx[good], tv[good, k])
    return rv, tv


def expression_init(
    model: object,
    blendshapes: np.ndarray | None,
    blendshape_names: tuple[str, ...] | None,
    valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float, Tensor, list[str]]:
    """Initial expressions and jaw angles from ARKit blendshape scores (see :func:`track`).

    Returns ``(expr0 [N,E] float32, jaw0 [N] radians, jaw_gain radians, frozen [E] bool tensor,
    jaw_names)``: ``frozen`` marks the model's jaw expressions, kept at zero by tracking.
    """
    N = len(valid)
    E = model.num_expr  # type: ignore[attr-defined]
    names = list(getattr(model, "expr_names", []))
    jaw_names = list(model.meta.get("jaw_expressions", [])) if hasattr(model, "meta") else []  # type: ignore[attr-defined]
    jaw_gain = jaw_calibration(model)
    expr0 = np.zeros((N, E), np.float32)
    jaw0 = np.zeros(N, np.float32)
    if blendshapes is not None and blendshape_names is not None:
        bs = np.asarray(blendshapes, np.float32)
        col = {n: i for i, n in enumerate(blendshape_names)}
        for j, n in enumerate(names):
            if n in col and n not in jaw_names:
                expr0[:, j] = bs[:, col[n]]
        if "jawOpen" in col:
            jaw0 = jaw_gain * bs[:, col["jawOpen"]]
        # frames without blendshapes: neighbours
        bad = ~valid
        if bad.any() and valid.any():
            idx = np.arange(N)
            for j in range(E):
                expr0[bad, j] = np.interp(idx[bad], idx[valid], expr0[valid, j])
            jaw0[bad] = np.interp(idx[bad], idx[valid], jaw0[valid])
    frozen = torch.zeros(E, dtype=torch.bool)
    for n in jaw_names:
        if n in names:
            frozen[names.index(n)] = True
    return expr0, jaw0.astype(np.float32), jaw_gain, frozen, jaw_names


def is_arkit(model: object) -> bool:
    """True for models with ARKit-named expressions (weights kept in [0,1], blendshape prior)."""
    names = list(getattr(model, "expr_names", []))
    return bool(names) and all(n[0].islower() for n in names[:3]) and "jawOpen" in names


def robust_landmark_loss(r: Tensor, wf: Tensor, sigma: float, image_size: int, warmup: bool) -> Tensor:
    """Weighted robust landmark loss (scalar, in pixels^2 at 512 px).

    ``r [N,P]`` pixel residual norms, ``wf [N,P]`` weights (0 for frames without landmarks),
    ``sigma`` robust scale in pixels; Charbonnier during the ``warmup``, then Geman-McClure.
    """
    if warmup:
        rho = (torch.sqrt(1 + (r / sigma) ** 2) - 1) * sigma**2
    else:
        rho = r**2 * sigma**2 / (r**2 + sigma**2)
    return (wf * rho).sum() / wf.sum().clamp_min(1) / (image_size / 512.0) ** 2


def tracking_priors(
    cfg: TrackingConfig,
    shape: Tensor,
    expr: Tensor,
    expr_mask: Tensor,
    e_init: Tensor,
    pose: Tensor,
    trans: Tensor,
    log_f: Tensor,
    f0: float,
    arkit: bool,
) -> Tensor:
    """Temporal smoothness and priors of :func:`track` (scalar).

    ``shape [S]``, ``expr [N,E]`` (unmasked), ``expr_mask [E]``, ``e_init [N,E]`` blendshape
    initialisation, ``pose [N,5,3]`` (global, neck, jaw, eye_l, eye_r), ``trans [N,3]`` metres,
    ``log_f`` log focal (pixels), ``f0`` initial focal (pixels).
    """
    N = expr.shape[0]
    ks = (cfg.fps / 30.0) ** 2
    loss = shape.new_zeros(())
    if N > 1:
        loss = loss + ks * cfg.w_smooth_pose * (pose[1:] - pose[:-1]).pow(2).sum(-1).mean() * 100
        loss = loss + ks * cfg.w_smooth_trans * (trans[1:] - trans[:-1]).pow(2).sum(-1).mean() * 100
        loss = loss + ks * cfg.w_smooth_expr * (expr[1:] - expr[:-1]).pow(2).sum(-1).mean() * 100
    loss = loss + cfg.w_shape * shape.pow(2).sum() * 100
    loss = loss + cfg.w_expr * (expr * expr_mask).pow(2).sum(-1).mean() * 100
    if arkit:
        loss = loss + cfg.w_expr_init * ((expr - e_init) * expr_mask).pow(2).sum(-1).mean() * 100
        loss = loss + cfg.w_range * ((-expr).clamp_min(0) + (expr - 1).clamp_min(0)).pow(2).sum(-1).mean() * 1e4
    neck, jaw, eyes = pose[:, 1], pose[:, 2], pose[:, 3:].reshape(N, 6)
    loss = loss + cfg.w_neck * neck.pow(2).sum(-1).mean() * 100
    loss = loss + cfg.w_eyes * eyes.pow(2).sum(-1).mean() * 100
    loss = loss + cfg.w_jaw_side * (jaw[:, 1:].pow(2).sum(-1) + (-jaw[:, 0]).clamp_min(0).pow(2)).mean() * 100
    if cfg.optimize_focal:
        loss = loss + cfg.w_focal * (log_f - math.log(f0)).pow(2) * 100
    return loss


def track(
    model: object,
    embedding: object,
    landmarks: np.ndarray,
    valid: np.ndarray,
    image_size: int,
    blendshapes: np.ndarray | None = None,
    blendshape_names: tuple[str, ...] | None = None,
    focal_px: float | None = None,
    cfg: TrackingConfig | None = None,
    show_progress: bool = True,
    principal_px: tuple[float, float] | None = None,
) -> TrackingResult:
    """Fit the head model to per-frame landmarks.

    Args:
        model: :class:`~hravatar.head.HeadModel` (its device is used).
        embedding: :class:`~hravatar.preprocess.embedding.LandmarkEmbedding` of ``model``.
        landmarks: ``[N,478,2]`` pixel positions in the ``image_size`` square crops.
        valid: ``[N]`` bool, frames where landmarks were found.
        image_size: crop side in pixels.
        blendshapes: optional ``[N,51]`` ARKit scores (initialisation and prior).
        blendshape_names: names of the ``blendshapes`` columns.
        focal_px: initial focal length in crop pixels (see :func:`initial_focal`); default: ``cfg.fov_deg``
            over the crop width.
        cfg: :class:`TrackingConfig`.
        show_progress: show a progress bar.
        principal_px: ``(cx, cy)`` principal point in crop pixels (default: the crop centre); see
            :func:`crop_principal_point`.
    Returns:
        :class:`TrackingResult`.
    """
    cfg = cfg or TrackingConfig()
    dev = model.v_template.device  # type: ignore[attr-defined]
    dt = torch.float32
    N = len(landmarks)
    S = min(cfg.num_shape, model.num_shape)  # type: ignore[attr-defined]
    names = list(getattr(model, "expr_names", []))
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no frame has landmarks")
    lm = np.where(valid[:, None, None], landmarks, np.nan)
    cx, cy = (image_size / 2.0, image_size / 2.0) if principal_px is None else map(float, principal_px)
    c = torch.tensor([cx, cy], device=dev, dtype=dt)
    f0 = float(focal_px) if focal_px else image_size / (2 * math.tan(math.radians(cfg.fov_deg) / 2))
    K0 = np.array([[f0, 0, cx], [0, f0, cy], [0, 0, 1.0]])
    w_lm = np.asarray(embedding.weights, np.float32)  # type: ignore[attr-defined]

    # ---- initialisation ------------------------------------------------------------------------
    expr0, jaw0, jaw_gain, frozen, jaw_names = expression_init(model, blendshapes, blendshape_names, valid)
    expr_mask = (~frozen).to(dev, dt)

    with torch.no_grad():
        neutral = LandmarkHead(model, embedding)
        e0 = torch.as_tensor(expr0, device=dev, dtype=dt)
        p0 = torch.zeros(N, 5, 3, device=dev, dtype=dt)
        p0[:, 2, 0] = torch.as_tensor(jaw0, device=dev)
        lm3d_frames = neutral(torch.zeros(S, device=dev), e0, p0, torch.zeros(N, 3, device=dev))
        lm3d = lm3d_frames.median(0).values.cpu().numpy().astype(np.float64)
    rv, tv = _rigid_init(lm3d, w_lm, np.nan_to_num(lm), valid, K0)
    # OpenCV pose p_cam = R v + t  ->  head global rotation about the root joint + translation
    root = model.rest_joints(torch.zeros(1, model.num_shape, device=dev))[0, 0].cpu().numpy()  # type: ignore[attr-defined]
    import cv2

    D = float(np.median(tv[:, 2]))
    cam_t = np.array([0.0, 0.0, D])
    glob = np.zeros((N, 3))
    trans = np.zeros((N, 3))
    for i in range(N):
        R_pnp = cv2.Rodrigues(rv[i])[0]
        Rg = CAM_ROT.T @ R_pnp
        glob[i] = cv2.Rodrigues(Rg)[0][:, 0]
        trans[i] = CAM_ROT.T @ (tv[i] - cam_t) - root + Rg @ root

    # ---- parameters ------------------------------------------------------------------------------
    def P(x: np.ndarray | Tensor) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.as_tensor(np.asarray(x), dtype=dt, device=dev).clone())

    shape = P(np.zeros(S))
    expr = P(expr0)
    glob_p = P(glob)
    trans_p = P(trans)
    neck = P(np.zeros((N, 3)))
    jaw = P(np.stack([jaw0, np.zeros(N), np.zeros(N)], 1))
    eyes = P(np.zeros((N, 6)))
    log_f = P(np.array(math.log(f0)))
    e_init = torch.as_tensor(expr0, device=dev, dtype=dt)
    cam_rot = torch.as_tensor(CAM_ROT, dtype=dt, device=dev)
    cam_tt = torch.as_tensor(cam_t, dtype=dt, device=dev)
    target = torch.as_tensor(np.nan_to_num(lm), dtype=dt, device=dev)
    wf = torch.as_tensor(valid, dtype=dt, device=dev)[:, None] * torch.as_tensor(w_lm, device=dev)[None]
    sigma = cfg.robust_px * image_size / 512.0
    arkit = is_arkit(model)
    groups = [
        {"params": [glob_p, neck, jaw, eyes], "lr": cfg.lr},
        {"params": [trans_p], "lr": cfg.lr * 0.02},
        {"params": [expr], "lr": cfg.lr * 2},
        {"params": [shape], "lr": cfg.lr * 5},
    ]
    if cfg.optimize_focal:
        groups.append({"params": [log_f], "lr": cfg.lr * 0.5})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(i / max(cfg.iterations, 1), 1.0)))
    )
    head = neutral
    hist = []

    def pose_all() -> Tensor:
        return torch.stack([glob_p, neck, jaw, eyes[:, :3], eyes[:, 3:]], 1)

    def residual() -> Tensor:
        pts = head(shape, expr * expr_mask, pose_all(), trans_p)
        uv, _ = _project(pts, cam_rot, cam_tt, log_f.exp(), c)
        return (uv - target).norm(dim=-1)  # [N,478]

    iters = progress(range(cfg.iterations), desc="track head", disable=not show_progress)
    threads_before = torch.get_num_threads()
    threads = cfg.threads or (1 if N * head.v_template.shape[0] < 300_000 else threads_before)
    torch.set_num_threads(threads)
    try:
        for it in iters:
            opt.zero_grad(set_to_none=True)
            r = residual()
            # robust: Geman-McClure after a short least-squares-like warm-up (Charbonnier)
            loss_lm = robust_landmark_loss(r, wf, sigma, image_size, it < cfg.iterations // 4)
            loss = loss_lm + tracking_priors(
                cfg, shape, expr, expr_mask, e_init, pose_all(), trans_p, log_f, f0, arkit
            )
            loss.backward()
            opt.step()
            sched.step()
            if it % 50 == 0 or it == cfg.iterations - 1:
                hist.append((it, round(loss_lm.item(), 4)))

    finally:
        torch.set_num_threads(threads_before)

    with torch.no_grad():
        head = LandmarkHead(model, embedding, exact=True)  # report the exact error
        r = residual()
        good = torch.as_tensor(w_lm > 0.5, device=dev)
        err = r[:, good].mean(-1)
        err = torch.where(torch.as_tensor(valid, device=dev), err, torch.full_like(err, float("nan")))
        f = float(log_f.exp())
        K = torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
        vm = torch.eye(4)
        vm[:3, :3] = torch.as_tensor(CAM_ROT, dtype=torch.float32)
        vm[:3, 3] = cam_tt.cpu()
        pose = pose_all().detach().cpu().float()
    valid_err = err[torch.as_tensor(valid, device=dev)]
    log.info(
        f"tracking: mean landmark error {float(valid_err.mean()):.2f} px over {int(valid.sum())} frames, "
        f"focal {f:.0f} px, jaw gain {jaw_gain:.3f} rad"
    )
    return TrackingResult(
        shape=torch.nn.functional.pad(shape.detach().cpu(), (0, model.num_shape - S)),  # type: ignore[attr-defined]
        expression=(expr * expr_mask).detach().cpu(),
        pose=pose,
        translation=trans_p.detach().cpu(),
        viewmat=vm,
        K=K,
        landmark_error_px=err.detach().cpu(),
        image_size=int(image_size),
        info={
            "loss_history": hist,
            "jaw_gain_rad": jaw_gain,
            "focal_px": f,
            "focal_init_px": f0,
            "camera_distance_m": D,
            "frozen_expressions": [n for n in jaw_names if n in names],
        },
    )


def crop_principal_point(frame_hw: tuple[int, int], x0: float, y0: float, scale: float) -> tuple[float, float]:
    """The source video's principal point (its centre, ``(W/2, H/2)``) in the pixels of a crop whose
    top-left source pixel is ``(x0, y0)`` and that is resized by ``scale`` (output / source pixels)."""
    H, W = frame_hw
    return ((W / 2.0 - x0) * scale, (H / 2.0 - y0) * scale)


def initial_focal(fov_deg: float, source_width: int, crop_scale: float) -> float:
    """Focal length in crop pixels for a source video of horizontal field of view ``fov_deg`` and
    width ``source_width`` pixels, cropped and scaled by ``crop_scale`` (crop px per source px)."""
    return crop_scale * source_width / (2 * math.tan(math.radians(fov_deg) / 2))
