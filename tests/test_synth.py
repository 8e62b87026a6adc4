"""The synthetic subject is self-consistent: mesh covers the mask, parameters reproduce the frames."""

import json

import numpy as np
import pytest
import torch

from hravatar.synth.subject import SynthConfig, perturb_params, rebuild_gt, synthesize

SIZE, FRAMES = 48, 6


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "subj"
    synthesize(SynthConfig(out=out, size=SIZE, frames=FRAMES, points_per_face=4, env_height=32, seed=3))
    return out


@pytest.fixture(scope="module")
def gt(subject):
    return rebuild_gt(subject)


def test_layout(subject):
    from hravatar.data import load_subject

    ds = load_subject(subject, "all")
    assert len(ds) == FRAMES and ds.image_size == (SIZE, SIZE)
    man = json.loads((subject / "manifest.json").read_text())
    assert man["complete"] and man["synthetic"]["exact_tracking"]
    for env in ("studio", "sunset", "cool"):
        assert (subject / "gt" / "envmaps" / f"{env}.hdr").is_file()
    test = load_subject(subject, "test")
    assert len(test) >= 1
    for key in ("albedo", "normal", "mask", "relit/sunset", "relit/cool"):
        m = test.gt_map(0, key)
        assert m is not None and m.shape[:2] == (SIZE, SIZE), key
    n = test.gt_map(0, "normal")
    mask = test.gt_map(0, "mask")[..., 0] > 0.5
    assert mask.float().mean() > 0.1  # the head is in view
    nn = n[mask]
    assert torch.allclose(nn.norm(dim=-1), torch.ones(len(nn)), atol=1e-3)
    # normals face the camera: OpenCV camera z points into the scene, so n_z < 0 on the visible surface
    assert float((nn[:, 2] < 0).float().mean()) > 0.95
    # relit renders differ from the training lighting
    s0 = test[0].image
    assert float((test.gt_map(0, "relit/sunset") - s0).abs().mean()) > 0.01


def test_projected_mesh_covers_mask(subject, gt):
    import cv2

    from hravatar.data import load_subject
    from hravatar.render import project_points

    head = gt["head"]
    ds = load_subject(subject, "all")
    faces = head.faces.numpy()
    for i in range(len(ds)):
        s = ds[i]
        out = head(
            shape=s.shape[None],
            expression=s.expression[None],
            pose=s.pose[None],
            translation=s.translation[None],
        )
        uv, _ = project_points(out.vertices[0], s.viewmat, s.K)
        sil = np.zeros((SIZE, SIZE), np.uint8)
        pts = ((uv.numpy() - 0.5) * 16).round().astype(np.int32)  # OpenCV pixel centres are integers
        for tri in pts[faces]:
            cv2.fillConvexPoly(sil, tri, 1, shift=4)  # 4 bits of sub-pixel precision
        sil = cv2.dilate(sil, np.ones((3, 3), np.uint8))
        mask = s.mask[..., 0].numpy() > 0.5
        covered = (sil[mask] > 0).mean()
        assert covered > 0.99, (i, covered)
        # and the mask is not trivially small compared to the silhouette
        assert mask.sum() > 0.5 * (sil > 0).sum()


def test_parameters_reproduce_frames(subject, gt):
    from hravatar.avatar import Camera, FrameParams
    from hravatar.data import load_subject
    from hravatar.synth.render import shade_maps, surface_maps

    ds = load_subject(subject, "all")
    light = gt["lights"][gt["info"]["train_env"]]
    for i in (0, FRAMES - 1):
        s = ds[i]
        cam = Camera(s.viewmat, s.K, SIZE, SIZE)
        with torch.no_grad():
            gb = surface_maps(gt["avatar"], FrameParams(s.shape[None], s.expression[None], s.pose[None],
                                                        s.translation[None]), cam)
            # the format stores straight colour (clamped to [0,1]) and alpha; the reader composites them
            img = shade_maps(gb, cam, light)["color"][0].clamp(0, 1) * gb.alpha[0]
        err = (img - s.image).abs()
        assert float(err.max()) <= 3 / 255 and float(err.mean()) < 0.5 / 255, (i, float(err.max()))
        # a different frame's parameters do not reproduce this frame
        j = (i + FRAMES // 2) % FRAMES
        o = ds[j]
        with torch.no_grad():
            gb2 = surface_maps(gt["avatar"], FrameParams(o.shape[None], o.expression[None], o.pose[None],
                                                         o.translation[None]), cam)
            img2 = shade_maps(gb2, cam, light)["image"][0].clamp(0, 1)
        assert float((img2 - s.image).abs().mean()) > 5 * float(err.mean())


def test_perturb():
    e, p, t = torch.rand(5, 52), torch.zeros(5, 5, 3), torch.zeros(5, 3)
    e2, p2, t2 = perturb_params(e, p, t, 1.0, seed=0)
    assert not torch.equal(e, e2) and float(p2[:, :3].abs().max()) > 0 and float(p2[:, 3:].abs().max()) == 0
    e3, p3, t3 = perturb_params(e, p, t, 0.0, seed=0)
    assert torch.equal(e, e3) and torch.equal(p, p3) and torch.equal(t, t3)
