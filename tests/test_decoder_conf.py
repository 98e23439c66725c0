"""render_conf / opacity_conf as the official AnySplat forward does them, and strict config keys.

Expected values are a literal port of the official lines (third_party_model/anysplat/src/model/encoder/
anysplat.py and models/anysplat_stitched.py of gohyojun15/VIST3A @ 32253c3), applied to the head outputs
of the same run with the options off.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vist3a.models import AnySplatConfig, StitchConfig
from vist3a.tiny import build_tiny_anysplat, build_tiny_decoder, random_latent

RELEASE_ENCODER_CFG = {  # the released config's encoder_cfg (as in tests/fixtures/parity_*.json)
    "name": "anysplat", "anchor_feat_dim": 128, "voxel_size": 0.002, "n_offsets": 2, "d_feature": 32, "add_view": False,
    "num_monocular_samples": 32, "backbone": {"name": "croco"}, "visualizer": {"num_samples": 8},
    "gaussian_adapter": {"gaussian_scale_min": 0.5, "gaussian_scale_max": 15.0, "sh_degree": 4},
    "apply_bounds_shim": True, "opacity_mapping": {"initial": 0.0, "final": 0.0, "warm_up": 1}, "gaussians_per_pixel": 1,
    "num_surfaces": 1, "gs_params_head_type": "dpt_gs", "input_mean": [0.5] * 3, "input_std": [0.5] * 3,
    "pretrained_weights": "", "pose_free": True, "pred_pose": True, "gt_pose_to_pts": False, "gs_prune": False,
    "opacity_threshold": 0.001, "gs_keep_ratio": 1.0, "pred_head_type": "depth", "freeze_backbone": False,
    "freeze_module": "patch_embed", "distill": False, "render_conf": False, "opacity_conf": False,
    "conf_threshold": 0.1, "intermediate_layer_idx": [4, 11, 17, 23], "voxelize": True,
}


@pytest.fixture(scope="module")
def run():
    model = build_tiny_anysplat(seed=3)
    images = torch.rand(1, 3, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(images, voxelize_output=False)
    return model, images, base


def _with(model, **options):
    model.encoder.cfg = replace(model.encoder.cfg, **options)
    return model


def _official(base, cfg, render_conf, opacity_conf):
    """The official per-pixel branch, line by line, for batch 1."""
    depth_conf, raw, pts_all = base.depth_conf, base.raw_gs, base.points
    anchor_feats = raw[:, :, : cfg.raw_gs_dim]
    if render_conf:
        conf_valid = torch.quantile(depth_conf.flatten(0, 1), cfg.conf_threshold)
        conf_valid_mask = depth_conf > conf_valid
    else:
        conf_valid_mask = torch.ones_like(depth_conf, dtype=torch.bool)
    neural_feats = anchor_feats[0].permute(0, 2, 3, 1)[conf_valid_mask[0]].unsqueeze(0)
    neural_pts = pts_all[0][conf_valid_mask[0]].unsqueeze(0)
    opacity = neural_feats[..., 0].sigmoid()  # map_pdf_to_opacity with the released mapping {0, 0, 1}
    if opacity_conf:
        shift = torch.quantile(depth_conf, cfg.conf_threshold)
        opacity = opacity * torch.sigmoid(depth_conf - shift)[conf_valid_mask].unsqueeze(0)
    return neural_pts[0], opacity[0], neural_feats[0]


@pytest.mark.parametrize("render_conf, opacity_conf", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("threshold", [0.1, 0.5])
def test_conf_options_follow_the_official_code(run, render_conf, opacity_conf, threshold):
    model, images, base = run
    cfg = model.encoder.cfg
    try:
        _with(model, render_conf=render_conf, opacity_conf=opacity_conf, conf_threshold=threshold)
        with torch.no_grad():
            out = model(images, voxelize_output=False)
    finally:
        model.encoder.cfg = cfg
    pts, opacity, feats = _official(base, replace(cfg, conf_threshold=threshold), render_conf, opacity_conf)
    g = out.gaussians[0]
    n_all = base.depth_conf.numel()
    if render_conf:  # a quantile threshold keeps about (1 - q) of the pixels
        assert abs(g.means.shape[0] - (1 - threshold) * n_all) <= 2
    else:
        assert g.means.shape[0] == n_all
    assert torch.equal(g.means, pts)
    torch.testing.assert_close(g.opacities, opacity, rtol=1e-6, atol=0)
    if opacity_conf:  # really scaled, not the plain sigmoid
        assert not torch.allclose(g.opacities, feats[:, 0].sigmoid())


def test_render_conf_leaves_voxelised_output_alone_and_opacity_conf_refuses_it(run):
    model, images, _ = run
    cfg = model.encoder.cfg
    try:
        with torch.no_grad():
            plain = model(images, voxelize_output=True).gaussians[0]
            _with(model, render_conf=True)
            masked = model(images, voxelize_output=True).gaussians[0]  # official: the mask is unused there
            _with(model, opacity_conf=True)
            with pytest.raises(ValueError, match="opacity_conf cannot be combined with voxel"):
                model(images, voxelize_output=True)
    finally:
        model.encoder.cfg = cfg
    assert torch.equal(plain.means, masked.means) and torch.equal(plain.opacities, masked.opacities)


def test_stitched_decoder_applies_render_conf():
    decoder = build_tiny_decoder(seed=1)
    z = random_latent(seed=2)
    ctx = torch.rand(1, 3, 5, 56, 56, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        full = decoder.forward_with_latent(z, ctx, voxelize_output=False)
        decoder.encoder.cfg = replace(decoder.encoder.cfg, render_conf=True, conf_threshold=0.25)
        kept = decoder.forward_with_latent(z, ctx, voxelize_output=False)
    mask = (full.depth_conf > torch.quantile(full.depth_conf.flatten(0, 1), 0.25))[0].reshape(-1)
    assert torch.equal(kept.gaussians[0].means, full.gaussians[0].means[mask])


def test_release_config_is_read_with_conf_keys():
    cfg = AnySplatConfig.from_official({"encoder_cfg": RELEASE_ENCODER_CFG, "decoder_cfg": {"name": "splatting_cuda"}})
    assert (cfg.render_conf, cfg.opacity_conf, cfg.conf_threshold, cfg.voxelize) == (False, False, 0.1, True)
    on = AnySplatConfig.from_official({"encoder_cfg": {**RELEASE_ENCODER_CFG, "render_conf": True, "opacity_conf": True,
                                                       "conf_threshold": 0.3}})
    assert (on.render_conf, on.opacity_conf, on.conf_threshold) == (True, True, 0.3)
    assert AnySplatConfig.from_dict(on.to_dict()) == on


@pytest.mark.parametrize("change, needle", [
    ({"new_trick": True}, "new_trick"),
    ({"gaussian_adapter": {"sh_degree": 4, "scale_bias": 1.0}}, "gaussian_adapter.scale_bias"),
    ({"opacity_mapping": {"initial": 0.0, "final": 0.0, "warm_up": 1, "power": 2}}, "opacity_mapping.power"),
    ({"pose_free": False}, "pose_free"),
    ({"gaussians_per_pixel": 2}, "gaussians_per_pixel"),
    ({"conf_threshold": 1.5}, "conf_threshold"),
])
def test_unimplemented_config_is_an_error(change, needle):
    with pytest.raises(ValueError, match=needle):
        AnySplatConfig.from_official({"encoder_cfg": {**RELEASE_ENCODER_CFG, **change}})


def test_unknown_architecture_keys_are_errors():
    with pytest.raises(ValueError, match="future_option"):
        AnySplatConfig.from_dict({**AnySplatConfig.tiny().to_dict(), "future_option": 1})
    with pytest.raises(ValueError, match="dilation"):
        StitchConfig.from_dict({**StitchConfig().to_dict(), "dilation": [1, 1, 1]})
