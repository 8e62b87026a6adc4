"""The landmark embedding: where each of MediaPipe's 478 face landmarks lies on a head model's surface.

Computed by the project for any head model, never shipped (FLAME-derived embeddings may not be
distributed): the neutral model is rendered with :mod:`hravatar.render.mesh` from a grid of
near-frontal views with varying light, MediaPipe detects the 478 landmarks on each render, each
landmark is back-projected through the z-buffer onto the mesh, the per-view 3D points are combined
by their median and snapped to the closest surface point (triangle index + barycentric weights).

The spread of the per-view points tells how well defined each landmark is on the mesh (contour
points slide with the view; lip contours are ambiguous on an untextured mesh). It becomes a
per-landmark weight for tracking. The result is cached as
``<cache>/embeddings/<model>-<hash>-v<version>-<detector>.npz``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hravatar.errors import HRAvatarError
from hravatar.progress import log

EMBEDDING_VERSION = 1

#: MediaPipe face-mesh indices of the outer lip contour (the vermilion border). An untextured head
#: has no visible lip border, so these get a low tracking weight (see :func:`compute_embedding`).
OUTER_LIPS: tuple[int, ...] = (
    61,
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    291,
    185,
    40,
    39,
    37,
    0,
    267,
    269,
    270,
    409,
)


@dataclass
class LandmarkEmbedding:
    """478 surface points of a head model.

    Attributes:
        faces: ``[478]`` int64 triangle index into the model's ``faces``.
        bary: ``[478,3]`` float32 barycentric weights (sum to 1).
        weights: ``[478]`` float32 tracking weight in [0,1] (0 = not embedded).
        spread_m: ``[478]`` float32 median distance (metres) of the per-view points to the final one.
        key: cache key (model name, geometry hash, version, detector).
        num_views: number of renders the landmarks were detected on.
    """

    faces: np.ndarray
    bary: np.ndarray
    weights: np.ndarray
    spread_m: np.ndarray
    key: str
    num_views: int

    def vertex_ids(self, model_faces: Tensor) -> Tensor:
        """``[478,3]`` int64 vertex indices of the landmarks' triangles."""
        return model_faces[torch.as_tensor(self.faces, device=model_faces.device)]

    def points(self, vertices: Tensor, model_faces: Tensor) -> Tensor:
        """Landmark positions ``[B,478,3]`` on meshes ``vertices [B,V,3]`` with ``model_faces [F,3]``."""
        vid = self.vertex_ids(model_faces)
        w = torch.as_tensor(self.bary, dtype=vertices.dtype, device=vertices.device)
        return (vertices[:, vid] * w[None, :, :, None]).sum(2)

    def save(self, path: Path) -> None:
        from hravatar.io.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                faces=self.faces,
                bary=self.bary,
                weights=self.weights,
                spread_m=self.spread_m,
                key=np.array(self.key),
                num_views=np.array(self.num_views),
            )

    @classmethod
    def load(cls, path: Path) -> LandmarkEmbedding:
        d = np.load(path, allow_pickle=False)
        return cls(
            d["faces"].astype(np.int64),
            d["bary"].astype(np.float32),
            d["weights"].astype(np.float32),
            d["spread_m"].astype(np.float32),
            str(d["key"]),
            int(d["num_views"]),
        )


def model_key(model: object, detector: str) -> str:
    """Cache key of a head model's embedding: name, hash of template + faces, version, detector."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(model.v_template.detach().cpu().numpy(), np.float32).tobytes())  # type: ignore[attr-defined]
    h.update(np.ascontiguousarray(model.faces.detach().cpu().numpy(), np.int64).tobytes())  # type: ignore[attr-defined]
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(getattr(model, "name", "model")))
    return f"{name}-{h.hexdigest()[:12]}-v{EMBEDDING_VERSION}-{detector}"


def _closest_on_triangles(p: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate closest points of ``p [3]`` on triangles ``tris [T,3,3]``: (dist [T], bary [T,3])."""
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-18)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    bw = np.stack([1 - w1 - w2, w1, w2], 1)
    bw = np.clip(bw, 0, None)
    bw /= np.maximum(bw.sum(1, keepdims=True), 1e-12)
    q = (tris * bw[..., None]).sum(1)
    return np.linalg.norm(q - p, axis=1), bw


def snap_to_surface(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, k: int = 24) -> tuple:
    """Closest surface points of ``points [P,3]`` on a mesh: ``(face [P], bary [P,3], dist [P])``."""
    from scipy.spatial import cKDTree

    tree = cKDTree(verts)
    vf: list[list[int]] = [[] for _ in range(len(verts))]
    for fi, tri in enumerate(faces):
        for v in tri:
            vf[v].append(fi)
    out_f = np.zeros(len(points), np.int64)
    out_b = np.zeros((len(points), 3))
    out_d = np.zeros(len(points))
    for i, p in enumerate(points):
        _, nn = tree.query(p, k=min(k, len(verts)))
        cand = np.unique(np.concatenate([vf[j] for j in np.atleast_1d(nn)]).astype(np.int64))
        d, bw = _closest_on_triangles(p, verts[faces[cand]])
        j = int(np.argmin(d))
        out_f[i], out_b[i], out_d[i] = cand[j], bw[j], d[j]
    return out_f, out_b, out_d


def _backproject(
    pts2d: np.ndarray, frags: object, uv: np.ndarray, z: np.ndarray, verts: np.ndarray, faces: np.ndarray
) -> np.ndarray:
    """Surface points ``[P,3]`` (NaN where off the mesh) under pixel positions ``pts2d [P,2]``."""
    H, W = frags.face.shape  # type: ignore[attr-defined]
    out = np.full((len(pts2d), 3), np.nan)
    for i, (x, y) in enumerate(pts2d):
        px, py = int(math.floor(x)), int(math.floor(y))
        if not (0 <= px < W and 0 <= py < H):
            continue
        f = frags.face[py, px]  # type: ignore[attr-defined]
        if f < 0:
            continue
        tri = uv[faces[f]]
        a, b, c = tri
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        w0 = ((b[0] - x) * (c[1] - y) - (b[1] - y) * (c[0] - x)) / area
        w1 = ((c[0] - x) * (a[1] - y) - (c[1] - y) * (a[0] - x)) / area
        bw = np.array([w0, w1, 1 - w0 - w1])
        bw = bw / z[faces[f]]
        bw /= bw.sum()
        out[i] = (verts[faces[f]] * bw[:, None]).sum(0)
    return out


def compute_embedding(
    model: object,
    size: int = 512,
    yaws: tuple[float, ...] = (-16.0, -8.0, 0.0, 8.0, 16.0),
    pitches: tuple[float, ...] = (-8.0, 0.0, 8.0),
    use_task: bool = True,
    outer_lip_weight: float = 0.2,
    spread_scale_m: float = 0.003,
    debug_dir: Path | None = None,
) -> LandmarkEmbedding:
    """Compute the 478-landmark embedding of a head model (no caching; see :func:`landmark_embedding`).

    Args:
        model: :class:`~hravatar.head.HeadModel`.
        size: render size in pixels.
        yaws, pitches: view grid in degrees around the face (camera on the +z side).
        use_task: detect with the Tasks FaceLandmarker (else the legacy face mesh); use the same
            detector as tracking.
        outer_lip_weight: weight cap for the outer lip contour (:data:`OUTER_LIPS`).
        spread_scale_m: spread at which a landmark's weight halves.
        debug_dir: write the renders with the detected landmarks there (PNG).
    Returns:
        :class:`LandmarkEmbedding`.
    """
    from hravatar.preprocess.mediapipe_models import NUM_LANDMARKS, FaceLandmarker
    from hravatar.render.mesh import head_colors, project, rasterize_mesh, shade, vertex_normals

    with torch.no_grad():
        out = model.forward(batch_size=1)  # type: ignore[attr-defined]
    verts = out.vertices[0].detach().cpu().numpy().astype(np.float64)
    joints = out.joints[0].detach().cpu().numpy().astype(np.float64)
    faces = model.faces.detach().cpu().numpy().astype(np.int64)  # type: ignore[attr-defined]
    colors = head_colors(model)
    normals = vertex_normals(verts, faces)
    # aim at the middle of the face: between the eyes, lowered towards the mouth
    eye_mid = (joints[3] + joints[4]) / 2
    target = eye_mid + np.array([0.0, -0.035, 0.0])
    face_h = 0.20  # metres covered by ~70% of the image
    focal = 2.0 * size
    dist = focal * face_h / (0.7 * size)
    K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    lights = [np.array([[-0.4, -0.5, -0.77]]), np.array([[0.4, -0.3, -0.86]]), np.array([[0.0, 0.0, -1.0]])]

    det = FaceLandmarker(use_task=use_task)
    detector = "task" if det.blendshapes else "facemesh"
    from hravatar.geometry import look_at

    samples = []
    k = 0
    try:
        for pitch in pitches:
            for yaw in yaws:
                yr, pr = math.radians(yaw), math.radians(pitch)
                direction = np.array([math.cos(pr) * math.sin(yr), math.sin(pr), math.cos(pr) * math.cos(yr)])
                eye = target + dist * direction
                vm = look_at(torch.tensor(eye), torch.tensor(target), dtype=torch.float64).numpy()
                uv, z = project(verts, vm, K)
                frags = rasterize_mesh(uv, z, faces, size, size)
                img = shade(frags, normals @ vm[:3, :3].T, faces, colors, lights[k % len(lights)], 0.35, 0.5)
                k += 1
                u8 = (np.clip(img, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)
                res = det.detect(u8)
                if debug_dir is not None:
                    import cv2

                    dbg = u8.copy()
                    if res is not None:
                        for p in res.points:
                            cv2.circle(dbg, (int(p[0]), int(p[1])), 1, (0, 255, 0), -1)
                    Path(debug_dir).mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(Path(debug_dir) / f"embed_{k:02d}.png"), dbg[..., ::-1])
                if res is None:
                    continue
                samples.append(_backproject(res.points[:, :2].astype(np.float64), frags, uv, z, verts, faces))
    finally:
        det.close()
    if len(samples) < 3:
        raise HRAvatarError(
            f"head model {getattr(model, 'name', '?')}: MediaPipe found a face in only {len(samples)} of "
            f"{k} renders of the neutral head; cannot build the landmark embedding"
        )
    P = np.stack(samples)  # [views,478,3]
    med = np.nanmedian(P, axis=0)
    seen = np.isfinite(med[:, 0])
    spread = np.full(NUM_LANDMARKS, np.inf)
    spread[seen] = np.nanmedian(np.linalg.norm(P[:, seen] - med[None, seen], axis=-1), axis=0)
    fidx = np.zeros(NUM_LANDMARKS, np.int64)
    bary = np.tile(np.array([1 / 3, 1 / 3, 1 / 3]), (NUM_LANDMARKS, 1))
    f_s, b_s, _ = snap_to_surface(med[seen], verts, faces)
    fidx[seen], bary[seen] = f_s, b_s
    weights = np.where(seen, 1.0 / (1.0 + (spread / spread_scale_m) ** 2), 0.0)
    weights[list(OUTER_LIPS)] = np.minimum(weights[list(OUTER_LIPS)], outer_lip_weight)
    log.info(
        f"landmark embedding: {len(samples)} views, {int(seen.sum())}/478 landmarks on the mesh, "
        f"median spread {1000 * np.median(spread[seen]):.1f} mm"
    )
    return LandmarkEmbedding(
        fidx,
        bary.astype(np.float32),
        weights.astype(np.float32),
        np.where(seen, spread, -1).astype(np.float32),
        model_key(model, detector),
        len(samples),
    )


def landmark_embedding(model: object, use_task: bool = True, recompute: bool = False) -> LandmarkEmbedding:
    """The cached embedding of ``model`` (computed on first use, ~10 s; stored in the user cache).

    Args:
        model: :class:`~hravatar.head.HeadModel`.
        use_task: Tasks FaceLandmarker (True, when its asset exists) or legacy face mesh.
        recompute: ignore the cache.
    """
    from hravatar.assets import asset_path, cache_dir

    if use_task and asset_path("face_landmarker.task", required=False) is None:
        use_task = False
    key = model_key(model, "task" if use_task else "facemesh")
    path = cache_dir() / "embeddings" / f"{key}.npz"
    if path.is_file() and not recompute:
        try:
            return LandmarkEmbedding.load(path)
        except (OSError, KeyError, ValueError):
            log.warning(f"{path}: unreadable cached embedding; recomputing")
    log.info(f"computing the landmark embedding of head model {getattr(model, 'name', '?')} (then cached)")
    emb = compute_embedding(model, use_task=use_task)
    path.parent.mkdir(parents=True, exist_ok=True)
    emb.save(path)
    return emb
