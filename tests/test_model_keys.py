"""Our modules expose exactly the official state_dict keys and shapes, so released weights load strictly."""

import json

import pytest
import torch

from vist3a.models import AnySplat, AnySplatConfig, StitchConfig, StitchedDecoder


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return json.loads((fixtures_dir / "anysplat_state_dict.json").read_text())


def _keys(model):
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def test_full_anysplat_keys_and_order_match_release(reference):
    with torch.device("meta"):
        model = AnySplat()
    expected = [(k[0], k[1]) for k in reference["anysplat_full"]["keys"]]
    assert _keys(model) == expected
    assert sum(p.numel() for p in model.parameters()) == reference["anysplat_full"]["total_parameters"]


def test_stitched_keys_match_official_stitched_model(reference):
    with torch.device("meta"):
        model = StitchedDecoder()
    expected = [(k[0], k[1]) for k in reference["anysplat_stitched_enc_blocks_2"]["keys"]]
    expected += [("stitching_layer." + k[0], k[1]) for k in reference["stitching_layer"]["keys"]]
    assert _keys(model) == expected


@pytest.mark.parametrize("cut", [1, 5])
def test_cut_location_is_a_parameter(cut):
    cfg = StitchConfig(cut_block=cut, anysplat=AnySplatConfig.tiny(dino_depth=6))
    model = StitchedDecoder(cfg)
    blocks = {k.split(".")[4] for k in model.state_dict() if ".patch_embed.blocks." in k}
    assert len(blocks) == 6 - cut
    assert not any(".patch_embed.patch_embed." in k for k in model.state_dict())


def test_stitch_location_parsing():
    assert StitchConfig.parse_location("enc_blocks_2") == 2
    with pytest.raises(ValueError, match="enc_blocks_<N>"):
        StitchConfig.parse_location("block2")


def test_official_config_json_is_read():
    cfg = AnySplatConfig.from_official(
        {"encoder_cfg": {"gaussian_adapter": {"sh_degree": 4}, "voxel_size": 0.002, "voxelize": True,
                         "pred_head_type": "depth", "intermediate_layer_idx": [4, 11, 17, 23]}}
    )
    assert cfg.sh_degree == 4 and cfg.voxelize and cfg.raw_gs_dim == 83
    with pytest.raises(ValueError, match="pred_head_type"):
        AnySplatConfig.from_official({"encoder_cfg": {"pred_head_type": "point"}})
