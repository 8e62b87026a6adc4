"""The web bundle of an avatar (``hravatar export AVATAR --web DIR``) for the WebGL2 viewer.

A bundle is a folder with a small JSON header and raw little-endian binary files that the page
uploads to the GPU as they are (no parsing, no build step)::

    DIR/avatar.json     header: sizes, expression names, joints, camera, reference and sequence
                        parameters, the lights, the driver mapping
                        (:func:`hravatar.avatar.drive.live_mapping`), and where each array lies
    DIR/avatar.bin      per-point arrays (float32 / float16), already laid out as textures
    DIR/light_K.bin     light K: padded cube maps (float32 RGBA), see below
    DIR/light_K_bg.bin  light K's backdrop (HDR maps only): its equirect image, at most
                        ``BACKGROUND_MAX_HEIGHT`` rows (float16 RGB), what ``hravatar relight`` shows
    DIR/lut.bin         the split-sum BRDF table (float32 [128,128,2])
    DIR/index.html ...  the viewer itself (copied from the package), so any static server works

The identity is baked in (``X + S beta`` and ``J(beta)``), so the page only applies the expression
bases, the pose correctives and linear blend skinning. Expression and pose-corrective bases are
stored together as ``[N, 3, K4, 4]`` (``K = E + 36`` coefficients padded to a multiple of four),
by default as int8 with one scale per point and axis (``basis_scale [N, 3]``): the page's
deformation pass computes ``offset[c] = basis_scale[p, c] * sum_t dot(basis[p, c, t] / 127, coef[t])``.
Per point: 16 B centre + opacity (float32), 8 B each for rotation, scale, material (albedo,
roughness), skinning weights and extra (F0, fifth weight) (float16), 16 B basis scales and
``12 K4`` B of bases: 328 B for the open model's 52 expressions.

Lights keep the exact lookup of :mod:`hravatar.shading.cubemap`: every cube map is stored with its
one-texel seam border (:func:`~hravatar.shading.cubemap.pad_cube`) and read bilinearly by the page;
the learned light is stored before its sigmoid (applied after the lookup, as in Python), or activated
when its irradiance has a gain (issue 18).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hravatar.errors import HRAvatarError
from hravatar.progress import log, progress

#: texture width (texels) of the per-point textures and of the basis texture
POINT_TEX_WIDTH = 1024
BASIS_TEX_WIDTH = 4096
LIGHT_TEX_WIDTH = 1024
#: the environment backdrop's largest height (rows; width = 2 x height): 1024 x 512 float16 RGB, 3 MB
BACKGROUND_MAX_HEIGHT = 512
FORMAT = "hravatar-web"
VERSION = 1
#: the package folder of the static viewer (HTML + JS)
WEB_APP_DIR = Path(__file__).resolve().parents[1] / "web"


@dataclass
class WebBundle:
    """An in-memory bundle: ``header`` (JSON-safe dict) and ``files`` (name -> bytes)."""

    header: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)

    def file(self, name: str) -> bytes | None:
        """The bytes of ``name`` (``avatar.json`` included), or ``None``."""
        if name == "avatar.json":
            return json.dumps(self.header).encode()
        return self.files.get(name)

    @property
    def size_bytes(self) -> int:
        return sum(len(b) for b in self.files.values()) + len(json.dumps(self.header))


class _Packer:
    """Appends arrays to one binary blob, 16-byte aligned, and records where each lies."""

    def __init__(self, fname: str) -> None:
        self.fname, self.parts, self.size, self.index = fname, [], 0, {}

    def add(self, name: str, a: np.ndarray, **extra: Any) -> None:
        a = np.ascontiguousarray(a)
        dt = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.uint32): "u32",
              np.dtype(np.int8): "i8"}[a.dtype]
        pad = (-self.size) % 16
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        self.index[name] = {"file": self.fname, "offset": self.size, "dtype": dt, "shape": list(a.shape), **extra}
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        self.parts.append(b)
        self.size += len(b)

    def blob(self) -> bytes:
        return b"".join(self.parts)


def _as_texture(a: np.ndarray, width: int, channels: int = 4) -> tuple[np.ndarray, int]:
    """``[M, c<=4]`` rows -> ``[H, width, 4]`` texture (zero padded); returns it and ``H``."""
    m, c = a.shape
    h = max(1, math.ceil(m / width))
    out = np.zeros((h * width, channels), a.dtype)
    out[:m, :c] = a
    return out.reshape(h, width, channels), h


def _np(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


# ---- lights --------------------------------------------------------------------------------------
def light_arrays(lighting: Any) -> tuple[dict[str, Any], bytes]:
    """A :class:`~hravatar.shading.lighting.LearnableLighting` or
    :class:`~hravatar.shading.lighting.EnvironmentLighting` as the page's light: a description and
    the float32 RGBA texture of all its padded cube maps (irradiance first, then specular level 0..)."""
    from hravatar.shading.cubemap import pad_cube
    from hravatar.shading.lighting import EnvironmentLighting, LearnableLighting

    with torch.no_grad():
        if isinstance(lighting, LearnableLighting) and lighting.diffuse_gain != 1.0:
            # a gain on the irradiance only (issue 18's level gauge): the page has one activation for
            # both lights, so both go activated (sigmoid before the bilinear lookup: a negligible
            # difference for these smooth maps)
            act = lighting.activation
            irr = act(lighting.diffuse_cube()) * lighting.diffuse_gain
            spec = [act(c) for c in lighting.specular_levels()]
            rough = torch.linspace(0, 1, len(spec)).tolist()
            desc: dict[str, Any] = {"activation": "none", "exposure": 0.0, "rotation": 0.0}
        elif isinstance(lighting, LearnableLighting):
            irr, spec = lighting.diffuse_cube(), lighting.specular_levels()
            rough = torch.linspace(0, 1, len(spec)).tolist()
            desc = {"activation": "sigmoid", "exposure": 0.0, "rotation": 0.0}
        elif isinstance(lighting, EnvironmentLighting):
            irr, spec = lighting.irradiance_map, lighting.specular_levels()
            rough = [float(x) for x in lighting.level_roughness.tolist()]
            desc = {"activation": "none", "exposure": float(lighting.exposure), "rotation": float(lighting.rotation)}
        else:
            raise HRAvatarError(f"lighting of type {type(lighting).__name__} cannot be exported to the web viewer")
        cubes = [irr, *spec]
        flat, entries, off = [], [], 0
        for c in cubes:
            p = _np(pad_cube(c.float())).reshape(-1, 3)
            entries.append({"res": int(c.shape[1]), "offset": off})
            flat.append(p)
            off += p.shape[0]
    tex, h = _as_texture(np.concatenate(flat, 0).astype(np.float32), LIGHT_TEX_WIDTH)
    desc.update(irradiance=entries[0], specular=entries[1:], level_roughness=rough,
                width=LIGHT_TEX_WIDTH, height=h)
    return desc, tex.tobytes()


def background_equirect(lighting: Any, max_height: int = BACKGROUND_MAX_HEIGHT) -> Tensor | None:
    """The page's environment backdrop of an :class:`~hravatar.shading.lighting.EnvironmentLighting`:
    its equirect radiance ``[H, 2H, 3]`` (before rotation and exposure) reduced by the solid-angle
    weighted mip pyramid (:func:`~hravatar.shading.cubemap.equirect_mips`) to at most ``max_height``
    rows, rounded to float16 (clamped to its range) as stored; ``None`` when the light has no equirect
    image (a learned light, a prefiltered ``.safetensors``). Python draws the same backdrop with
    :func:`~hravatar.shading.envmap_tools.background_image`."""
    from hravatar.shading.cubemap import equirect_mips

    eq = getattr(lighting, "equirect", None)
    if eq is None:
        return None
    with torch.no_grad():
        eq = eq.detach().float().cpu()
        level = next((m for m in equirect_mips(eq, 1) if m.shape[0] <= max_height), None)
        level = eq if level is None or eq.shape[0] <= max_height else level
        return level.clamp(0, 65000).half().float()


def background_arrays(lighting: Any) -> tuple[dict[str, Any], bytes] | None:
    """:func:`background_equirect` as the page's texture: ``({"width", "height", "dtype": "f16"}, bytes)``
    (row-major float16 RGB, top row first) or ``None``."""
    eq = background_equirect(lighting)
    if eq is None:
        return None
    a = np.ascontiguousarray(eq.numpy().astype("<f2"))
    return {"width": int(a.shape[1]), "height": int(a.shape[0]), "dtype": "f16"}, a.tobytes()


# ---- the driver mapping ---------------------------------------------------------------------------
def driver_table(la: Any) -> dict[str, Any]:
    """The webcam mode's driver table: :func:`hravatar.avatar.drive.live_mapping` of the avatar's
    :func:`~hravatar.avatar.drive.avatar_base` (the same mapping and avatar values ``hravatar reenact`` uses)."""
    from hravatar.avatar.drive import avatar_base, live_mapping

    return live_mapping(avatar_base(la))


# ---- the bundle -----------------------------------------------------------------------------------
def _joints(av: Any, shape: Tensor) -> Tensor:
    S = av.joint_shapedirs.shape[-1]
    beta = torch.nn.functional.pad(shape[0], (0, max(0, S - shape.shape[-1])))[:S]
    return av.joint_template + torch.einsum("jcs,s->jc", av.joint_shapedirs, beta)


@torch.no_grad()
def build_bundle(la: Any, envmaps: list[Any] | None = None, sequence: bool = True, max_frames: int = 0,
                 basis_dtype: str = "i8") -> WebBundle:
    """Build the web bundle of a loaded avatar (:func:`hravatar.apps.common.load_avatar`).

    Args:
        envmaps: extra lights ``[(name, EnvironmentLighting), ...]`` (prefiltered, auto-exposed).
        sequence: include the subject's per-frame parameters (for playback) when its folder exists.
        max_frames: at most this many frames of the sequence (0: all).
        basis_dtype: the expression/pose bases as ``"i8"`` (default: int8 with one float32 scale per
            point and axis, 4x smaller than float32), ``"f16"`` or ``"f32"``.
    """
    from hravatar.apps.common import frame_indices
    from hravatar.gaussians.deform import normalized_weights
    from hravatar.shading.brdf_lut import default_lut

    av = la.gaussians
    if av.rig != "blendshape":
        raise HRAvatarError(f"{la.path}: only blendshape-rigged avatars can be exported for the web viewer "
                            f"(this one is {av.rig!r})")
    ref = la.reference
    p = av.params
    N = av.num_points
    shape = ref.shape.to(p["means"])
    S = p["shapedirs"].shape[-1]
    beta = torch.nn.functional.pad(shape[0], (0, max(0, S - shape.shape[-1])))[:S]
    means = p["means"] + torch.einsum("ncs,s->nc", p["shapedirs"], beta)
    quats = torch.nn.functional.normalize(p["quats"], dim=-1)
    scales = p["scales"].exp()
    opac = av.opacities
    if la.mode == "pbr":
        mat = torch.cat([av.albedo, av.roughness, av.f0], -1)
    else:
        mat = torch.cat([av.colors, torch.ones(N, 2, device=means.device)], -1)
    w = normalized_weights(p["lbs_weights"])[:, :5]
    E = p["exprdirs"].shape[-1]
    P = p["posedirs"].shape[-1]
    K = E + P
    K4 = math.ceil(K / 4)
    basis = torch.cat([p["exprdirs"], p["posedirs"]], -1)  # [N,3,K]
    basis = torch.nn.functional.pad(basis, (0, 4 * K4 - K)).reshape(N * 3 * K4, 4)

    pk = _Packer("avatar.bin")
    tw = POINT_TEX_WIDTH
    tex, th = _as_texture(np.concatenate([_np(means), _np(opac)[:, None]], 1), tw)
    pk.add("means_opacity", tex)
    pk.add("quats", _as_texture(_np(quats), tw)[0].astype(np.float16))
    pk.add("scales", _as_texture(_np(scales), tw)[0].astype(np.float16))
    pk.add("material", _as_texture(_np(mat[:, :4]), tw)[0].astype(np.float16))  # albedo, roughness
    pk.add("weights", _as_texture(_np(w[:, :4]), tw)[0].astype(np.float16))
    b = basis.reshape(N, 3, 4 * K4)
    if basis_dtype == "i8":
        # int8 per point and axis: b = s[p,c] * q/127 (the page reads q/127 from an RGBA8_SNORM texture)
        bs = b.abs().amax(-1).clamp_min(1e-30)  # [N,3]
        q = torch.round(b / bs[..., None] * 127).clamp(-127, 127).to(torch.int8)
        pk.add("basis", _as_texture(q.reshape(-1, 4).cpu().numpy(), BASIS_TEX_WIDTH)[0])
        bscale = bs
    else:
        bdt = np.float16 if basis_dtype == "f16" else np.float32
        pk.add("basis", _as_texture(_np(b.reshape(-1, 4)).astype(bdt), BASIS_TEX_WIDTH)[0])
        bscale = torch.ones(N, 3, device=b.device)
    # f0, the fifth skinning weight and the basis scales: [N, 8] as two RGBA textures
    extra = torch.cat([mat[:, 4:5], w[:, 4:5], torch.zeros(N, 2, device=b.device)], -1)
    pk.add("extra", _as_texture(_np(extra), tw)[0].astype(np.float16))
    pk.add("basis_scale", _as_texture(_np(bscale), tw)[0].astype(np.float32))
    bh = pk.index["basis"]["shape"][0]

    cam = ref.camera
    header: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "mode": la.mode,
        "num_points": N, "num_expr": E, "num_pose_features": P, "basis_texels": K4,
        "point_tex": [tw, th], "basis_tex": [BASIS_TEX_WIDTH, bh], "basis_dtype": basis_dtype,
        "expr_names": la.expr_names,
        "joints": _np(_joints(av, shape)).tolist(), "parents": [-1, 0, 1, 1, 1],
        "camera": {"viewmat": _np(cam.viewmat).tolist(), "K": _np(cam.K).tolist(),
                   "width": cam.width, "height": cam.height},
        # focal length of the training images (pixels): larger renders widen the 2D low-pass to
        # the training's footprint, as hravatar.avatar.footprint_eps2d does (null: unknown)
        "train_focal_px": la.train_focal,
        "reference": {"expression": _np(ref.params.expression[0]).tolist(),
                      "pose": _np(ref.params.pose[0]).tolist(),
                      "translation": _np(ref.params.translation[0]).tolist()},
        "head_center": _np(la.head_center()).tolist(),
        "materials": {"roughness_range": [av.config.roughness_min, av.config.roughness_max],
                      "f0_range": [av.config.f0_min, av.config.f0_max]},
        "driver": driver_table(la),
        "fps": ref.fps,
    }
    # the tracked sequence (expression from the encoder, as `hravatar render` uses it)
    seq = None
    if sequence and la.has_subject():
        ds = la.subject("all")
        idx = frame_indices(len(ds), max_frames)
        rows = []
        for i in progress(idx, desc="web bundle: sequence parameters", disable=len(idx) < 50):
            fp = la.frame_params(la.frame(ds, i))
            rows.append(np.concatenate([_np(fp.expression[0]), _np(fp.pose[0]).reshape(-1),
                                        _np(fp.translation[0])]))
        if rows:
            seq = np.stack(rows).astype(np.float32)
            pk.add("sequence", seq)
    header["sequence"] = {"frames": 0 if seq is None else int(seq.shape[0]), "layout": "expression[E], pose[15], "
                          "translation[3]"}
    files = {"avatar.bin": pk.blob()}
    header["arrays"] = pk.index
    # lights
    lights = [("learned light", la.lighting)] + list(envmaps or [])
    header["lights"] = []
    for k, (name, light) in enumerate(lights):
        desc, blob = light_arrays(light)
        fname = f"light_{k}.bin"
        files[fname] = blob
        header["lights"].append({"name": name, "file": fname, **desc})
        bg = background_arrays(light) if k > 0 else None
        if bg is not None:
            files[f"light_{k}_bg.bin"] = bg[1]
            header["lights"][-1]["background"] = {"file": f"light_{k}_bg.bin", **bg[0]}
    lut = default_lut().table.float().cpu().numpy()
    files["lut.bin"] = lut.astype("<f4").tobytes()
    header["lut"] = {"file": "lut.bin", "size": [int(lut.shape[0]), int(lut.shape[1])]}
    return WebBundle(header, files)


def app_files() -> dict[str, Path]:
    """The static viewer's files (name -> path) shipped in the package."""
    if not WEB_APP_DIR.is_dir():
        raise HRAvatarError(f"{WEB_APP_DIR}: the web viewer's files are missing from this installation; "
                            "reinstall hravatar")
    return {p.name: p for p in sorted(WEB_APP_DIR.iterdir()) if p.is_file() and p.suffix in (".html", ".js", ".css")}


def check_web_dest(dest: str | Path) -> Path:
    """Fail early (before any work) when ``dest`` cannot take a bundle: a file, or a non-empty folder
    that is not a bundle (it would be replaced)."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise HRAvatarError(f"--web {dest}: exists and is not a folder; give a folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "avatar.json").is_file():
        raise HRAvatarError(f"--web {dest}: folder is not empty and holds no web bundle; give a new or empty folder")
    return dest


def write_bundle(bundle: WebBundle, dest: str | Path, with_app: bool = True) -> Path:
    """Write ``bundle`` (and the viewer's files) into the folder ``dest`` atomically (a sibling
    temporary folder renamed into place; an existing bundle folder is replaced)."""
    dest = check_web_dest(dest)
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "avatar.json").write_text(json.dumps(bundle.header))
        for name, data in bundle.files.items():
            (tmp / name).write_bytes(data)
        if with_app:
            for name, src in app_files().items():
                shutil.copyfile(src, tmp / name)
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("web bundle %s: %.1f MB", dest, bundle.size_bytes / 1e6)
    return dest


__all__ = ["WebBundle", "app_files", "background_arrays", "background_equirect", "build_bundle", "check_web_dest",
           "driver_table", "light_arrays", "write_bundle"]
