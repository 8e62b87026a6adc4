"""The WebGL2 viewer in a real browser (headless Chromium, software WebGL2): it loads a tiny trained
avatar's bundle without errors, matches the Python renderer, and its jaw slider acts only on the mouth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.tiny_subject import make_tiny_subject, train_tiny_avatar
from helpers.web_browser import Page, browser, chromium_path, psnr, python_render, serve_bundle
from hravatar.apps.common import load_environment
from hravatar.apps.render import orbit_viewmats
from hravatar.apps.web_bundle import background_equirect, build_bundle
from hravatar.avatar import FrameParams, load_avatar
from hravatar.io.envmap import write_envmap
from hravatar.shading.envmap_tools import background_image

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 96


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    """(loaded avatar, env light, page) with one browser for the module."""
    chromium_path()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("web")
    subj = make_tiny_subject(root / "subj", size=48, frames=8)
    av = root / "av"
    train_tiny_avatar(subj, av, 20, warmup_steps=2, points_per_face=2)
    h, w = 16, 32
    yy, xx = np.mgrid[0:h, 0:w]
    env = np.zeros((h, w, 3), np.float32) + 0.1
    env[(np.abs(yy - 6) < 3) & (np.abs(xx - 12) < 3)] = [30.0, 12.0, 4.0]  # one warm light, front left
    la = load_avatar(av, "cpu")
    # the synthetic head's random pose correctives move every point a little with the jaw; without the
    # jaw's columns the jaw acts exactly where its skinning weights are (a clean region to test)
    la.gaussians.params["posedirs"].data[:, :, 9:18] = 0
    light = load_environment(write_envmap(root / "light.hdr", env), la)
    bundle = build_bundle(la, [("light.hdr", light)])
    with serve_bundle(bundle) as url, browser() as br:
        page = Page(br, url)
        yield la, light, page
    torch.set_num_threads(n)


def test_page_loads_bundle_without_errors(viewer):
    la, _, page = viewer
    assert page.ready, page.page.evaluate("window.hravatar.errors")
    assert page.console_errors == []
    h = page.page.evaluate("window.hravatar.header")
    assert h["num_points"] == la.gaussians.num_points
    assert [x["name"] for x in h["lights"]] == ["learned light", "light.hdr"]
    # the UI was built: a slider per expression, the light choice, the FPS counter shows a frame time
    assert page.page.locator("input[id^=sl_expr_]").count() == la.gaussians.num_expr
    page.page.wait_for_function("document.getElementById('fps').textContent.includes('ms/frame')", timeout=20000)


def _cases(la):
    p0 = la.reference.params
    g = torch.Generator().manual_seed(3)
    p1 = p0.clone()
    p1.expression = p1.expression + 1.2 * torch.randn(p1.expression.shape, generator=g)
    p1.pose[0, 2, 0] += 0.25  # jaw
    p1.pose[0, 0, 1] += 0.3  # head yaw
    p1.pose[0, 1, 0] += 0.1  # neck
    cam = la.camera(SIZE)
    center = la.head_center()
    cam_orbit = cam.with_viewmat(orbit_viewmats(cam.viewmat, center, np.array([35.0]), 10.0)[0])
    return p0, p1, cam, cam_orbit


@pytest.mark.parametrize("case", ["reference", "expression", "environment", "backdrop", "f0"])
def test_browser_frame_matches_python(viewer, case):
    la, light, page = viewer
    p0, p1, cam, cam_orbit = _cases(la)
    if case == "reference":
        web, ref = page.render(p0, cam), python_render(la, p0, cam)
    elif case == "expression":
        web, ref = page.render(p1, cam_orbit), python_render(la, p1, cam_orbit)
    elif case == "environment":
        light.rotation = 60.0
        try:
            web = page.render(p1, cam, {"light": 1, "lightRotation": 60.0})
            ref = python_render(la, p1, cam, lighting=light)
        finally:
            light.rotation = 0.0
    elif case == "backdrop":
        # the HDR map's own image behind the avatar (as `hravatar relight` draws it), rotated
        eq = background_equirect(light)
        assert eq is not None and eq.shape[0] == light.equirect.shape[0]  # a small map is kept as it is
        bg = background_image(eq, cam_orbit.viewmat[None], cam_orbit.K[None], cam_orbit.height, cam_orbit.width,
                              -45.0, light.exposure)
        web = page.render(p0, cam_orbit, {"light": 1, "lightRotation": -45.0, "envBackground": True})
        light.rotation = -45.0
        try:
            ref = python_render(la, p0, cam_orbit, lighting=light, background=bg)
        finally:
            light.rotation = 0.0
        # the backdrop is the map's image, not the light's sharpest prefiltered cube map (the old one)
        cube = page.render(p0, cam_orbit, {"light": 1, "lightRotation": -45.0, "envBackground": True,
                                           "cubeBackground": True})
        print(f"web vs python, backdrop from the cube map: PSNR {psnr(cube, ref):.1f} dB")
        assert psnr(cube, ref) < psnr(web, ref) - 3
    else:
        web = page.render(p0, cam_orbit, {"f0Scale": 5.0})
        ref = python_render(la, p0, cam_orbit, f0_scale=5.0)
        base = python_render(la, p0, cam_orbit)
        assert psnr(ref, base) < 45  # the edit is visible
    fg = (ref.max(-1) > 8).mean()
    assert fg > 0.15, "the avatar covers a good part of the frame"
    print(f"web vs python, {case}: PSNR {psnr(web, ref):.1f} dB")
    assert psnr(web, ref) >= 30.0, f"{case}: PSNR {psnr(web, ref):.1f} dB"


def test_environment_and_expression_change_the_image(viewer):
    """The parity cases are not the same image (each control really acts)."""
    la, _, page = viewer
    p0, p1, cam, _ = _cases(la)
    a = page.render(p0, cam)
    assert psnr(a, page.render(p1, cam)) < 30
    assert psnr(a, page.render(p0, cam, {"light": 1})) < 30


def _moving_region(la, p0: FrameParams, p1: FrameParams, cam) -> np.ndarray:
    """Pixels that any Gaussian moved between ``p0`` and ``p1`` can touch (3-sigma discs, both poses)."""
    g0 = la.gaussians.deform(p0.shape, p0.expression, p0.pose, p0.translation)
    g1 = la.gaussians.deform(p1.shape, p1.expression, p1.pose, p1.translation)
    moved = (g1.means[0] - g0.means[0]).norm(dim=-1) > 1e-5
    mask = np.zeros((cam.height, cam.width), bool)
    yy, xx = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    R, t, K = cam.viewmat[:3, :3], cam.viewmat[:3, 3], cam.K
    for g in (g0, g1):
        m = g.means[0][moved]
        pc = m @ R.T + t
        uv = (pc @ K.T)[:, :2] / pc[:, 2:]
        rad = 3.33 * g.scales[0][moved].max(-1).values * K[0, 0] / pc[:, 2] + 2.0
        for (u, v), r in zip(uv.tolist(), rad.tolist(), strict=True):
            mask |= (xx - u) ** 2 + (yy - v) ** 2 <= r * r
    return mask


def test_jaw_slider_changes_only_the_mouth(viewer):
    la, _, page = viewer
    pg = page.page
    pg.evaluate("s => window.hravatar.set({size: s, background: [0, 0, 0]})", SIZE)
    cam = la.camera(SIZE)
    before = page.draw(cam.height, cam.width)
    move = "v => { const s = document.getElementById('sl_jaw'); s.value = v; s.dispatchEvent(new Event('input')); }"
    pg.evaluate(move, "0.35")  # as a drag of the slider does
    # the page's own loop redraws (its depth sort in a worker, a second redraw when it arrives)
    pg.wait_for_timeout(1500)
    looped = page.read(cam.height, cam.width)
    assert pg.evaluate("!!window.hravatar.renderer.worker"), "the sort worker is running"
    # the loop read the posed centres back without a stall (pixel-pack buffer + fence), and its last
    # order is that of the current deformation and view
    assert pg.evaluate("window.hravatar.renderer.asyncReads") >= 1
    assert pg.evaluate("(r => r.sortedKey.startsWith(r._deformedKey + '|'))(window.hravatar.renderer)")
    after = page.draw(cam.height, cam.width)
    assert psnr(looped, after) >= 40, "the interactive redraw (worker sort) equals a synchronous one"
    p0 = la.reference.params
    p1 = p0.clone()
    p1.pose[0, 2, 0] += 0.35
    region = _moving_region(la, p0, p1, cam)
    changed = np.abs(after.astype(int) - before.astype(int)).max(-1) > 2
    assert changed.sum() >= 30, "the jaw slider changed the image"
    assert region.mean() < 0.6, "the jaw acts on part of the head only"
    outside = changed & ~region
    assert outside.sum() == 0, f"{outside.sum()} pixels changed away from the jaw"
    # the page applied what Python applies
    assert psnr(after, python_render(la, p1, cam)) >= 30
    pg.evaluate(move, "0")


def test_frame_time_reported(viewer):
    _, _, page = viewer
    ms = page.page.evaluate("window.hravatar.frameMs")
    assert ms is not None and math.isfinite(ms) and ms > 0


def test_sequence_playback_frame_matches_python(viewer):
    """The page's sequence (the tracked frames with the encoder's expressions) is what Python renders."""
    la, _, page = viewer
    pg = page.page
    n = pg.evaluate("window.hravatar.header.sequence.frames")
    ds = la.subject("all")
    assert n == len(ds)
    k = n // 2
    cam = la.camera(SIZE)
    pg.evaluate("s => window.hravatar.set(s)", {"size": SIZE, "background": [0, 0, 0], "frame": k, "jaw": 0,
                                                 "azimuth": 0, "elevation": 0})
    web = page.draw(cam.height, cam.width)
    ref = python_render(la, la.frame_params(la.frame(ds, k)), cam)
    assert psnr(web, ref) >= 30.0
    assert psnr(web, python_render(la, la.reference.params, cam)) < 30  # another frame than the reference
    pg.evaluate("window.hravatar.set({frame: -1})")
