"""One command from a video to a subject folder: decode, detect, crop, matte, landmarks, tracking.

Stages write into ``SUBJECT/.work/`` and mark completion with ``<stage>.done`` files (written after
the stage's outputs, each output written atomically), so an interrupted run resumes where it stopped
and a re-run skips finished stages. The subject itself is written by
:func:`hravatar.data.write_subject`, atomically (a temporary folder renamed into place); the work
folder disappears with it. Bad input (unreadable or empty video, no face in most frames, tiny faces,
too few frames) raises a one-line :class:`~hravatar.errors.HRAvatarError` and removes the work
folder this run created, so nothing half-written is left behind.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hravatar.errors import HRAvatarError
from hravatar.io.atomic import atomic_path, atomic_write_text
from hravatar.progress import log, progress

STAGES = ("detect", "frames", "track", "photometric", "headmatte", "overlay")
WORK_VERSION = 2


@dataclass
class PipelineSettings:
    """Settings of :func:`preprocess_video` (the CLI's options map onto these)."""

    head_model: str = "open"
    flame_path: Path | None = None
    size: int = 512
    fps: float | None = None
    max_frames: int | None = None
    min_frames: int = 30
    min_face_px: int = 64
    min_face_fraction: float = 0.5
    matter: str = "mediapipe"
    detect_every: int = 3
    fov_deg: float = 50.0
    iterations: int = 400
    overlay: bool = True
    overwrite: bool = False
    photometric: bool = True
    keep_torso: bool = False
    extra: dict = field(default_factory=dict)


# ---- video ---------------------------------------------------------------------------------------
def probe(video: Path) -> dict[str, Any]:
    """Frame count, rate and displayed size of ``video`` (:func:`hravatar.io.video.probe_video`); a
    one-line HRAvatarError when it is missing, empty or not a readable video."""
    if not video.is_file():
        raise HRAvatarError(f"{video}: no such file; give the path of a video (mp4, mov, webm, ...)")
    if video.stat().st_size == 0:
        raise HRAvatarError(f"{video}: the file is empty (0 bytes); record or copy the video again")
    from hravatar.io.video import probe_video

    try:
        info = probe_video(video)
    except HRAvatarError as e:
        raise HRAvatarError(
            f"{video}: cannot read it as a video ({str(e).split(': ', 1)[-1]}); "
            "check the file or convert it with ffmpeg"
        ) from None
    return {
        "frames": info.num_frames,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "rotation": info.rotation,
    }


def frame_stride(src_fps: float, fps: float | None) -> int:
    """Keep every n-th frame to get about ``fps`` frames/s from a ``src_fps`` video (1 = all)."""
    return 1 if not fps or fps >= src_fps else max(1, round(src_fps / fps))


def decode(video: Path, fps: float | None = None, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(source_index, rgb uint8 [H,W,3])`` of the kept frames (upright, resampled to about
    ``fps`` by a frame stride, at most ``max_frames``), via :func:`hravatar.io.video.iter_video`."""
    from hravatar.io.video import iter_video

    stride = frame_stride(probe(video)["fps"], fps)
    for k, frame in enumerate(iter_video(video, stride=stride, max_frames=max_frames, show_progress=False)):
        yield k * stride, frame


# ---- work folder ---------------------------------------------------------------------------------
class Work:
    """The ``SUBJECT/.work`` folder: stage markers and outputs."""

    def __init__(self, root: Path, fingerprint: dict[str, Any]):
        self.root = root
        self.fingerprint = fingerprint

    def open(self) -> bool:
        """Create or reuse the folder; returns True when it was created now. Stale work (different
        input or settings) is discarded."""
        fp_path = self.root / "fingerprint.json"
        if self.root.is_dir():
            try:
                old = json.loads(fp_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old == self.fingerprint:
                return False
            log.info(f"{self.root}: earlier work used other inputs or settings; starting over")
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        atomic_write_text(fp_path, json.dumps(self.fingerprint, indent=1))
        return True

    def done(self, stage: str) -> bool:
        return (self.root / f"{stage}.done").is_file()

    def mark(self, stage: str, info: dict | None = None) -> None:
        atomic_write_text(self.root / f"{stage}.done", json.dumps(info or {}))

    def path(self, name: str) -> Path:
        return self.root / name


def _save_npz(path: Path, **arrays: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _frames(work: Work) -> np.ndarray:
    """The RGBA crops of the frames stage, ``[N,S,S,4]`` uint8 (memory-mapped, read-only)."""
    try:
        return np.load(work.path("frames.npy"), mmap_mode="r")
    except (OSError, ValueError):
        msg = f"{work.path('frames.npy')}: unreadable work file; delete {work.root.parent} and re-run"
        raise HRAvatarError(msg) from None


# ---- stages --------------------------------------------------------------------------------------
def _stage_detect(work: Work, video: Path, s: PipelineSettings, meta: dict) -> dict:
    from hravatar.preprocess.detect import detect_faces

    src_idx: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        for i, f in decode(video, s.fps, s.max_frames):
            src_idx.append(i)
            yield f

    total = meta["frames"] if not s.max_frames else min(meta["frames"] or s.max_frames, s.max_frames)
    track = detect_faces(frames(), total=total or None, every=s.detect_every)
    _save_npz(work.path("detect.npz"), source_index=np.array(src_idx, np.int64), **track.to_dict())
    info = {"num_frames": len(src_idx)}
    work.mark("detect", info)
    return info


def _validate(video: Path, d: dict, s: PipelineSettings) -> None:
    n = len(d["source_index"])
    if n == 0:
        raise HRAvatarError(f"{video}: no frames could be decoded; the video is empty or damaged")
    boxes = d["boxes"]
    sampled = np.asarray(d["sampled"], bool) if "sampled" in d else np.ones(n, bool)
    found = np.isfinite(boxes[:, 0])
    if found[sampled].mean() < s.min_face_fraction:
        raise HRAvatarError(
            f"{video}: a face was found in only {int(found.sum())} of {int(sampled.sum())} frames; "
            "film the face from the front, well lit, filling a good part of the picture"
        )
    sizes = np.maximum(boxes[found, 2] - boxes[found, 0], boxes[found, 3] - boxes[found, 1])
    med = float(np.median(sizes))
    if med < s.min_face_px:
        raise HRAvatarError(
            f"{video}: the face is too small ({med:.0f} px, need at least {s.min_face_px} px); "
            "film closer or at a higher resolution (or lower --min-face-px)"
        )
    if n < s.min_frames:
        raise HRAvatarError(
            f"{video}: only {n} frames, training needs at least {s.min_frames}; "
            "use a longer clip (or a higher --fps / --max-frames, or lower --min-frames)"
        )


def _stage_frames(work: Work, video: Path, s: PipelineSettings, det: dict) -> None:
    from hravatar.preprocess.crop import crop_window
    from hravatar.preprocess.matting import load_matter
    from hravatar.preprocess.mediapipe_models import ARKIT_NAMES, NUM_LANDMARKS, FaceLandmarker

    hw = tuple(int(x) for x in det["frame_hw"])
    win = crop_window(det["boxes"], (hw[0], hw[1]), s.size)
    atomic_write_text(work.path("crop.json"), json.dumps(win.to_dict()))
    n = len(det["source_index"])
    matter = load_matter(s.matter)
    matter.reset()
    lmk = FaceLandmarker()
    S = int(s.size)
    tmp_frames = work.path("frames.npy.partial")
    crops = np.lib.format.open_memmap(tmp_frames, mode="w+", dtype=np.uint8, shape=(n, S, S, 4))
    pts = np.zeros((n, NUM_LANDMARKS, 3), np.float32)
    bs = np.zeros((n, len(ARKIT_NAMES)), np.float32)
    valid = np.zeros(n, bool)
    nfaces = np.zeros(n, np.int32)
    done = 0
    try:
        for k, (_, frame) in enumerate(progress(decode(video, s.fps, s.max_frames), total=n, desc="crop+matte")):
            if k >= n:
                break
            done = k + 1
            crop = win.apply(frame)
            alpha = matter.matte(crop)
            r = lmk.detect(crop)
            if r is not None:
                pts[k], valid[k], nfaces[k] = r.points, True, r.num_faces
                if r.blendshapes is not None:
                    bs[k] = r.blendshapes
            a8 = (np.clip(alpha, 0, 1) * 255 + 0.5).astype(np.uint8)
            out = crops[k]
            np.multiply(crop, (a8 > 0)[..., None], out=out[..., :3], casting="unsafe")  # black background
            out[..., 3] = a8
        crops.flush()
        del crops
        if done != n:
            raise HRAvatarError(f"{video}: {done} frames decoded on the second pass, {n} on the first; re-run")
        tmp_frames.replace(work.path("frames.npy"))
    finally:
        lmk.close()
        if hasattr(matter, "close"):
            matter.close()
    _save_npz(
        work.path("landmarks.npz"),
        points=pts,
        blendshapes=bs,
        valid=valid,
        num_faces=nfaces,
        has_blendshapes=np.array(lmk.blendshapes),
    )
    work.mark("frames", {"num_frames": n, "landmarks_found": int(valid.sum()), "crop": win.to_dict()})


def _stage_track(work: Work, s: PipelineSettings, model: Any, det: dict, fps: float) -> None:
    from hravatar.preprocess.crop import CropWindow
    from hravatar.preprocess.embedding import landmark_embedding
    from hravatar.preprocess.mediapipe_models import ARKIT_NAMES
    from hravatar.preprocess.tracking import TrackingConfig, crop_principal_point, initial_focal, track

    lm = np.load(work.path("landmarks.npz"))
    win = CropWindow(**json.loads(work.path("crop.json").read_text()))
    emb = landmark_embedding(model)
    src_w = int(det["frame_hw"][1])
    f0 = initial_focal(s.fov_deg, src_w, win.scale)
    has_bs = bool(lm["has_blendshapes"])
    res = track(
        model,
        emb,
        lm["points"][..., :2],
        lm["valid"],
        s.size,
        blendshapes=lm["blendshapes"] if has_bs else None,
        blendshape_names=ARKIT_NAMES if has_bs else None,
        focal_px=f0,
        cfg=TrackingConfig(iterations=s.iterations, fov_deg=s.fov_deg, fps=fps),
        principal_px=crop_principal_point((int(det["frame_hw"][0]), src_w), win.x0, win.y0, win.scale),
    )
    _save_track(work.path("track.npz"), res, emb.key)
    work.mark("track", {"mean_landmark_error_px": float(np.nanmean(res.landmark_error_px.numpy()))})


def _save_track(path: Path, res: Any, emb_key: str) -> None:
    _save_npz(
        path,
        shape=res.shape.numpy(),
        expression=res.expression.numpy(),
        pose=res.pose.numpy(),
        translation=res.translation.numpy(),
        viewmat=res.viewmat.numpy(),
        K=res.K.numpy(),
        landmark_error_px=res.landmark_error_px.numpy(),
        info=np.array(json.dumps(res.info)),
        embedding_key=np.array(emb_key),
    )


def _load_track(path: Path, image_size: int) -> Any:
    from hravatar.preprocess.tracking import TrackingResult

    d = np.load(path)
    keys = ("shape", "expression", "pose", "translation", "viewmat", "K", "landmark_error_px")
    t = {k: torch_tensor(d[k]) for k in keys}
    return TrackingResult(**t, image_size=image_size, info=json.loads(str(d["info"])))


def torch_tensor(x: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(np.asarray(x, np.float32))


def _track_file(work: Work) -> Path:
    """The final track: the photometric refinement's when it ran, else the landmark track's."""
    p = work.path("photometric.npz")
    return p if work.done("photometric") and p.is_file() else work.path("track.npz")


def _stage_photometric(work: Work, s: PipelineSettings, model: Any, fps: float) -> None:
    import cv2

    from hravatar.preprocess.embedding import landmark_embedding
    from hravatar.preprocess.mediapipe_models import ARKIT_NAMES
    from hravatar.preprocess.photometric import PhotometricConfig, refine_photometric
    from hravatar.preprocess.tracking import TrackingConfig

    cfg = PhotometricConfig(**s.extra.get("photometric", {}))
    R = cfg.resolution
    lm = np.load(work.path("landmarks.npz"))
    emb = landmark_embedding(model)
    tr = _load_track(work.path("track.npz"), s.size)
    small = np.stack([cv2.resize(f, (R, R), interpolation=cv2.INTER_AREA) for f in _frames(work)])
    has_bs = bool(lm["has_blendshapes"])
    res = refine_photometric(
        model,
        emb,
        tr,
        small,
        lm["points"][..., :2],
        lm["valid"],
        blendshapes=lm["blendshapes"] if has_bs else None,
        blendshape_names=ARKIT_NAMES if has_bs else None,
        cfg=cfg,
        track_cfg=TrackingConfig(iterations=s.iterations, fov_deg=s.fov_deg, fps=fps),
    )
    _save_track(work.path("photometric.npz"), res.track, emb.key)
    work.mark("photometric", res.info)


def _stage_headmatte(work: Work, s: PipelineSettings, model: Any) -> None:
    """Head-only mattes from the final track (:mod:`hravatar.preprocess.headmatte`) -> ``headmatte.npy``."""
    import torch

    from hravatar.preprocess.headmatte import HeadMatteConfig, head_only_mattes, neck_boundary_vertices

    tr = np.load(_track_file(work))
    frames = _frames(work)
    n = len(frames)
    verts: dict[int, np.ndarray] = {}

    def vertices(i: int) -> np.ndarray:  # posed mesh, computed in batches of 32 frames
        if i not in verts:
            verts.clear()
            sl = slice(i, min(n, i + 32))
            with torch.no_grad():
                out = model(
                    shape=torch_tensor(tr["shape"])[None].expand(sl.stop - sl.start, -1),
                    expression=torch_tensor(tr["expression"][sl]),
                    pose=torch_tensor(tr["pose"][sl]),
                    translation=torch_tensor(tr["translation"][sl]),
                )
            verts.update({sl.start + k: v for k, v in enumerate(out.vertices.numpy())})
        return verts[i]

    bar = progress(total=n, desc="head-only matte")
    alpha = head_only_mattes(
        frames,
        vertices,
        model.faces.numpy(),
        neck_boundary_vertices(model),
        tr["viewmat"],
        tr["K"],
        HeadMatteConfig(**s.extra.get("headmatte", {})),
        on_frame=lambda i: bar.update(1),
    )
    bar.close()
    with atomic_path(work.path("headmatte.npy")) as tmp, open(tmp, "wb") as fh:
        np.save(fh, alpha)
    kept = float(alpha.astype(np.float64).sum() / max(1.0, frames[..., 3].astype(np.float64).sum()))
    work.mark("headmatte", {"track": _track_file(work).name, "kept_fraction_of_person": round(kept, 4)})


def _headmatte_current(work: Work) -> bool:
    """The head-only matte is finished and was made from the final track."""
    if not work.done("headmatte"):
        return False
    try:
        info = json.loads(work.path("headmatte.done").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return info.get("track") == _track_file(work).name


def _stage_overlay(work: Work, s: PipelineSettings, model: Any, fps: float) -> None:
    from hravatar.preprocess.overlay import write_overlay_video

    tr = np.load(_track_file(work))
    lm = np.load(work.path("landmarks.npz"))
    out = work.path("overlay.mp4")
    with atomic_path(out) as tmp:
        write_overlay_video(tmp, (f[..., :3] for f in _frames(work)), model, tr, lm, fps)
    work.mark("overlay", {"track": _track_file(work).name})


def _overlay_current(work: Work) -> bool:
    """The overlay is finished and shows the final track."""
    if not work.done("overlay"):
        return False
    try:
        info = json.loads(work.path("overlay.done").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return info.get("track", "track.npz") == _track_file(work).name


# ---- entry point ---------------------------------------------------------------------------------
def _fingerprint(video: Path, s: PipelineSettings) -> dict[str, Any]:
    st = video.stat()
    return {
        "work_version": WORK_VERSION,
        "video": str(video.resolve()),
        "bytes": st.st_size,
        "mtime": int(st.st_mtime),
        "head_model": s.head_model,
        "size": s.size,
        "fps": s.fps,
        "max_frames": s.max_frames,
        "matter": s.matter,
        "detect_every": s.detect_every,
        "fov_deg": s.fov_deg,
        "iterations": s.iterations,
    }


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_same_input(output: Path, manifest: dict, video: Path) -> None:
    """A finished subject is only reused for the video it was made from (same size and SHA-256; for
    older manifests without them, the same file name)."""
    src = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    if not video.is_file():
        raise HRAvatarError(f"{video}: no such file; give the path of a video (mp4, mov, webm, ...)")
    if "sha256" in src:
        same = src.get("bytes") == video.stat().st_size and src["sha256"] == file_digest(video)
    else:  # written before the digest was stored: the file name is all there is to compare
        same = Path(str(src.get("video", ""))).name == video.name
    if not same:
        raise HRAvatarError(f"{output}: already holds a finished subject made from another input "
                            f"({src.get('video', 'unknown source')}); pass --overwrite to replace it with "
                            f"{video.name}, or choose another -o")


def preprocess_video(video: str | Path, output: str | Path, settings: PipelineSettings | None = None) -> Path:
    """Turn ``video`` into the subject folder ``output`` (see :mod:`hravatar.data.format`).

    Returns the subject path. Raises :class:`HRAvatarError` (one line) for bad input.
    """
    from hravatar import __version__

    s = settings or PipelineSettings()
    video, output = Path(video), Path(output)
    t0 = time.time()
    if s.size < 64 or s.size % 2:
        raise HRAvatarError(f"--size {s.size}: use an even size of at least 64 (512 is the default)")
    from hravatar.io.atomic import check_writable

    check_writable(output, "folder")
    man = output / "manifest.json"
    if man.is_file() and not s.overwrite:
        try:
            old = json.loads(man.read_bytes())
            complete = bool(old.get("complete", False))
        except (ValueError, AttributeError):
            raise HRAvatarError(f"{man}: damaged manifest (not valid JSON); pass --overwrite to redo the subject "
                                "(your other files in the folder are kept)") from None
        if complete:
            _check_same_input(output, old, video)
            log.info(f"{output}: already complete; nothing to do (pass --overwrite to redo it)")
            return output
    if output.is_dir() and not s.overwrite:
        others = [p.name for p in output.iterdir() if p.name != ".work"]
        if others:
            raise HRAvatarError(
                f"{output}: folder exists and is not an unfinished subject ({others[0]}, ...); "
                "choose another -o or pass --overwrite"
            )
    meta = probe(video)
    created_output = not output.exists()
    work = Work(output / ".work", _fingerprint(video, s))
    created_work = work.open()
    try:
        stage_t: dict[str, float] = {}
        t = time.time()
        if not work.done("detect"):
            _stage_detect(work, video, s, meta)
        det = dict(np.load(work.path("detect.npz")))
        _validate(video, det, s)
        stage_t["detect"] = time.time() - t
        fps_out = meta["fps"] / frame_stride(meta["fps"], s.fps)
        t = time.time()
        if not work.done("frames"):
            _stage_frames(work, video, s, det)
        stage_t["frames"] = time.time() - t
        lm = np.load(work.path("landmarks.npz"))
        n = len(lm["valid"])
        if lm["valid"].mean() < s.min_face_fraction:
            raise HRAvatarError(
                f"{video}: face landmarks found in only {int(lm['valid'].sum())} of {n} frames; "
                "film the face from the front and well lit"
            )
        several = int((lm["num_faces"] > 1).sum())
        if several:
            log.warning(f"{video}: several faces in {several} frames; tracking the largest")
        from hravatar.head import load_head_model

        model = load_head_model(s.head_model, flame_path=s.flame_path)
        t = time.time()
        if not work.done("track"):
            _stage_track(work, s, model, det, fps_out)
        stage_t["track"] = time.time() - t
        t = time.time()
        if s.photometric and not work.done("photometric"):
            _stage_photometric(work, s, model, fps_out)
        stage_t["photometric"] = time.time() - t
        t = time.time()
        if not s.keep_torso and not _headmatte_current(work):
            _stage_headmatte(work, s, model)
        stage_t["headmatte"] = time.time() - t
        t = time.time()
        if s.overlay and not _overlay_current(work):
            _stage_overlay(work, s, model, fps_out)
        stage_t["overlay"] = time.time() - t
        written = _write(output, work, s, video, meta, det, model, fps_out, stage_t, __version__, t0)
    except HRAvatarError:
        if created_work:
            shutil.rmtree(work.root, ignore_errors=True)
            if created_output:
                shutil.rmtree(output, ignore_errors=True)
        raise
    return written


def _with_alpha(rgba: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgba [S,S,4]`` with its alpha replaced by ``alpha [S,S]`` uint8 (colour black where 0)."""
    out = np.array(rgba)
    out[..., 3] = alpha
    out[..., :3] *= (alpha > 0)[..., None]
    return out


def _write(
    output: Path,
    work: Work,
    s: PipelineSettings,
    video: Path,
    meta: dict,
    det: dict,
    model: Any,
    fps: float,
    stage_t: dict,
    version: str,
    t0: float,
) -> Path:
    from hravatar.data import SubjectParams, crop_box_from_points, write_subject

    tr = dict(np.load(_track_file(work)))
    lm = np.load(work.path("landmarks.npz"))
    crop = json.loads(work.path("crop.json").read_text())
    n = len(lm["valid"])
    err = tr["landmark_error_px"]
    pts = lm["points"][..., :2]
    boxes = np.stack([crop_box_from_points(pts[i]) if lm["valid"][i] else np.full(3, np.nan) for i in range(n)])
    ok = np.isfinite(boxes[:, 0])
    idx = np.arange(n)
    for k in range(3):
        boxes[~ok, k] = np.interp(idx[~ok], idx[ok], boxes[ok, k])
    params = SubjectParams(
        shape=tr["shape"],
        expression=tr["expression"],
        pose=tr["pose"],
        translation=tr["translation"],
        viewmat=tr["viewmat"],
        K=tr["K"],
        image_size=(s.size, s.size),
        head_model=s.head_model,
        crop_boxes=boxes,
        expr_names=list(getattr(model, "expr_names", [])) or None,
    )
    try:
        import mediapipe

        mp_version = getattr(mediapipe, "__version__", "?")
    except ImportError:  # pragma: no cover
        mp_version = None
    import torch

    info = json.loads(str(tr["info"]))
    manifest = {
        "source": {"video": str(video), "bytes": video.stat().st_size, "sha256": file_digest(video), **meta,
                   "frames_used": [int(x) for x in det["source_index"]]},
        "versions": {
            "hravatar": version,
            "mediapipe": mp_version,
            "torch": torch.__version__,
            "head_model": getattr(model, "name", s.head_model),
            "embedding": str(tr["embedding_key"]),
        },
        "settings": {
            "size": s.size,
            "fps": fps,
            "max_frames": s.max_frames,
            "head_model": s.head_model,
            "matter": s.matter,
            "fov_deg": s.fov_deg,
            "iterations": s.iterations,
            "photometric": s.photometric,
            "matte": "person" if s.keep_torso else "head-only",
            "photometric_settings": s.extra.get("photometric") if s.photometric else None,
        },
        "crop": crop,
        "tracking": {k: v for k, v in info.items() if k != "loss_history"}
        | {
            "loss_history": info.get("loss_history"),
            "mean_landmark_error_px": float(np.nanmean(err)),
            "frames_without_landmarks": int((~lm["valid"]).sum()),
        },
        "quality": [
            {
                "frame": i,
                "landmarks": bool(lm["valid"][i]),
                "landmark_error_px": None if not np.isfinite(err[i]) else round(float(err[i]), 3),
                "faces": int(lm["num_faces"][i]),
                "face_box_found": bool(np.isfinite(det["boxes"][i, 0]))
                if ("sampled" not in det or det["sampled"][i])
                else None,
            }
            for i in range(n)
        ],
        "timings_s": {k: round(v, 2) for k, v in stage_t.items()} | {"total": round(time.time() - t0, 2)},
        "overlay": "overlay.mp4" if s.overlay else None,
    }
    rgba = _frames(work)
    if len(rgba) != n:
        raise HRAvatarError(f"{work.root}: {len(rgba)} frames on disk for {n} tracked; delete it and re-run")
    frames = (rgba[i] for i in range(n))
    if not s.keep_torso:
        head = np.load(work.path("headmatte.npy"), mmap_mode="r")
        if head.shape != rgba.shape[:3]:
            raise HRAvatarError(f"{work.root}: head matte and frames differ in size; delete it and re-run")
        frames = (_with_alpha(rgba[i], head[i]) for i in range(n))
    keep_overlay = None
    if s.overlay and work.path("overlay.mp4").is_file():
        keep_overlay = output.parent / f".{output.name}.overlay.mp4"
        shutil.copyfile(work.path("overlay.mp4"), keep_overlay)
    write_subject(output, progress(frames, total=n, desc="write subject"), params, manifest, overwrite=True)
    if keep_overlay is not None:
        keep_overlay.replace(output / "overlay.mp4")
    log.info(f"{output}: {n} frames, mean landmark error {float(np.nanmean(err)):.2f} px ({time.time() - t0:.1f} s)")
    return output
