"""hravatar.geometry.rotations: conversions agree with each other and with scipy."""

from __future__ import annotations

import math

import torch
from scipy.spatial.transform import Rotation

from hravatar.geometry import (
    axis_angle_to_matrix,
    compose_axis_angle,
    euler_to_axis_angle,
    matrix_to_axis_angle,
    matrix_to_quat,
    quat_to_matrix,
)


def test_axis_angle_round_trip_and_scipy():
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(200, 3, generator=g, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(200, 1, generator=g, dtype=torch.float64) * 3.0
    R = axis_angle_to_matrix(aa)
    torch.testing.assert_close(R, torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix()))
    torch.testing.assert_close(matrix_to_axis_angle(R), aa, rtol=1e-7, atol=1e-7)
    q = matrix_to_quat(R)
    assert (q[:, 0] >= 0).all()
    xyzw = torch.from_numpy(Rotation.from_matrix(R.numpy()).as_quat())
    ref = torch.cat([xyzw[:, 3:], xyzw[:, :3]], -1)
    ref = torch.where(ref[:, :1] < 0, -ref, ref)
    torch.testing.assert_close(q, ref)
    torch.testing.assert_close(quat_to_matrix(q), R)
    assert float(matrix_to_axis_angle(torch.eye(3)).abs().max()) == 0.0


def test_euler_and_compose():
    yaw, pitch, roll = 0.4, -0.2, 0.1
    got = axis_angle_to_matrix(euler_to_axis_angle(yaw, pitch, roll))
    want = torch.from_numpy(Rotation.from_euler("YXZ", [yaw, pitch, roll]).as_matrix()).float()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    a, b = torch.tensor([0.3, 0.0, 0.1]), torch.tensor([0.0, -0.5, 0.2])
    torch.testing.assert_close(axis_angle_to_matrix(compose_axis_angle(a, b)),
                               axis_angle_to_matrix(a) @ axis_angle_to_matrix(b), rtol=1e-5, atol=1e-6)
    half_turn = axis_angle_to_matrix(torch.tensor([0.0, math.pi - 1e-3, 0.0]))
    torch.testing.assert_close(matrix_to_axis_angle(half_turn).norm(), torch.tensor(math.pi - 1e-3), rtol=1e-4,
                               atol=1e-4)
