"""Synthetic subject building blocks: animation curves, procedural appearance, environments."""

import math

import numpy as np
import torch

from hravatar.synth.appearance import procedural_materials, random_identity, vertex_materials
from hravatar.synth.curves import ARKIT_NAMES, make_animation
from hravatar.synth.envmaps import ENVIRONMENTS, direction_of, equirect_directions, make_envmap


def test_animation_ranges_and_determinism():
    a = make_animation(300, fps=25.0, seed=3)
    b = make_animation(300, fps=25.0, seed=3)
    c = make_animation(300, fps=25.0, seed=4)
    assert a.pose.shape == (300, 5, 3) and a.translation.shape == (300, 3)
    assert torch.equal(a.pose, b.pose) and not torch.equal(a.pose, c.pose)
    ypr = a.yaw_pitch_roll
    assert abs(float(ypr[:, 0].max()) - 30) < 1e-3 and abs(float(ypr[:, 0].min()) + 30) < 1e-3
    assert abs(float(ypr[:, 1].abs().max()) - 15) < 1e-3
    # the global axis-angle really has that yaw: rotate +z and measure its azimuth
    from hravatar.geometry import axis_angle_to_matrix

    fwd = axis_angle_to_matrix(a.pose[:, 0]) @ torch.tensor([0.0, 0.0, 1.0])
    yaw = torch.rad2deg(torch.atan2(fwd[:, 0], fwd[:, 2]))
    assert float((yaw - ypr[:, 0]).abs().max()) < 3.5  # roll/pitch couple a little into the azimuth
    for n, v in a.arkit.items():
        assert n in ARKIT_NAMES and float(v.min()) >= 0 and float(v.max()) <= 1
    assert float(a.arkit["jawOpen"].max()) > 0.3  # talking
    assert float(a.arkit["eyeBlinkLeft"].max()) > 0.9  # at least one full blink in 12 s
    assert float(a.arkit["mouthSmileLeft"].max()) > 0.3
    # smooth: no frame-to-frame jump above 3 degrees of yaw
    assert float(ypr[:, 0].diff().abs().max()) < 3.0
    E = a.expression_vector(["jawOpen", "notAName", "eyeBlinkRight"])
    assert E.shape == (300, 3) and float(E[:, 1].abs().max()) == 0.0
    assert torch.equal(E[:, 0], a.arkit["jawOpen"])


def test_short_animation_still_moves():
    a = make_animation(20, fps=25.0, seed=0)
    assert a.pose.shape == (20, 5, 3)
    assert float(a.yaw_pitch_roll[:, 0].max() - a.yaw_pitch_roll[:, 0].min()) > 50


def test_envmap_convention_and_lights():
    d = equirect_directions(8, 16)
    assert np.allclose(np.linalg.norm(d, axis=-1), 1, atol=1e-5)
    assert d[0, 0, 1] > 0.9 and d[-1, 0, 1] < -0.9  # first row looks up
    assert d[4, 8, 2] < -0.9 and d[4, 0, 2] > 0.9  # centre column looks along -z, the edges along +z
    assert d[4, 12, 0] > 0.9  # 3/4 of the width looks along +x
    for name in ENVIRONMENTS:
        env = make_envmap(name, 32)
        assert env.shape == (32, 64, 3) and env.dtype == np.float32 and env.min() >= 0
    spec = ENVIRONMENTS["studio"]
    env = make_envmap(spec, 64)
    key = spec.lights[0]
    c = direction_of(key.azimuth_deg, key.elevation_deg)
    dd = equirect_directions(64, 128)
    i, j = np.unravel_index(np.argmax(dd @ c), (64, 128))
    assert env[i, j].sum() > 5 * np.median(env.sum(-1))  # the key light is where it should be
    rot = make_envmap(spec, 64, rotate_deg=90.0)
    assert not np.allclose(rot, env)


def test_procedural_materials_on_points():
    torch.manual_seed(0)
    n = 2000
    pts = torch.randn(n, 3) * torch.tensor([0.075, 0.1, 0.09])
    eye = torch.tensor([[0.032, 0.02, 0.06], [-0.032, 0.02, 0.06]])
    regions = {"eyes": torch.zeros(n)}
    # put a few points on the left eyeball: on its forward axis (pupil) and at 40 deg (sclera)
    pupil = eye[0] + torch.tensor([0.0, 0.0, 0.012])
    sclera = eye[0] + 0.012 * torch.tensor([math.sin(0.7), 0.0, math.cos(0.7)])
    pts[:2] = torch.stack([pupil, sclera])
    regions["eyes"][:2] = 1
    m = procedural_materials(pts, regions, eye, seed=1)
    assert m.albedo.shape == (n, 3) and m.roughness.shape == (n, 1) and m.f0.shape == (n, 1)
    assert float(m.albedo.min()) >= 0 and float(m.albedo.max()) <= 1
    assert float(m.roughness.min()) >= 0.5 and float(m.roughness.max()) <= 1
    assert float(m.f0.min()) >= 0.04 and float(m.f0.max()) <= 0.15
    assert float(m.albedo[0].max()) < 0.05 and float(m.albedo[1].min()) > 0.5  # pupil dark, sclera light
    # hair on top of the head, none at the chin
    top = torch.tensor([[0.0, 0.11, 0.0]])
    chin = torch.tensor([[0.0, -0.08, 0.07]])
    mm = procedural_materials(torch.cat([top, chin]), {}, eye, seed=1)
    assert float(mm.hair[0]) > 0.9 and float(mm.hair[1]) < 0.1
    assert float(mm.roughness[0]) > float(mm.roughness[1])
    # the seed changes the person
    m2 = procedural_materials(pts, regions, eye, seed=2)
    assert not torch.allclose(m.albedo[2:], m2.albedo[2:])


def test_vertex_materials_on_test_head():
    from helpers.synthetic_head import synthetic_head

    head = synthetic_head(subdivisions=2)
    beta = random_identity(head, seed=5)
    assert beta.shape == (head.num_shape,)
    m = vertex_materials(head, beta, seed=0)
    assert m.albedo.shape == (head.num_vertices, 3)
    assert torch.isfinite(m.albedo).all()
