"""Long hair: the synthetic subject's hair lies outside the bald mesh, and the hair initialisation
seeds points there that move with the head."""

import numpy as np
import pytest
import torch

from hravatar.synth.subject import SynthConfig, rebuild_gt, synthesize

SIZE, FRAMES = 48, 8


@pytest.fixture(scope="module")
def long_subject(tmp_path_factory):
    out = tmp_path_factory.mktemp("hair") / "long"
    synthesize(SynthConfig(out=out, size=SIZE, frames=FRAMES, points_per_face=2, env_height=16, seed=1, hair="long"))
    return out


def _mesh_mask(head, s, dilate: int = 1) -> np.ndarray:
    """Silhouette of the tracked bald head mesh in frame sample ``s`` (``[H,W]`` bool)."""
    from scipy.ndimage import binary_dilation

    from hravatar.render.mesh import project, rasterize_mesh

    v = head(shape=s.shape[None], expression=s.expression[None], pose=s.pose[None],
             translation=s.translation[None]).vertices[0].double().numpy()
    uv, z = project(v, s.viewmat.double().numpy(), s.K.double().numpy())
    m = rasterize_mesh(uv, z, head.faces.numpy(), SIZE, SIZE, cull_backfaces=False).mask
    return binary_dilation(m, iterations=dilate) if dilate else m


def _hair_region(head, s) -> np.ndarray:
    return (s.mask[..., 0].numpy() > 0.5) & ~_mesh_mask(head, s)


def test_synth_hair_outside_the_bald_mesh(long_subject):
    from hravatar.data import load_subject

    gt = rebuild_gt(long_subject)
    head = gt["head"]
    ds = load_subject(long_subject, "all")
    for i in range(len(ds)):
        s = ds[i]
        hair = _hair_region(head, s)
        assert hair.mean() > 0.10, (i, hair.mean())  # a large matte region the bald mesh does not explain
        # hair pixels have the hair's colour: the look's hair colour is dark brown-ish, not skin (seed 1)
        gm = ds.gt_map(i, "mask")[..., 0].numpy() > 0.5
        assert (gm == (s.mask[..., 0].numpy() > 0.5)).mean() > 0.99  # the GT mask includes the hair
    # the rebuilt ground truth (what evaluation uses) holds the hair too and reproduces a frame
    from hravatar.avatar import Camera, FrameParams
    from hravatar.synth.render import shade_maps, surface_maps

    s = ds[0]
    cam = Camera(s.viewmat, s.K, SIZE, SIZE)
    with torch.no_grad():
        gb = surface_maps(gt["avatar"], FrameParams(s.shape[None], s.expression[None], s.pose[None],
                                                    s.translation[None]), cam)
        img = shade_maps(gb, cam, gt["lights"][gt["info"]["train_env"]])["color"][0].clamp(0, 1) * gb.alpha[0]
    assert float((img - s.image).abs().max()) <= 3 / 255
    assert gt["avatar"].num_points == gt["info"]["num_gaussians"]
    # the bald subject (same seed) has no such region
    from hravatar.synth.hair import add_hair

    bald = add_hair(gt["avatar"], head, gt["shape"], 1, "none")
    assert bald is gt["avatar"]


def test_hair_init_seeds_the_hair_and_moves_with_the_head(long_subject):
    from hravatar.data import load_subject
    from hravatar.gaussians import AvatarConfig, GaussianHead
    from hravatar.gaussians.hair_init import HairInitConfig, add_hair_init
    from hravatar.render.mesh import project

    gt = rebuild_gt(long_subject)
    head = gt["head"]
    ds = load_subject(long_subject, "train")
    av = GaussianHead.from_head_model(head, AvatarConfig(points_per_face=1))
    N = av.num_points
    av2, st = add_hair_init(av, head, ds, HairInitConfig(frames=4))
    M = av2.num_points - N
    assert M == st["points"] and M > 200, st
    assert torch.equal(av2.params["means"][:N], av.params["means"])  # the mesh points are untouched
    # in every training frame (also those that did not seed) the new points project into the matte,
    # most of them into the region the bald mesh does not cover
    for i in range(len(ds)):
        s = ds[i]
        d = av2.deform(s.shape[None], s.expression[None], s.pose[None], s.translation[None])
        uv, z = project(d.means[0, N:].detach().double().numpy(), s.viewmat.double().numpy(),
                        s.K.double().numpy())
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        ok = (u >= 0) & (u < SIZE) & (v >= 0) & (v < SIZE)
        assert ok.mean() > 0.7
        in_matte = (s.mask[..., 0].numpy() > 0.5)[v[ok], u[ok]].mean()
        outside_mesh = (~_mesh_mask(head, s, 0))[v[ok], u[ok]].mean()
        assert in_matte > 0.9, (i, in_matte)
        assert outside_mesh > 0.5, (i, outside_mesh)
        # and they cover the hair region (within a pixel): the canonical binding is consistent across frames
        from scipy.ndimage import binary_dilation

        hit = np.zeros((SIZE, SIZE), bool)
        hit[v[ok], u[ok]] = True
        coverage = binary_dilation(hit)[_hair_region(head, s)].mean()
        assert coverage > 0.97, (i, coverage)
    # rigid with the head: a neck rotation moves the hair points like the skull's top vertex
    pose = torch.zeros(1, 5, 3)
    pose[0, 1, 1] = 0.4
    d0 = av2.deform(pose=torch.zeros(1, 5, 3)).means[0, N:].detach()
    d1 = av2.deform(pose=pose).means[0, N:].detach()
    assert float((d1 - d0).norm(dim=-1).mean()) > 0.01  # they move
    top = int(head.v_template[:, 1].argmax())
    t0 = head(pose=torch.zeros(1, 5, 3)).vertices[0, top]
    t1 = head(pose=pose).vertices[0, top]
    D0, D1 = (d0 - t0).norm(dim=-1), (d1 - t1).norm(dim=-1)
    assert float((D0 - D1).abs().max()) < 1e-4  # distances to the skull are kept
    # jaw opening does not move them
    pj = torch.zeros(1, 5, 3)
    pj[0, 2, 0] = 0.3
    assert float((av2.deform(pose=pj).means[0, N:].detach() - d0).abs().max()) < 1e-6


def test_hair_init_adds_nothing_without_hair(tmp_path):
    """On a bald subject the matte is the mesh: no seeds."""
    from hravatar.data import load_subject
    from hravatar.gaussians import AvatarConfig, GaussianHead
    from hravatar.gaussians.hair_init import HairInitConfig, add_hair_init

    out = synthesize(SynthConfig(out=tmp_path / "bald", size=32, frames=4, points_per_face=2, env_height=16, seed=1))
    gt = rebuild_gt(out)
    av = GaussianHead.from_head_model(gt["head"], AvatarConfig(points_per_face=1))
    av2, st = add_hair_init(av, gt["head"], load_subject(out, "train"), HairInitConfig(frames=3))
    assert av2 is av and st["points"] == 0


def test_hair_init_triangle_rig(long_subject):
    """The rig-to-mesh ablation binds hair points to their nearest triangle; they still land in the matte."""
    from hravatar.data import load_subject
    from hravatar.gaussians import AvatarConfig, GaussianHead
    from hravatar.gaussians.hair_init import HairInitConfig, add_hair_init
    from hravatar.render.mesh import project

    gt = rebuild_gt(long_subject)
    ds = load_subject(long_subject, "train")
    av = GaussianHead.from_head_model(gt["head"], AvatarConfig(points_per_face=1, rig="triangle"))
    N = av.num_points
    av2, st = add_hair_init(av, gt["head"], ds, HairInitConfig(frames=4))
    assert st["points"] > 200 and av2.params["binding"].shape[0] == av2.num_points
    s = ds[len(ds) - 1]
    d = av2.deform(s.shape[None], s.expression[None], s.pose[None], s.translation[None])
    uv, _ = project(d.means[0, N:].detach().double().numpy(), s.viewmat.double().numpy(), s.K.double().numpy())
    u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    ok = (u >= 0) & (u < SIZE) & (v >= 0) & (v < SIZE)
    assert ok.mean() > 0.7 and (s.mask[..., 0].numpy() > 0.5)[v[ok], u[ok]].mean() > 0.9
