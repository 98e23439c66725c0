"""Architecture of AnySplat (VGGT aggregator + heads) and of the stitching layer.

The defaults are the released `lhjiang/anysplat` model (448x448 multi-dataset run); `tiny()` keeps
every module and key name at toy sizes for tests and the offline demo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


@dataclass(frozen=True)
class AnySplatConfig:
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    pos_embed_grid: int = 37  # DINOv2 pos_embed is trained on 518/14 = 37x37 patches
    num_register_tokens: int = 4
    dino_depth: int = 24
    aa_depth: int = 24  # frame/global alternating-attention blocks
    rope_freq: float = 100.0
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    depth_head_hidden: int = 32
    intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23)
    dpt_frames_chunk: int = 8  # heads process frames in chunks of 8, like the official code
    sh_degree: int = 4
    voxel_size: float = 0.002
    voxelize: bool = True
    opacity_mapping: tuple[float, float, int] = (0.0, 0.0, 1)  # initial, final, warm_up
    # Official confidence options (off in the release): keep only pixels whose depth confidence is above its
    # `conf_threshold` quantile (per-pixel path only) / scale opacity by sigmoid(conf - that quantile).
    render_conf: bool = False
    opacity_conf: bool = False
    conf_threshold: float = 0.1

    @property
    def head_dim_in(self) -> int:
        return 2 * self.embed_dim

    @property
    def d_sh(self) -> int:
        return (self.sh_degree + 1) ** 2

    @property
    def raw_gs_dim(self) -> int:
        """Density + scale(3) + rotation(4) + SH(3*d_sh): the Gaussian head's channels before conf."""
        return 1 + 7 + 3 * self.d_sh

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AnySplatConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"architecture keys {unknown} are not implemented by this version of vist3a "
                             f"(known: {sorted(known)}); update vist3a or remove them")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kwargs)

    @classmethod
    def from_official(cls, config: dict) -> "AnySplatConfig":
        """Read the released `config.json` (PyTorchModelHubMixin dump of encoder_cfg/decoder_cfg)."""
        enc = config.get("encoder_cfg", {k: v for k, v in config.items() if k not in ("architecture", "decoder_cfg")})
        if enc.get("pred_head_type", "depth") != "depth":
            raise ValueError(
                f"pred_head_type={enc.get('pred_head_type')!r} is not supported: the released AnySplat uses 'depth'"
            )
        check_official_encoder_cfg(enc)
        ga = enc.get("gaussian_adapter", {})
        om = enc.get("opacity_mapping", {})
        # Not in the release: our tiny test models and exports may state their dimensions here.
        base = cls.from_dict(config["architecture"]) if "architecture" in config else cls()
        return replace(
            base,
            sh_degree=int(ga.get("sh_degree", base.sh_degree)),
            voxel_size=float(enc.get("voxel_size", base.voxel_size)),
            voxelize=bool(enc.get("voxelize", base.voxelize)),
            intermediate_layer_idx=tuple(enc.get("intermediate_layer_idx") or base.intermediate_layer_idx),
            opacity_mapping=(
                float(om.get("initial", 0.0)),
                float(om.get("final", 0.0)),
                int(om.get("warm_up", 1)),
            ),
            render_conf=bool(enc.get("render_conf", False)),
            opacity_conf=bool(enc.get("opacity_conf", False)),
            conf_threshold=float(enc.get("conf_threshold", 0.1)),
        )

    @classmethod
    def tiny(cls, **overrides) -> "AnySplatConfig":
        base = dict(
            embed_dim=64,
            num_heads=4,
            pos_embed_grid=8,
            dino_depth=4,
            aa_depth=4,
            camera_trunk_depth=1,
            camera_num_heads=4,
            dpt_features=16,
            dpt_out_channels=(8, 16, 32, 32),
            depth_head_hidden=8,
            intermediate_layer_idx=(0, 1, 2, 3),
        )
        base.update(overrides)
        return cls(**base)


# Every key of the official `encoder_cfg` (EncoderAnySplatCfg), sorted by how we treat it; a key in none of
# these sets, or a required value we do not implement, is an error instead of being silently ignored.
OFFICIAL_IMPLEMENTED = {"voxel_size", "voxelize", "gaussian_adapter", "opacity_mapping", "intermediate_layer_idx",
                        "pred_head_type", "render_conf", "opacity_conf", "conf_threshold"}
# Only this value exists in our code (the released model's); others change the architecture or the maths.
OFFICIAL_REQUIRED = {"pose_free": True, "gs_params_head_type": "dpt_gs", "gaussians_per_pixel": 1, "num_surfaces": 1}
# Not read on the inference path of the official code: training/data options, unused legacy fields,
# commented-out pruning (gs_prune & co.), the distillation copy that AnySplat.inference switches off.
OFFICIAL_INERT = {"name", "anchor_feat_dim", "n_offsets", "d_feature", "add_view", "num_monocular_samples", "backbone",
                  "visualizer", "apply_bounds_shim", "input_mean", "input_std", "pretrained_weights", "pred_pose",
                  "gt_pose_to_pts", "gs_prune", "opacity_threshold", "gs_keep_ratio", "freeze_backbone",
                  "freeze_module", "distill"}
OFFICIAL_ADAPTER_KEYS = {"sh_degree", "gaussian_scale_min", "gaussian_scale_max"}  # min/max: unused when pose_free
OFFICIAL_OPACITY_KEYS = {"initial", "final", "warm_up"}


def check_official_encoder_cfg(enc: dict) -> None:
    """Refuse official config keys/values this implementation does not reproduce (one line: which, why, what to do)."""
    unknown = sorted(set(enc) - OFFICIAL_IMPLEMENTED - set(OFFICIAL_REQUIRED) - OFFICIAL_INERT)
    unknown += [f"gaussian_adapter.{k}" for k in sorted(set(enc.get("gaussian_adapter") or {}) - OFFICIAL_ADAPTER_KEYS)]
    unknown += [f"opacity_mapping.{k}" for k in sorted(set(enc.get("opacity_mapping") or {}) - OFFICIAL_OPACITY_KEYS)]
    if unknown:
        raise ValueError(f"AnySplat config keys {unknown} are not implemented by vist3a; this config is not the released "
                         f"AnySplat's, so its outputs could not be reproduced (remove the keys or update vist3a)")
    for key, value in OFFICIAL_REQUIRED.items():
        if key in enc and enc[key] != value:
            raise ValueError(f"AnySplat config {key}={enc[key]!r} is not implemented by vist3a (only {value!r}, as released)")
    q = enc.get("conf_threshold", 0.1)
    if not isinstance(q, (int, float)) or not 0.0 <= float(q) <= 1.0:
        raise ValueError(f"AnySplat config conf_threshold={q!r} must be a quantile between 0 and 1")


@dataclass(frozen=True)
class StitchConfig:
    """Where AnySplat is cut and the Conv3d that maps Wan latents onto its tokens there."""

    cut_block: int = 2  # `enc_blocks_2`: DINO blocks 0..cut-1 are removed
    latent_channels: int = 16
    kernel: tuple[int, int, int] = (5, 3, 3)
    stride: tuple[int, int, int] = (1, 2, 2)
    padding: tuple[int, int, int] = (2, 1, 1)
    temporal_upsample: int = 4  # Wan VAE: T latent frames -> (T-1)*4+1 video frames
    anysplat: AnySplatConfig = field(default_factory=AnySplatConfig)

    @property
    def location(self) -> str:
        return f"enc_blocks_{self.cut_block}"

    def context_size(self, latent_hw) -> tuple[int, int]:
        """The RGB context (H, W) whose token grid equals the stitched latent's: 64x64 latent -> 448x448."""
        patch = self.anysplat.patch_size
        return (int(latent_hw[0]) // self.stride[1] * patch, int(latent_hw[1]) // self.stride[2] * patch)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StitchConfig":
        data = dict(data)
        anysplat = AnySplatConfig.from_dict(data.pop("anysplat", {}))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"stitching architecture keys {unknown} are not implemented by this version of vist3a "
                             f"(known: {sorted(known)}); update vist3a or remove them")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(anysplat=anysplat, **kwargs)

    @staticmethod
    def parse_location(location: str) -> int:
        """`enc_blocks_2` -> 2 (the official name of the cut)."""
        prefix = "enc_blocks_"
        if not location.startswith(prefix) or not location[len(prefix):].isdigit():
            raise ValueError(f"stitching location {location!r} is not of the form 'enc_blocks_<N>'")
        return int(location[len(prefix):])
