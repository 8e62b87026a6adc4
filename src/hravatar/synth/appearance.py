"""Procedural, person-specific appearance of the synthetic subject, defined on the head surface.

Materials are a function of a point's *canonical* position (the shaped, unposed template,
metres, head-model frame) and of its soft region memberships (the head model's
:attr:`~hravatar.head.model.HeadModel.regions`, interpolated to the point), so they can be
evaluated on mesh vertices or, more finely, on Gaussians sampled on the faces; the material
then travels with the surface when it deforms. Features are placed relative to the eyeball
centres (the ``eye_l`` / ``eye_r`` rest joints):

* skin: a seeded skin tone with low-frequency mottling, redder cheeks / nose / lips, darker
  under the eyes, a shinier T-zone (lower roughness, higher F0);
* brows and a scalp hair layer with a hairline (plus the model's ``scalp`` region);
* eyes: sclera, an iris with radial striation and a dark limbal ring, a black pupil (by the angle
  between the point's direction from the eyeball centre and the eye's forward axis +z);
* teeth (off-white), mouth interior (dark red), lips.

``readable=True`` (``hravatar synth --readable-face``) paints the features a face tracker reads
with more contrast: a white sclera and a dark iris and pupil on the eyeball itself (the points
skinned to the eye joints, region ``eyeball``; the rest of the model's "eyes" region, the lid
linings behind the eyeball, becomes dark socket skin), a dark lash line on the skin of the eyelid
margins (region ``lid_margin``, :func:`lid_margin`), and dark, fuller eyebrows. A closed eyelid
then hides the iris behind skin and a lash line, as on a real face, so MediaPipe scores blinks
and brow raises of the renders.

Ranges match the avatar's parameterisation (the paper's): roughness in [0.5, 1], F0 in
[0.04, 0.15], so the ground truth is representable by the model being trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hravatar.head.model import HeadModel

# sRGB palettes (converted to linear albedo below)
_SKIN = ((0.94, 0.78, 0.68), (0.85, 0.66, 0.54), (0.74, 0.54, 0.40), (0.58, 0.40, 0.29), (0.42, 0.28, 0.20))
_HAIR = ((0.06, 0.05, 0.045), (0.17, 0.11, 0.07), (0.32, 0.21, 0.12), (0.62, 0.47, 0.28), (0.45, 0.20, 0.10))
_IRIS = ((0.36, 0.21, 0.10), (0.30, 0.46, 0.62), (0.34, 0.45, 0.30), (0.47, 0.36, 0.20))
_BROW_DARK = (0.09, 0.06, 0.045)  # readable faces: brows
_LASH = (0.03, 0.02, 0.02)  # readable faces: lash line


def srgb_to_linear(c: Tensor) -> Tensor:
    """sRGB-encoded values in [0,1] -> linear (IEC 61966-2-1)."""
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


@dataclass
class Materials:
    """Per-point materials (linear albedo).

    Attributes:
        albedo: ``[N,3]`` in [0,1].
        roughness: ``[N,1]`` in [0.5,1].
        f0: ``[N,1]`` in [0.04,0.15].
        hair: ``[N]`` weight of the hair layer (for display / tests).
    """

    albedo: Tensor
    roughness: Tensor
    f0: Tensor
    hair: Tensor

    def cat(self) -> Tensor:
        """``[N,5]`` albedo, roughness, F0."""
        return torch.cat([self.albedo, self.roughness, self.f0], -1)


@dataclass(frozen=True)
class Look:
    """The seeded choices that make a person: colours and a few proportions."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    hairline: float  # metres above the eye centres at the forehead
    noise_phase: tuple[float, ...]


def random_look(seed: int, skin: float | None = None) -> Look:
    """Seeded colours (sRGB triplets) and proportions of a person.

    ``skin`` in [0, 1] picks the skin tone along the palette (0 the lightest, 1 the darkest,
    interpolated); ``None`` lets the seed choose it. Everything else stays seeded.
    """
    g = torch.Generator().manual_seed(int(seed) + 7919)
    u = torch.rand(8, generator=g).tolist()
    if skin is not None:
        if not 0.0 <= float(skin) <= 1.0:
            raise ValueError(f"skin tone must lie in [0, 1], got {skin}")
        u[0] = float(skin)
    i = min(u[0], 1.0 - 1e-9) * (len(_SKIN) - 1)
    a, b = _SKIN[int(i)], _SKIN[min(int(i) + 1, len(_SKIN) - 1)]
    f = i - int(i)
    skin = tuple(x * (1 - f) + y * f for x, y in zip(a, b, strict=False))
    hair = _HAIR[int(u[1] * len(_HAIR)) % len(_HAIR)]
    iris = _IRIS[int(u[2] * len(_IRIS)) % len(_IRIS)]
    return Look(
        skin=skin,
        hair=hair,
        iris=iris,
        hairline=0.060 + 0.015 * u[3],
        noise_phase=tuple(torch.rand(12, generator=g).mul(2 * math.pi).tolist()),
    )


def random_identity(model: HeadModel, seed: int, scale: float = 0.8, max_coeffs: int | None = None) -> Tensor:
    """Seeded identity coefficients ``[S]`` (the model's shape basis has unit-variance coefficients).

    Args:
        model: the head model.
        seed: identity seed.
        scale: standard deviation of the coefficients (below 1 keeps faces plausible).
        max_coeffs: use only the first coefficients (the rest are zero).
    """
    g = torch.Generator().manual_seed(int(seed))
    beta = torch.randn(model.num_shape, generator=g) * scale
    beta = beta.clamp(-2.0, 2.0)
    if max_coeffs is not None:
        beta[max_coeffs:] = 0
    return beta.to(model.v_template)


def _smooth(e0: float, e1: float, x: Tensor) -> Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _region(regions: dict[str, Tensor], name: str, like: Tensor) -> Tensor:
    r = regions.get(name)
    return torch.zeros_like(like) if r is None else r.to(like)


def procedural_materials(
    points: Tensor,
    regions: dict[str, Tensor],
    eye_centers: Tensor,
    seed: int = 0,
    skin: float | None = None,
    readable: bool = False,
) -> Materials:
    """Evaluate the procedural appearance at canonical points.

    Args:
        points: ``[N,3]`` canonical positions (metres, head-model frame).
        regions: region name -> ``[N]`` float membership in [0,1] (names of
            :data:`~hravatar.head.model.REGION_NAMES`; missing ones count as 0).
        eye_centers: ``[2,3]`` rest positions of the left (+x) and right eyeball centres.
        seed: appearance seed (skin / hair / iris colours, mottling).
        skin: skin tone in [0, 1] (see :func:`random_look`); ``None``: from the seed.
        readable: paint eyes, lash lines and brows for a face tracker (module docstring); uses
            the regions ``eyeball`` and ``lid_margin`` when given.
    Returns:
        :class:`Materials` on ``points``' device.
    """
    dev, dt = points.device, points.dtype
    look = random_look(seed, skin)
    x, y, z = points.unbind(-1)
    ec = eye_centers.to(points)
    mid = ec.mean(0)
    iod = (ec[0] - ec[1]).norm().clamp_min(1e-3)  # interocular distance (~6.3 cm)
    rx, ry, rz = x - mid[0], y - mid[1], z - mid[2]
    ax = rx.abs()
    front = _smooth(-0.045, -0.02, rz)  # on the front of the head

    skin = srgb_to_linear(torch.tensor(look.skin, device=dev, dtype=dt)).expand(points.shape[0], 3).clone()
    # low-frequency mottling: random 3-D sinusoids of 3-9 cm wavelength
    ph = look.noise_phase
    n = (
        torch.sin(2 * math.pi * (x / 0.09 + y / 0.13) + ph[0])
        + torch.sin(2 * math.pi * (y / 0.07 - z / 0.11) + ph[1])
        + torch.sin(2 * math.pi * (z / 0.05 + x / 0.08) + ph[2])
        + 0.5 * torch.sin(2 * math.pi * x / 0.031 + ph[3]) * torch.sin(2 * math.pi * y / 0.027 + ph[4])
    ) / 3.5
    skin = skin * (1 + 0.07 * n[:, None])
    red = torch.tensor([1.12, 0.86, 0.86], device=dev, dtype=dt)
    cheek = torch.exp(-((ax - 0.75 * iod) ** 2 + (ry + 0.45 * iod) ** 2) / (2 * (0.25 * iod) ** 2)) * front
    nose = torch.exp(-(rx**2 + (ry + 0.55 * iod) ** 2) / (2 * (0.16 * iod) ** 2)) * front
    skin = skin * (1 + (red - 1) * (0.35 * cheek + 0.3 * nose)[:, None])
    under_eye = torch.exp(
        -((ax - 0.5 * iod) ** 2 / (0.25 * iod) ** 2 + (ry + 0.22 * iod) ** 2 / (0.08 * iod) ** 2)
    )
    skin = skin * (1 - 0.12 * under_eye * front)[:, None]
    neck = _region(regions, "neck", x)
    skin = skin * (1 - 0.08 * neck)[:, None]

    albedo = skin
    rough = 0.66 + 0.04 * n
    f0 = torch.full_like(x, 0.045)
    tzone = (
        torch.exp(-(rx**2) / (2 * (0.35 * iod) ** 2)) * _smooth(-0.9 * iod, -0.2 * iod, ry) * front
    )  # forehead + nose
    rough = rough - 0.10 * tzone
    f0 = f0 + 0.015 * tzone

    # ---- lips ------------------------------------------------------------------------------------
    lips = _region(regions, "lips", x)
    if float((lips > 0.5).sum()) > 0:  # the region is generous (skinning weights): keep an ellipse of it
        cy = points[lips > 0.5, 1].mean()
    else:  # models without a lips region: an ellipse below the nose
        lips = torch.ones_like(x)
        cy = mid[1] - 1.12 * iod
    ell = (rx / (0.40 * iod)) ** 2 + ((y - cy) / (0.165 * iod)) ** 2
    lips = lips * (1 - _smooth(0.75, 1.0, ell)) * front
    lip_col = skin * torch.tensor([0.95, 0.52, 0.55], device=dev, dtype=dt)
    albedo = albedo * (1 - lips[:, None]) + lip_col * lips[:, None]
    rough = rough * (1 - lips) + 0.52 * lips
    f0 = f0 * (1 - lips) + 0.06 * lips

    # ---- brows -----------------------------------------------------------------------------------
    hair_col = srgb_to_linear(torch.tensor(look.hair, device=dev, dtype=dt))
    t = ((ax - 0.12 * iod) / (0.75 * iod)).clamp(0, 1)  # 0 at the inner end, 1 at the outer end
    brow_y = 0.36 * iod + 0.07 * iod * torch.sin(math.pi * (0.25 + 0.75 * t))
    thick = 0.085 * iod * (1 - 0.55 * t) * (1.3 if readable else 1.0)
    brow = (
        _smooth(0.08 * iod, 0.14 * iod, ax)
        * (1 - _smooth(0.88 * iod, 0.95 * iod, ax))
        * (1 - _smooth(0.6, 1.0, (ry - brow_y).abs() / thick))
        * front
    )
    strands = 0.8 + 0.2 * torch.sin(2 * math.pi * (x * 700 + y * 300))
    if not readable:
        brow = brow * strands.clamp(0, 1)

    # ---- scalp hair --------------------------------------------------------------------------------
    back = eye_centers.new_tensor(0.0)
    cz = mid[2] - 0.085 + back.to(points)
    azim = torch.atan2(rx, z - cz).abs()  # 0 front, pi back
    knots_a = [0.0, 0.55, 1.0, 1.45, 1.9, 2.4, math.pi]
    knots_y = [look.hairline, look.hairline, 0.045, 0.025, -0.02, -0.075, -0.085]
    thr = torch.full_like(azim, knots_y[-1])
    for a0, a1, y0, y1 in zip(knots_a[:-1], knots_a[1:], knots_y[:-1], knots_y[1:], strict=False):
        m = (azim >= a0) & (azim < a1)
        f = ((azim - a0) / (a1 - a0)).clamp(0, 1)
        thr = torch.where(m, y0 + (y1 - y0) * f, thr)
    wav = 0.004 * torch.sin(rx * 180 + look.noise_phase[5])
    hair = _smooth(-0.004, 0.004, ry - thr - wav)
    scalp = _region(regions, "scalp", x)
    hair = torch.maximum(hair, scalp * _smooth(-0.01, 0.0, ry - thr))
    for r in ("eyes", "teeth", "mouth_interior", "lips"):
        hair = hair * (1 - _region(regions, r, x))
    strand = 0.8 + 0.2 * torch.sin(2 * math.pi * (rx / 0.0025 + 0.3 * torch.sin(ry / 0.02)))
    h_col = hair_col[None] * strand[:, None]
    hw = torch.maximum(hair, brow * 0.9)
    albedo = albedo * (1 - hw[:, None]) + h_col * hw[:, None]
    if readable:  # dark brows whatever the hair colour
        dark = srgb_to_linear(torch.tensor(_BROW_DARK, device=dev, dtype=dt)) * strands[:, None]
        albedo = albedo * (1 - brow[:, None]) + dark * brow[:, None]
    rough = rough * (1 - hw) + 0.85 * hw
    f0 = f0 * (1 - hw) + 0.046 * hw

    # ---- eyes ------------------------------------------------------------------------------------
    eyes = _region(regions, "eyes", x)
    if readable:
        margin = _region(regions, "lid_margin", x) * (1 - eyes)
        lash = srgb_to_linear(torch.tensor(_LASH, device=dev, dtype=dt))
        albedo = albedo * (1 - margin[:, None]) + lash * margin[:, None]
        rough = rough * (1 - margin) + 0.85 * margin
    c = torch.where((x > mid[0])[:, None], ec[0], ec[1])
    d = points - c
    cosang = d[:, 2] / d.norm(dim=-1).clamp_min(1e-9)
    ang = torch.acos(cosang.clamp(-1, 1))
    sclera = srgb_to_linear(torch.tensor([0.90, 0.87, 0.84], device=dev, dtype=dt)).expand_as(albedo)
    iris_base = srgb_to_linear(torch.tensor(look.iris, device=dev, dtype=dt))
    spokes = 0.75 + 0.25 * torch.sin(torch.atan2(d[:, 1], d[:, 0]) * 23) * torch.sin(ang * 60)
    iris_r, pupil_r = 0.50, 0.20  # radians on the eyeball
    iris_col = iris_base[None] * spokes[:, None] * (1 - 0.6 * _smooth(iris_r - 0.08, iris_r, ang))[:, None]
    w_iris = 1 - _smooth(iris_r - 0.01, iris_r + 0.02, ang)
    w_pupil = 1 - _smooth(pupil_r - 0.02, pupil_r + 0.01, ang)
    eye_col = sclera * (1 - w_iris[:, None]) + iris_col * w_iris[:, None]
    eye_col = eye_col * (1 - w_pupil[:, None]) + 0.01 * w_pupil[:, None]
    # far from the eye's axis: the socket / inner lids (the model's "eyes" region includes them)
    socket = _smooth(0.85, 1.05, ang)[:, None]
    if readable:  # only the eyeball shows the eye; the lid linings behind it are socket skin
        ball = _region(regions, "eyeball", x)
        white = srgb_to_linear(torch.tensor([0.96, 0.95, 0.93], device=dev, dtype=dt)).expand_as(albedo)
        dark_iris = iris_base[None] * 0.25 * spokes[:, None]
        eye_col = white * (1 - w_iris[:, None]) + dark_iris * w_iris[:, None]
        eye_col = eye_col * (1 - w_pupil[:, None]) + 0.005 * w_pupil[:, None]
        socket = torch.maximum(socket, (1 - ball)[:, None])
    eye_col = eye_col * (1 - socket) + skin * torch.tensor([0.75, 0.5, 0.5], device=dev, dtype=dt) * socket
    albedo = albedo * (1 - eyes[:, None]) + eye_col * eyes[:, None]
    rough = rough * (1 - eyes) + 0.5 * eyes
    f0 = f0 * (1 - eyes) + 0.10 * eyes

    # ---- mouth -----------------------------------------------------------------------------------
    teeth = _region(regions, "teeth", x)
    mouth = _region(regions, "mouth_interior", x) * (1 - teeth)
    t_col = srgb_to_linear(torch.tensor([0.86, 0.83, 0.74], device=dev, dtype=dt))
    m_col = srgb_to_linear(torch.tensor([0.42, 0.12, 0.12], device=dev, dtype=dt))
    albedo = albedo * (1 - teeth[:, None]) + t_col * teeth[:, None]
    albedo = albedo * (1 - mouth[:, None]) + m_col * mouth[:, None]
    rough = rough * (1 - teeth - mouth).clamp_min(0) + 0.52 * teeth + 0.55 * mouth
    f0 = f0 * (1 - teeth - mouth).clamp_min(0) + 0.06 * teeth + 0.05 * mouth

    return Materials(
        albedo=albedo.clamp(0.0, 1.0),
        roughness=rough.clamp(0.5, 1.0)[:, None],
        f0=f0.clamp(0.04, 0.15)[:, None],
        hair=hair,
    )


def model_eye_centers(model: HeadModel, shape: Tensor | None = None) -> Tensor:
    """``[2,3]`` rest eyeball centres (joints ``eye_l``, ``eye_r``) of the shaped template."""
    s = torch.zeros(1, model.num_shape).to(model.v_template) if shape is None else shape.reshape(1, -1)
    j = model.rest_joints(torch.nn.functional.pad(s, (0, model.num_shape - s.shape[-1])))[0]
    return j[3:5]


def lid_margin(model: HeadModel, shape: Tensor | None = None) -> Tensor:
    """``[V]`` lash-line weight of the skin vertices on the eyelid margins (0 elsewhere).

    The margin is the skin (outside the ``eyes`` region) that lies on the eyeball: within 0.8 mm
    of the eyeball's radius (weight 1, falling to 0 at 2.5 mm), in front of the eyeball centre
    (within 70 degrees of the forward axis +z); full weight on the upper lid, 0.6 on the lower.
    The eyeball radius is the largest distance of an :func:`eyeball_region` vertex from its eye
    joint. Zero for models without ``eyes`` region or eyeball.
    """
    V = model.num_vertices
    v = shaped_template(model, shape)
    eyes, ball = model.regions.get("eyes"), eyeball_region(model)
    if eyes is None or not bool(ball.any()):
        return torch.zeros(V, dtype=v.dtype, device=v.device)
    ec = model_eye_centers(model, shape).to(v)
    c = torch.where((v[:, 0] > ec.mean(0)[0])[:, None], ec[0], ec[1])
    d = v - c
    dist = d.norm(dim=-1).clamp_min(1e-9)
    radius = dist[ball].max()
    front = (d[:, 2] / dist > math.cos(math.radians(70))).to(v)
    near = 1 - _smooth(0.0008, 0.0025, dist - radius)
    upper = torch.where(d[:, 1] > 0, 1.0, 0.6).to(v)
    return near * front * upper * (~eyes.bool()).to(v)


def eyeball_region(model: HeadModel) -> Tensor:
    """``[V]`` bool: vertices skinned mostly to the eye joints (the visible eyeballs)."""
    return model.lbs_weights[:, 3:5].sum(-1) > 0.5


def shaped_template(model: HeadModel, shape: Tensor | None = None) -> Tensor:
    """``[V,3]`` template with the identity offsets (canonical vertices, metres)."""
    if shape is None:
        return model.v_template
    s = torch.nn.functional.pad(shape.reshape(-1), (0, model.num_shape - shape.numel()))
    return model.v_template + torch.einsum("vcs,s->vc", model.shapedirs, s.to(model.v_template))


def vertex_materials(model: HeadModel, shape: Tensor | None = None, seed: int = 0, readable: bool = False
                     ) -> Materials:
    """Procedural materials at the model's (shaped) vertices: :class:`Materials` with N = V."""
    regions = {k: v.float() for k, v in model.regions.items()}
    if readable:
        regions["eyeball"] = eyeball_region(model).float()
        regions["lid_margin"] = lid_margin(model, shape)
    return procedural_materials(shaped_template(model, shape), regions, model_eye_centers(model, shape), seed,
                                readable=readable)


def point_materials(
    model: HeadModel, face_index: Tensor, bary: Tensor, shape: Tensor | None = None, seed: int = 0,
    skin: float | None = None, readable: bool = False,
) -> Materials:
    """Procedural materials at points sampled on faces (``face_index [N]``, ``bary [N,3]``).

    Positions and region memberships are interpolated barycentrically from the shaped template,
    the materials evaluated at the points (finer than per-vertex: iris and pupil stay sharp).
    """
    from hravatar.gaussians.init import interpolate

    faces = model.faces
    pts = interpolate(shaped_template(model, shape), faces, face_index, bary)
    regions = {
        k: interpolate(v.float()[:, None], faces, face_index, bary)[:, 0] for k, v in model.regions.items()
    }
    # regions that should not bleed (eyes / teeth / mouth): a point belongs when all 3 vertices do
    tri = faces[face_index.to(faces.device)]
    for k in ("eyes", "teeth", "mouth_interior"):
        if k in model.regions:
            regions[k] = model.regions[k][tri].all(-1).to(pts)
    if readable:
        regions["eyeball"] = eyeball_region(model)[tri].all(-1).to(pts)
        regions["lid_margin"] = interpolate(lid_margin(model, shape)[:, None], faces, face_index, bary)[:, 0]
    return procedural_materials(pts, regions, model_eye_centers(model, shape), seed, skin, readable)
