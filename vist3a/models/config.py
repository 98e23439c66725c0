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
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**kwargs)

    @classmethod
    def from_official(cls, config: dict) -> "AnySplatConfig":
        """Read the released `config.json` (PyTorchModelHubMixin dump of encoder_cfg/decoder_cfg)."""
        enc = config.get("encoder_cfg", config)
        if enc.get("pred_head_type", "depth") != "depth":
            raise ValueError(
                f"pred_head_type={enc.get('pred_head_type')!r} is not supported: the released AnySplat uses 'depth'"
            )
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
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(anysplat=anysplat, **kwargs)

    @staticmethod
    def parse_location(location: str) -> int:
        """`enc_blocks_2` -> 2 (the official name of the cut)."""
        prefix = "enc_blocks_"
        if not location.startswith(prefix) or not location[len(prefix):].isdigit():
            raise ValueError(f"stitching location {location!r} is not of the form 'enc_blocks_<N>'")
        return int(location[len(prefix):])
