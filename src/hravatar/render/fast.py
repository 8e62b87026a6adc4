"""Inference-only (no autograd) CPU kernels: fused deformation and fused projection + rasterization.

Two entry points, each with a PyTorch reference it is tested against (``tests/test_render_fast.py``):

* :func:`fast_deform`: blendshapes + linear blend skinning + rotation + normals of a
  blendshape-rigged :class:`~hravatar.gaussians.GaussianHead` in one C++ pass
  (``csrc/deform.cpp``). Reference: ``GaussianHead.deform`` + ``DeformedGaussians.normals``.
* :func:`rasterize_fast`: projection, depth sort, tile binning and the forward compositing
  in one C++ call (``hr_render`` in ``csrc/rasterize.cpp``, the training rasterizer's own
  forward pass). Reference: :func:`hravatar.render.rasterize` with ``render_mode="RGB+ED"``.

Both are CPU-only, float32, and take no gradient (inputs are detached). Both kernels are compiled
on first use by :func:`hravatar.render.cpu.build` (per-user cache keyed by source hash, compiler
and CPU flags), with FMA contraction allowed (:data:`hravatar.render.cpu.INFERENCE_FLAGS`; the
rasterizer is thus a second build of the training kernel's source). :func:`fast_available` says
whether they can be used (False without a compiler, for CUDA tensors, and for triangle-rigged
avatars).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hravatar.render import cpu

_DEFORM_SRC = Path(__file__).with_name("csrc") / "deform.cpp"


def _bind_deform(lib: ctypes.CDLL) -> None:
    p, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.hrd_deform.restype = i32
    lib.hrd_deform.argtypes = [i64, i32] + [p] * 4 + [p, p, i32] * 3 + [p] * 9


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _f32(t: Tensor) -> Tensor:
    return t.detach().to(torch.float32).contiguous()


def fast_available(avatar: Any = None, device: torch.device | str | None = None) -> bool:
    """Whether the fast kernels can render ``avatar`` on ``device`` (CPU, C++ compiler present,
    blendshape rig). Never raises; compiles the kernels on the first call (a few seconds)."""
    dev = torch.device(device) if device is not None else (avatar.device if avatar is not None else None)
    if dev is not None and dev.type != "cpu":
        return False
    if avatar is not None and getattr(avatar, "rig", "blendshape") != "blendshape":
        return False
    try:
        cpu.load_inference()
        cpu.load_library(_DEFORM_SRC, _bind_deform, cpu.INFERENCE_FLAGS)
    except RuntimeError:
        return False
    return True


@dataclass
class FastGaussians:
    """Posed Gaussians of one parameter set (world frame, metres), from :func:`fast_deform`.

    Attributes:
        means: ``[N,3]``; quats: ``[N,4]`` unit (w,x,y,z); scales: ``[N,3]`` linear;
        opacities: ``[N]`` in (0,1); normals: ``[N,3]`` unit shortest axes (flipped toward the
        camera when a camera centre was given).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    normals: Tensor


_shape_cache: dict[int, tuple[tuple, Tensor]] = {}


def _shaped_means(avatar: Any, beta: Tensor) -> Tensor:
    """``X + S beta [N,3]``, cached per avatar while its tensors and ``beta`` are unchanged
    (the identity is constant over a video, so each frame then reads only E and P)."""
    p = avatar.params
    m, sd = p["means"], p["shapedirs"]
    key = (m.data_ptr(), m._version, sd.data_ptr(), sd._version, tuple(m.shape), tuple(sd.shape),
           beta.numpy().tobytes())
    hit = _shape_cache.get(id(avatar))
    if hit is not None and hit[0] == key:
        return hit[1]
    N, S = sd.shape[0], sd.shape[-1]
    out = (_f32(m).reshape(N * 3) + _f32(sd).reshape(N * 3, S) @ beta).reshape(N, 3).contiguous()
    _shape_cache.clear()  # one avatar at a time: do not keep old avatars alive
    _shape_cache[id(avatar)] = (key, out)
    return out


@torch.no_grad()
def joint_inputs(avatar: Any, shape: Tensor | None, expression: Tensor | None, pose: Tensor | None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-frame small inputs of the fused deformation, computed with the reference's own torch code:
    ``(beta [S], psi [E], pose_feature [36], A [5,3,4])`` (joint transforms of the kinematic chain)."""
    from hravatar.gaussians.deform import NUM_JOINTS, pad_coeffs  # noqa: PLC0415
    from hravatar.geometry.rotations import axis_angle_to_matrix  # noqa: PLC0415
    from hravatar.head.lbs import kinematic_chain, pose_feature  # noqa: PLC0415

    p = avatar.params
    like = p["means"].detach().float()
    S, E = p["shapedirs"].shape[-1], p["exprdirs"].shape[-1]
    beta = pad_coeffs(None if shape is None else shape.reshape(1, -1), S, 1, like, "shape")
    psi = pad_coeffs(None if expression is None else expression.reshape(1, -1), E, 1, like, "expression")
    pose = torch.zeros(1, NUM_JOINTS, 3) if pose is None else pose.detach().float().reshape(1, NUM_JOINTS, 3)
    rot = axis_angle_to_matrix(pose)
    pf = pose_feature(rot[:, 1:])[0]
    jsd = avatar.joint_shapedirs.float()
    joints = avatar.joint_template.float() + torch.einsum("jcs,bs->bjc", jsd, beta[:, : jsd.shape[-1]])
    A = kinematic_chain(rot, joints, torch.tensor([-1, 0, 1, 1, 1]))[0, :, :3, :]
    return beta[0].contiguous(), psi[0].contiguous(), pf.contiguous(), A.contiguous()


@torch.no_grad()
def fast_deform(
    avatar: Any,
    shape: Tensor | None = None,
    expression: Tensor | None = None,
    pose: Tensor | None = None,
    translation: Tensor | None = None,
    camera_center: Tensor | None = None,
) -> FastGaussians:
    """Posed Gaussians of a blendshape-rigged avatar for ONE parameter set, in one C++ pass.

    Args:
        avatar: a :class:`~hravatar.gaussians.GaussianHead` with ``rig="blendshape"`` on the CPU.
        shape: ``[1,S']`` or ``[S']``; expression: ``[1,E']`` or ``[E']`` (zero-padded);
            pose: ``[1,5,3]``/``[1,15]`` axis-angle radians; translation: ``[1,3]`` metres.
            All optional (zeros).
        camera_center: ``[3]`` world position of the camera (metres); normals are flipped to face
            it. ``None``: the Gaussian's own axis sign.
    Returns:
        :class:`FastGaussians` (``[N,...]``), equal to ``avatar.deform(...)`` and its ``normals``
        up to float round-off (sums in another order).
    Raises:
        RuntimeError: no compiler / kernel; ValueError: triangle rig, CUDA tensors, too many
        coefficients.
    """
    if getattr(avatar, "rig", "blendshape") != "blendshape":
        raise ValueError("fast_deform: only blendshape-rigged avatars (use avatar.deform for rig='triangle')")
    if avatar.device.type != "cpu":
        raise ValueError("fast_deform: CPU tensors only")
    lib = cpu.load_library(_DEFORM_SRC, _bind_deform, cpu.INFERENCE_FLAGS)
    p = avatar.params
    N = int(p["means"].shape[0])
    beta, psi, pf, A = joint_inputs(avatar, shape, expression, pose)
    if bool((beta != 0).any()):
        base = _shaped_means(avatar, beta)
    else:
        base = _f32(p["means"])
    ex, pd = _f32(p["exprdirs"]), _f32(p["posedirs"])
    quats, ls, op, w = _f32(p["quats"]), _f32(p["scales"]), _f32(p["opacities"]), _f32(p["lbs_weights"])
    tr = None if translation is None else _f32(translation.reshape(3))
    cam = None if camera_center is None else _f32(camera_center.reshape(3))
    out_m = torch.empty(N, 3)
    out_q = torch.empty(N, 4)
    out_s = torch.empty(N, 3)
    out_o = torch.empty(N)
    out_n = torch.empty(N, 3)
    P = pd.shape[-1]
    rc = lib.hrd_deform(
        N, cpu.num_threads(), _ptr(base), _ptr(quats), _ptr(ls), _ptr(op),
        None, None, 0,
        _ptr(ex), _ptr(psi), int(ex.shape[-1]),
        _ptr(pd) if P else None, _ptr(pf[:P].contiguous()) if P else None, int(P),
        _ptr(w), _ptr(A), _ptr(tr), _ptr(cam),
        _ptr(out_m), _ptr(out_q), _ptr(out_s), _ptr(out_o), _ptr(out_n),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"hrd_deform failed (code {rc})")
    return FastGaussians(out_m, out_q, out_s, out_o, out_n)


@torch.no_grad()
def rasterize_fast(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    background: Tensor | None = None,
    depth: str = "expected",
    radius_clip: float = 0.0,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Project, sort, bin and composite N Gaussians into one camera in one C++ call (no autograd).

    Args:
        means ``[N,3]``, quats ``[N,4]`` (w,x,y,z), scales ``[N,3]`` (linear, metres), opacities
        ``[N]``, colors ``[N,D]`` (any D up to 31 with a depth channel): as
        :func:`hravatar.render.rasterize` with one camera; viewmat ``[4,4]`` OpenCV world-to-camera,
        K ``[3,3]`` pixels; near/far (metres), eps2d (pixels^2), radius_clip (pixels): as there.
        background: ``[D]`` colour behind the Gaussians (not applied to depth) or ``None`` (0).
        depth: ``"expected"`` (``"RGB+ED"``: z averaged by the weights), ``"accumulated"``
            (``"RGB+D"``) or ``"none"`` (``"RGB"``).
    Returns:
        ``(colors [1,H,W,D(+1)], alphas [1,H,W,1], meta)`` with ``meta`` = ``means2d [1,N,2]``,
        ``radii [1,N,2]`` int32, ``depths [1,N]``, ``n_isect``, ``width``, ``height``,
        ``backend="cpu-fused"``. Equal to :func:`hravatar.render.rasterize` with
        ``backend="cpu"`` up to float round-off of the projection.
    """
    modes = {"none": 0, "accumulated": 1, "expected": 2}
    if depth not in modes:
        raise ValueError(f"rasterize_fast: depth must be one of {tuple(modes)}, got {depth!r}")
    if means.device.type != "cpu":
        raise ValueError("rasterize_fast: CPU tensors only")
    lib = cpu.load_inference()
    N, D = int(means.shape[0]), int(colors.shape[-1])
    W, H = int(width), int(height)
    Dout = D + (1 if modes[depth] else 0)
    if lib.hr_channels_for(Dout) == 0:
        raise ValueError(f"rasterize_fast: {Dout} channels; at most {lib.hr_max_channels()}")
    out = torch.empty(1, H, W, Dout)
    alpha = torch.empty(1, H, W, 1)
    m2 = torch.empty(1, N, 2)
    radii = torch.empty(1, N, 2, dtype=torch.int32)
    deps = torch.empty(1, N)
    bg = None if background is None else _f32(torch.as_tensor(background).reshape(-1).expand(D))
    args = [_f32(t) for t in (means, quats, scales, opacities.reshape(N), colors.reshape(N, D), viewmat, K)]
    n = lib.hr_render(
        N, D, W, H, cpu.num_threads(), *[_ptr(t) for t in args],
        float(near_plane), float(far_plane), float(eps2d), float(radius_clip), modes[depth],
        _ptr(bg), _ptr(out), _ptr(alpha), _ptr(m2), _ptr(radii), _ptr(deps),
    )  # fmt: skip
    if n < 0:
        raise RuntimeError(f"hr_render failed (code {n})")
    meta = {"means2d": m2, "radii": radii, "depths": deps, "n_isect": int(n), "width": W, "height": H,
            "backend": "cpu-fused"}
    return out, alpha, meta


@torch.no_grad()
def fast_gbuffer(
    avatar: Any,
    shape: Tensor | None,
    expression: Tensor | None,
    pose: Tensor | None,
    translation: Tensor | None,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    mode: str = "pbr",
    materials: dict[str, Tensor] | None = None,
    eps2d: float = 0.3,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Deform + rasterize the avatar's G-buffer for one parameter set and one camera (no autograd).

    The inference twin of the differentiable deform -> ``rasterize(..., render_mode="RGB+ED")``
    path: :func:`fast_deform` then :func:`rasterize_fast`.

    Args:
        avatar: blendshape-rigged :class:`~hravatar.gaussians.GaussianHead` on the CPU.
        shape ``[1,S']``, expression ``[1,E']``, pose ``[1,5,3]``, translation ``[1,3]``: as
            ``avatar.deform``; viewmat ``[4,4]``, K ``[3,3]``, width, height: the camera.
        mode: ``"color"``: features are the per-point colours ``[N,3]``; otherwise the G-buffer
            layout albedo 3, roughness 1, F0 1, camera-facing normal 3.
        materials: per-point overrides ``{"albedo" [N,3], "roughness" [N,1], "f0" [N,1],
            "colors" [N,3]}`` (activated values).
        eps2d: low-pass added to the 2D covariances (pixels^2), as :func:`rasterize_fast`.
    Returns:
        ``(features [1,H,W,D+1] with the expected depth last, alpha [1,H,W,1], meta)``.
    """
    mats = materials or {}
    vm = viewmat.detach().float()
    centre = -(vm[:3, :3].T @ vm[:3, 3])
    g = fast_deform(avatar, shape, expression, pose, translation, centre)
    if mode == "color":
        feats = mats["colors"] if "colors" in mats else avatar.colors
    else:
        feats = torch.cat([mats["albedo"] if "albedo" in mats else avatar.albedo,
                           mats["roughness"] if "roughness" in mats else avatar.roughness,
                           mats["f0"] if "f0" in mats else avatar.f0, g.normals], -1)
    return rasterize_fast(g.means, g.quats, g.scales, g.opacities, feats, vm, K, width, height, eps2d=eps2d)
