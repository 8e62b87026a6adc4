"""The overlay video a person watches to check preprocessing.

Two panels per frame, each half the crop size: left, the matted crop with MediaPipe's landmarks
(green) and the tracked model's landmarks (red); right, the crop with the tracked head mesh, shaded,
blended on top. A red frame border marks frames without detected landmarks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch


def _writer(path: Path, width: int, height: int, fps: float) -> tuple[Any, Any]:
    from fractions import Fraction

    import av

    c = av.open(str(path), mode="w", format="mp4")
    s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    s.options = {"crf": "23", "preset": "veryfast"}
    return c, s


def write_overlay_video(
    path: str | Path, frames: Iterable[np.ndarray], model: Any, track: Any, landmarks: Any, fps: float
) -> None:
    """Write the overlay mp4.

    Args:
        path: output ``.mp4``.
        frames: the crops, uint8 ``[S,S,3]`` RGB, in order.
        model: the tracked :class:`~hravatar.head.HeadModel`.
        track: mapping with ``shape``, ``expression``, ``pose``, ``translation``, ``viewmat``, ``K``
            (the tracking stage's arrays).
        landmarks: mapping with ``points [N,478,3]`` (crop pixels) and ``valid [N]``.
        fps: frame rate.
    """
    import av

    from hravatar.preprocess.embedding import landmark_embedding
    from hravatar.render.mesh import project, rasterize_mesh, shade, vertex_normals

    emb = landmark_embedding(model)
    faces = model.faces.cpu().numpy()
    vm = np.asarray(track["viewmat"], np.float64)
    K = np.asarray(track["K"], np.float64).copy()
    pts = np.asarray(landmarks["points"])[..., :2]
    valid = np.asarray(landmarks["valid"])
    N = len(valid)
    from hravatar.preprocess.tracking import SubsetHead

    dev = model.v_template.device
    head = SubsetHead(model)
    shape = torch.as_tensor(track["shape"], dtype=torch.float32, device=dev)
    chunk = 32
    container = stream = None
    try:
        for i, frame in enumerate(frames):
            if i >= N:
                break
            S = frame.shape[0]
            h = S // 2
            if container is None:
                container, stream = _writer(Path(path), 2 * h + (2 * h) % 2, h + h % 2, fps)
            if i % chunk == 0:
                with torch.no_grad():
                    sl = slice(i, min(i + chunk, N))
                    batch = head(
                        shape,
                        torch.as_tensor(track["expression"][sl], dtype=torch.float32, device=dev),
                        torch.as_tensor(track["pose"][sl], dtype=torch.float32, device=dev).reshape(-1, 5, 3),
                        torch.as_tensor(track["translation"][sl], dtype=torch.float32, device=dev),
                    )
                    batch_lm = emb.points(batch, model.faces).cpu().numpy()
                    batch = batch.cpu().numpy().astype(np.float64)
            verts = batch[i % chunk]
            mlm = batch_lm[i % chunk]
            Kh = K.copy()
            Kh[:2] *= h / S
            uv, z = project(verts, vm, Kh)
            fr = rasterize_mesh(uv, z, faces, h, h)
            img = shade(
                fr,
                vertex_normals(verts, faces) @ vm[:3, :3].T,
                faces,
                None,
                np.array([[-0.3, -0.4, -0.87]]),
                0.3,
                0.0,
            )
            small = cv2.resize(frame, (h, h), interpolation=cv2.INTER_AREA)
            m = fr.mask[..., None]
            right = np.where(m, 0.35 * small + 0.65 * (img * 255), small).astype(np.uint8)
            left = small.copy()
            muv, _ = project(mlm.astype(np.float64), vm, Kh)
            if valid[i]:
                for p in pts[i] * (h / S):
                    cv2.circle(left, (int(p[0]), int(p[1])), 1, (0, 255, 0), -1)
            for p in muv:
                cv2.circle(left, (int(p[0]), int(p[1])), 1, (255, 40, 40), -1)
            panel = np.concatenate([left, right], 1)
            if not valid[i]:
                cv2.rectangle(panel, (0, 0), (panel.shape[1] - 1, panel.shape[0] - 1), (255, 0, 0), 3)
            cv2.putText(panel, f"{i}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            pad = np.zeros((stream.height, stream.width, 3), np.uint8)
            pad[: panel.shape[0], : panel.shape[1]] = panel
            for pkt in stream.encode(av.VideoFrame.from_ndarray(pad, format="rgb24")):
                container.mux(pkt)
        if stream is not None:
            for pkt in stream.encode():
                container.mux(pkt)
    finally:
        if container is not None:
            container.close()
