"""How much a synthetic subject's frames say about the training light's colour (issue 18).

An oracle bound on what photometric fitting can learn of the light's colour. Everything is known
except the light's colour and the albedo: the true geometry (every frame's deformed ground-truth
Gaussians), the true roughness and F0, and the true light's *shape*; the hypothesis is the true
environment times one colour ``k [3]`` (diffuse and specular alike, as one light is) with every
point's albedo free. Per point ``p`` and channel ``c`` the frames in which the point faces the
camera give the series ``y_t = A e_t + s_t`` (``e`` the irradiance, ``s`` the specular radiance,
:func:`hravatar.shading.shade.shade`'s terms). Under the light ``k L`` the least-squares albedo
leaves the residual ``(1 - k_c) s_perp``, where ``s_perp`` is the part of the specular series that
is not a multiple of the diffuse one (a per-point albedo imitates the rest). So a colour error
changes the frames by exactly

    R(k) = sum_c (1 - k_c)^2 P_c,   P_c = sum_p || s_perp,p,c ||^2

and nothing else in the video tells the colour (the diffuse term fixes only ``A x k``). The
residual's RMS per observation, for a colour error of ``theta`` degrees in the best and the worst
direction, is the whole photometric signal that could pull a learned light to the true colour; a
learned model, whose light shapes, roughness and F0 are free too, can absorb part of even that.
Points are treated as seen when they face the camera (``n . v`` above a threshold; occlusion is
ignored: the few points hidden behind others on a face turned at most 30 degrees count as seen).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

#: RMS error of rounding a value to 8 bits (the subject's frames are 8-bit, linear): ``1/(255 sqrt 12)``.
QUANTISATION_RMS = 1.0 / (255.0 * math.sqrt(12.0))


def specular_perp_energy(E: Tensor, S: Tensor, V: Tensor) -> Tensor:
    """``[3]`` energy of the specular series not explained by a per-point multiple of the diffuse one.

    Args:
        E: ``[P,T,3]`` irradiance of each point in each frame. S: ``[P,T,3]`` specular radiance.
        V: ``[P,T]`` 1 where the point is seen in the frame, else 0.
    Returns:
        ``P_c = sum_p min_a sum_t V (S - a E)^2`` per channel.
    """
    v = V[..., None].to(E)
    se = (S * E * v).sum(1)
    ee = (E * E * v).sum(1).clamp_min(1e-12)
    perp = S - (se / ee)[:, None, :] * E
    return (perp**2 * v).sum((0, 1))


def colour_residual_rms(k: Tensor, perp_energy: Tensor, n_obs: float) -> float:
    """RMS change per observation (point, frame, channel) that the light ``k x truth`` leaves after the
    best per-point albedo: ``sqrt(sum_c (1 - k_c)^2 P_c / (3 n_obs))``."""
    return float(((1 - k.to(perp_energy)) ** 2 * perp_energy).sum() / (3.0 * max(n_obs, 1.0))) ** 0.5


def colour_error_factor(reference: Tensor, theta_deg: float, direction: float) -> Tensor:
    """``[3]`` factor ``k`` that turns the colour ``reference [3]`` by ``theta_deg`` degrees.

    ``log k = t (cos a, 0, sin a)`` (a direction ``a`` in the (log r, log b) plane, green fixed), ``t``
    found by bisection so that the angle between ``k * reference`` and ``reference`` is ``theta_deg``;
    ``k`` is then scaled to keep the luminance of ``k * reference`` (the level gauge fixes the level).
    """
    from hravatar.light_priors import chromaticity_angle_deg, luminance

    ref = reference.double().flatten()
    d = torch.tensor([math.cos(direction), 0.0, math.sin(direction)], dtype=torch.float64)
    lo, hi = 0.0, 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if chromaticity_angle_deg(torch.exp(mid * d) * ref, ref) < theta_deg:
            lo = mid
        else:
            hi = mid
    k = torch.exp(0.5 * (lo + hi) * d)
    return (k * luminance(ref) / luminance(k * ref)).float()


@torch.no_grad()
def shading_series(subject: Path, frame_step: int = 3, min_n_dot_v: float = 0.3,
                   min_seen: float = 0.9) -> dict[str, Tensor]:
    """Per-point irradiance and specular radiance of a ``hravatar synth`` subject in its frames.

    Rebuilds the ground-truth avatar from ``gt/synth.json`` (seed, skin tone, parameters), deforms
    it in every ``frame_step``-th frame and shades each point under the true training light.

    Returns:
        ``{"E": [P,T,3], "S": [P,T,3], "V": [P,T], "albedo": [P,3], "light_mean": [3]}`` for the
        ``P`` points seen in at least ``min_seen`` of the frames (the face and what turns with it).
    """
    from hravatar.light_priors import mean_front_irradiance
    from hravatar.render import camera_centers
    from hravatar.shading.brdf_lut import default_lut, fresnel_ks
    from hravatar.synth.envmaps import make_lighting
    from hravatar.synth.hair import add_hair
    from hravatar.synth.render import build_gt_avatar, default_camera
    from hravatar.synth.subject import TORSO_CAMERA, load_head

    syn = json.loads((Path(subject) / "gt" / "synth.json").read_text())
    st = syn["settings"]
    head = load_head(st["head_model"])
    gp = {k: torch.tensor(v) for k, v in syn["gt_params"].items()}
    shape = gp["shape"]
    avatar, _ = build_gt_avatar(head, shape, seed=st["seed"], points_per_face=st["points_per_face"],
                                skin=st["skin"] if st["skin"] >= 0 else None,
                                readable=bool(st.get("readable_face", False)))
    avatar = add_hair(avatar, head, shape, st["seed"], st.get("hair", "none"))
    light = make_lighting(syn["train_env"], height=int(st["env_height"]))[1]
    viewmat, _ = default_camera(st["size"], **(TORSO_CAMERA if st.get("torso") else {}))
    centre = camera_centers(viewmat[None])[0]
    lut = default_lut("cpu")
    albedo, rough, f0 = avatar.albedo, avatar.roughness, avatar.f0
    E, S, V = [], [], []
    for t in range(0, int(gp["expression"].shape[0]), max(1, int(frame_step))):
        g = avatar.deform(shape[None], gp["expression"][t : t + 1], gp["pose"][t : t + 1],
                          gp["translation"][t : t + 1])
        n = g.normals(centre)[0]
        v = torch.nn.functional.normalize(centre - g.means[0], dim=-1)
        ndv = (n * v).sum(-1, keepdim=True)
        c = ndv.clamp(1e-4, 1.0)
        fg = lut(rough, c)
        E.append(light.irradiance(n))
        S.append(light.specular(2 * ndv * n - v, rough) * (fresnel_ks(f0, rough, c) * fg[..., :1] + fg[..., 1:2]))
        V.append((ndv[:, 0] > min_n_dot_v).float())
    Vt = torch.stack(V, 1)
    keep = Vt.mean(1) >= min_seen
    return {"E": torch.stack(E, 1)[keep], "S": torch.stack(S, 1)[keep], "V": Vt[keep],
            "albedo": albedo[keep], "light_mean": mean_front_irradiance(light).detach()}


def colour_signal(subject: Path, frame_step: int = 3, angles: tuple[float, ...] = (1.0, 3.0, 6.0),
                  directions: int = 72) -> dict:
    """The oracle bound (module docstring) for one synthetic subject.

    Returns a JSON-ready dict: points and frames used, the frames' RMS, the specular term's share of
    it, the share of the specular term that no per-point albedo can imitate, and for each angle the
    residual RMS (and its PSNR) of a colour error of that size in the best and the worst direction,
    beside the 8-bit quantisation's RMS (:data:`QUANTISATION_RMS`).
    """
    ser = shading_series(subject, frame_step)
    E, S, V = ser["E"], ser["S"], ser["V"]
    v = V[..., None]
    Y = ser["albedo"][:, None, :] * E + S
    n_obs = float(V.sum())
    P = specular_perp_energy(E, S, V)
    spec_energy = float((S**2 * v).sum())
    out = {
        "subject": Path(subject).name,
        "points": int(E.shape[0]),
        "frames": int(E.shape[1]),
        "frame_rms": float((Y**2 * v).sum() / (3 * n_obs)) ** 0.5,
        "specular_share_rms": (spec_energy / float((Y**2 * v).sum())) ** 0.5,
        "specular_not_diffuse_like_share_rms": (float(P.sum()) / spec_energy) ** 0.5,
        "quantisation_rms": QUANTISATION_RMS,
        "by_error_deg": {},
    }
    for th in angles:
        r = [colour_residual_rms(colour_error_factor(ser["light_mean"], th, 2 * math.pi * i / directions), P, n_obs)
             for i in range(directions)]
        lo, hi = min(r), max(r)
        out["by_error_deg"][f"{th:g}"] = {"residual_rms_min": lo, "residual_rms_max": hi,
                                          "psnr_db_min": -20 * math.log10(max(hi, 1e-12)),
                                          "psnr_db_max": -20 * math.log10(max(lo, 1e-12))}
    return out
