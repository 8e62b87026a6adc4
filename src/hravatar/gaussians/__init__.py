"""The Gaussian head avatar: initialisation on a head mesh, learnable deformation, densification.

Public API (tensors float32, head-model frame = world: metres, +x subject's left, +y up, +z out
of the face; quaternions w, x, y, z; any device)::

    from hravatar.gaussians import GaussianHead, AvatarConfig, LearningRates, DensifyStrategy, DensifyConfig

    avatar = GaussianHead.from_head_model(head, AvatarConfig())   # head: hravatar.head.HeadModel
    avatar.num_points                                             # N = faces * 8
    avatar.params                                                 # nn.ParameterDict, raw values, first dim N
    g = avatar.deform(shape=None,        # [B,S'] (zero-padded)
                      expression=expr,   # [B,E']
                      pose=pose,         # [B,5,3] axis-angle: global, neck, jaw, eye_l, eye_r
                      translation=t)     # [B,3] metres
    g.means [B,N,3]  g.quats [B,N,4] (unit)  g.scales [B,N,3] (linear)  g.opacities [B,N]
    g.rotmats [B,N,3,3]  g.lbs_transforms [B,N,3,4]  g.canonical_offsets [B,N,3]
    g.normals(camera_centers)            # [B,N,3]: shortest axis, flipped toward [B,3] centres
    avatar.albedo [N,3]  avatar.roughness [N,1]  avatar.f0 [N,1]  avatar.colors [N,3]  (activated)
    avatar.materials() -> {"albedo", "roughness", "f0"}

    # optimisation (the paper's learning rates; frozen attributes are left out)
    opt = avatar.make_optimizer(LearningRates(), scene_scale=s)  # Adam, eps 1e-15, groups named
    avatar.param_groups(lrs, scene_scale, names=None) / avatar.lr_table(lrs, scene_scale)
    position_lr(step, max_steps, lrs, scene_scale)               # decayed xyz lr; the trainer sets
                                                                 # it on the "means" group
    strategy = DensifyStrategy(DensifyConfig(), total_steps=T, scene_scale=s)
    colors, alphas, meta = hravatar.render.rasterize(g.means[0], g.quats[0], g.scales[0], ...)
    strategy.step_pre_backward(meta); loss.backward()
    strategy.step_post_backward(avatar, opt, step, meta, width=W, height=H)  # edits avatar.params
    opt.step(); opt.zero_grad()                                              # and opt's state

    save_gaussians(avatar, "avatar.safetensors"); load_gaussians("avatar.safetensors", device=None)
    export_ply(avatar, "avatar.ply", expression=None, pose=None, colors=None)  # standard 3DGS PLY

Ablations (``AvatarConfig``): ``rig="triangle"`` binds each point to a mesh triangle
(GaussianAvatars style; the head model's own bases and skinning drive the mesh);
``learn_bases=False`` / ``learn_weights=False`` freeze the per-point bases / skinning weights;
the no-PBR ablation renders ``avatar.colors``.

Tests use ``tests/helpers/synthetic_head.py`` (a small ellipsoid head model, no asset needed).
"""

from hravatar.gaussians.deform import DeformedGaussians, gaussian_normals
from hravatar.gaussians.head_avatar import AvatarConfig, GaussianHead, LearningRates, position_lr
from hravatar.gaussians.io import export_ply, load_gaussians, save_gaussians
from hravatar.gaussians.strategy import DensifyConfig, DensifyStrategy, edit_points

__all__ = [
    "AvatarConfig",
    "DeformedGaussians",
    "DensifyConfig",
    "DensifyStrategy",
    "GaussianHead",
    "LearningRates",
    "edit_points",
    "export_ply",
    "gaussian_normals",
    "load_gaussians",
    "position_lr",
    "save_gaussians",
]
