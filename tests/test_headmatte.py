"""Head-only matte against the synthetic subject's torso ground truth (``hravatar synth --torso``)."""

import json

import numpy as np
import pytest
import torch

from hravatar.io.image import read_image
from hravatar.preprocess.headmatte import (
    HeadMatteConfig,
    boundary_loops,
    cut_curve,
    head_only_mattes,
    neck_boundary_vertices,
    warp_to,
)
from hravatar.synth.render import default_camera
from hravatar.synth.subject import TORSO_CAMERA, SynthConfig, load_head, synthesize

SIZE, FRAMES = 128, 10


def _mask(path):
    m = read_image(path)
    return (m[..., 0] if m.ndim == 3 else m) >= 128


def _subject(root, seed):
    out = root / f"torso{seed}"
    # slow head motion (about 2 degrees per frame), like a 25 fps video
    synthesize(SynthConfig(out=out, size=SIZE, frames=FRAMES, yaw=10, pitch=5, points_per_face=4, env_height=32,
                           seed=seed, torso=True))
    return out


@pytest.fixture(scope="module")
def head():
    return load_head("open")


@pytest.fixture(scope="module", params=[0, 4])  # dark grey and white clothes
def torso_subject(request, tmp_path_factory):
    return _subject(tmp_path_factory.mktemp("headmatte"), request.param)


def _mattes(subject, head, **cfg):
    info = json.loads((subject / "gt" / "synth.json").read_text())
    gp = info["gt_params"]
    with torch.no_grad():
        V = head(shape=torch.tensor(gp["shape"])[None].expand(FRAMES, -1), expression=torch.tensor(gp["expression"]),
                 pose=torch.tensor(gp["pose"]), translation=torch.tensor(gp["translation"])).vertices.numpy()
    vm, K = default_camera(SIZE, **TORSO_CAMERA)
    frames = [read_image(subject / "image" / f"{i:05d}.png") for i in range(FRAMES)]
    a = head_only_mattes(frames, lambda i: V[i], head.faces.numpy(), neck_boundary_vertices(head),
                         vm.numpy(), K.numpy(), HeadMatteConfig(**cfg))
    return frames, a


def test_synth_torso_ground_truth(torso_subject):
    for i in range(FRAMES):
        f = read_image(torso_subject / "image" / f"{i:05d}.png")
        head_m = _mask(torso_subject / "gt" / "mask" / f"{i:05d}.png")
        clothes = _mask(torso_subject / "gt" / "clothes" / f"{i:05d}.png")
        person = f[..., 3] >= 128
        assert clothes.sum() > 0.1 * head_m.sum(), "the torso must be visible"
        assert not (clothes & head_m).any()
        assert np.array_equal(person, person | head_m) and (person & clothes).sum() == clothes.sum()


def test_head_only_matte_keeps_head_removes_clothes(torso_subject, head):
    frames, a = _mattes(torso_subject, head)
    assert a.shape == (FRAMES, SIZE, SIZE) and a.dtype == np.uint8
    for i in range(FRAMES):
        head_m = _mask(torso_subject / "gt" / "mask" / f"{i:05d}.png")
        clothes = _mask(torso_subject / "gt" / "clothes" / f"{i:05d}.png")
        kept = (a[i] >= 128)[head_m].mean()
        removed = (a[i] < 128)[clothes].mean()
        assert kept >= 0.97, (i, kept)
        assert removed >= 0.95, (i, removed)
        # the head matte never adds to the person matte
        assert (a[i].astype(int) <= frames[i][..., 3].astype(int)).all()


def test_keep_everything_without_cut_would_fail(torso_subject):
    """The thresholds are not trivially met: the person matte itself keeps the clothes."""
    f = read_image(torso_subject / "image" / "00000.png")
    clothes = _mask(torso_subject / "gt" / "clothes" / "00000.png")
    assert (f[..., 3] < 128)[clothes].mean() < 0.05


def test_boundary_loops_and_neck_rim(head):
    # a square of two triangles has one boundary loop of four vertices
    loops = boundary_loops(np.array([[0, 1, 2], [0, 2, 3]]))
    assert len(loops) == 1 and sorted(loops[0].tolist()) == [0, 1, 2, 3]
    assert boundary_loops(np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]])) == []  # closed tetrahedron
    rim = neck_boundary_vertices(head)
    v = head.v_template.numpy()
    assert len(rim) >= 8 and v[rim, 1].max() < 0  # below the head-neck pivot
    assert v[:, 1].argmin() in rim


def test_cut_curve_follows_the_neck_and_extends_over_the_shoulders():
    H = W = 40
    mesh = np.zeros((H, W), bool)
    mesh[5:30, 15:25] = True  # the neck's lowest pixel row is 29
    rim = np.array([[15.0, 26.0], [25.0, 26.0], [20.0, 27.0]])
    cut = cut_curve(rim, mesh)
    assert cut.shape == (W,)
    assert np.allclose(cut[16:24], 29.5)  # inside the neck: the mesh's lower edge
    assert abs(cut[0] - 26.3) < 1.0 and abs(cut[-1] - 26.3) < 1.0  # the rim line outside


def test_warp_to_moves_with_the_head():
    m = np.zeros((32, 32), np.float32)
    m[10:20, 10:20] = 1
    uv = np.random.default_rng(0).uniform(0, 32, (50, 2))
    moved = warp_to(m, uv, uv + [3.0, -2.0])
    assert moved[8:18, 13:23].mean() > 0.99 and moved[18:20, 10:13].max() < 0.01


def test_pipeline_stage_writes_head_matte_and_frames(torso_subject, head, tmp_path):
    """The preprocessing stage on a work folder (frames + final track) and the subject frames it makes."""
    from hravatar.preprocess.pipeline import (
        PipelineSettings,
        Work,
        _headmatte_current,
        _save_track,
        _stage_headmatte,
        _with_alpha,
    )
    from hravatar.preprocess.tracking import TrackingResult

    info = json.loads((torso_subject / "gt" / "synth.json").read_text())
    gp = info["gt_params"]
    vm, K = default_camera(SIZE, **TORSO_CAMERA)
    work = Work(tmp_path / ".work", {"test": 1})
    assert work.open()
    frames = np.stack([read_image(torso_subject / "image" / f"{i:05d}.png") for i in range(FRAMES)])
    np.save(work.path("frames.npy"), frames)
    res = TrackingResult(shape=torch.tensor(gp["shape"]), expression=torch.tensor(gp["expression"]),
                         pose=torch.tensor(gp["pose"]), translation=torch.tensor(gp["translation"]), viewmat=vm, K=K,
                         landmark_error_px=torch.zeros(FRAMES), image_size=SIZE)
    _save_track(work.path("track.npz"), res, "test")
    assert not _headmatte_current(work)
    _stage_headmatte(work, PipelineSettings(size=SIZE), head)
    assert _headmatte_current(work)
    a = np.load(work.path("headmatte.npy"))
    assert a.shape == (FRAMES, SIZE, SIZE)
    clothes = _mask(torso_subject / "gt" / "clothes" / "00003.png")
    out = _with_alpha(frames[3], a[3])
    assert (out[..., 3] < 128)[clothes].mean() >= 0.95
    assert (out[..., :3][out[..., 3] == 0] == 0).all()  # colour black where the matte is 0
    # a photometric track made later is a different final track: the matte is redone
    _save_track(work.path("photometric.npz"), res, "test")
    work.mark("photometric")
    assert not _headmatte_current(work)
