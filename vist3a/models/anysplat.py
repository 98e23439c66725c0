"""AnySplat (VGGT aggregator + camera/depth/Gaussian heads) and its stitched variant for Wan latents.

`AnySplat.state_dict()` has exactly the keys of the released `lhjiang/anysplat` model;
`StitchedDecoder.state_dict()` has those of the official `AnySplatStitched` plus `stitching_layer.*`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .aggregator import Aggregator
from .camera_head import CameraHead
from .config import AnySplatConfig, StitchConfig
from .dpt import DPTHead, GaussianParamHead
from .gaussian_adapter import RawGaussians, adapt_gaussians, opacity_from_density, voxelize
from .geometry import pose_encoding_to_extri_intri, unproject_depth


@dataclass
class SplatOutput:
    """Everything one decoder call predicts; tensors are batched [B, ...] except `gaussians`."""

    gaussians: list[RawGaussians]  # one entry per scene (voxelised scenes differ in size)
    pose_enc_list: list[torch.Tensor]  # [B, S, 9] per refinement step: T | quat XYZW | FoV h, w
    extrinsics: torch.Tensor  # camera-to-world [B, S, 4, 4], OpenCV axes
    intrinsics: torch.Tensor  # [B, S, 3, 3] normalised by image width/height
    depth: torch.Tensor  # [B, S, H, W, 1]
    depth_conf: torch.Tensor  # [B, S, H, W]
    points: torch.Tensor  # [B, S, H, W, 3] world points of the depth map
    scene_scale: torch.Tensor
    raw_gs: torch.Tensor | None = None  # [B, S, raw_gs_dim + 1, H, W] Gaussian head output
    captures: dict = field(default_factory=dict)


class AnySplatEncoder(nn.Module):
    """Module `encoder`: everything that has weights. `first_dino_block` > 0 cuts it for stitching."""

    def __init__(self, cfg: AnySplatConfig, first_dino_block: int = 0):
        super().__init__()
        self.cfg = cfg
        self.aggregator = Aggregator(cfg, first_dino_block)
        self.camera_head = CameraHead(cfg)
        self.depth_head = DPTHead(cfg, output_dim=2, hidden=cfg.depth_head_hidden)
        self.gaussian_param_head = GaussianParamHead(cfg)
        # Mixed precision of the official inference: bf16 autocast for the transformer, fp32 heads.
        self.transformer_autocast: torch.dtype | None = None

    def transformer_blocks(self) -> list[nn.Module]:
        """The DINO and aggregator blocks, each run once per pass: the units its progress is counted in."""
        agg = self.aggregator
        return [*agg.patch_embed.blocks, *agg.frame_blocks, *agg.global_blocks]

    def _transformer_context(self, device: torch.device):
        if self.transformer_autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.transformer_autocast)

    def decode(
        self,
        run_dino,
        B: int,
        S: int,
        images01: torch.Tensor,
        *,
        voxelize_output: bool | None = None,
        capture: bool = False,
    ) -> SplatOutput:
        """Shared tail: DINO tokens (from `run_dino()`) -> aggregator -> heads -> Gaussians."""
        cfg = self.cfg
        H, W = images01.shape[-2:]
        grid = (H // cfg.patch_size, W // cfg.patch_size)
        captures: dict = {}
        with self._transformer_context(images01.device):
            dino_out = run_dino()
            if capture:
                captures["patch_embed_norm_out"] = dino_out
            patch_tokens = dino_out[:, 1 + cfg.num_register_tokens :]
            aggregated = self.aggregator(patch_tokens, B, S, grid)
        if capture:
            captures["agg_out"] = aggregated
        with torch.autocast(images01.device.type, enabled=False):
            aggregated = [a.float() for a in aggregated]
            images01 = images01.float()
            start = self.aggregator.patch_start_idx
            pose_list = self.camera_head(aggregated)
            w2c, K = pose_encoding_to_extri_intri(pose_list[-1], (H, W))
            depth, depth_conf = self.depth_head(aggregated, images01, start)
            points = unproject_depth(depth, w2c, K)
            raw = self.gaussian_param_head(aggregated, images01, start)
            gaussians = self.gaussians_from_raw(raw, points, B, voxelize_output, depth_conf)
            scene_scale = points.flatten(2, 3).norm(dim=-1).mean().clip(min=1e-8)
            bottom = torch.tensor([0, 0, 0, 1], dtype=w2c.dtype, device=w2c.device).expand(B, S, 1, 4)
            c2w = torch.linalg.inv(torch.cat((w2c, bottom), dim=2))
            K_norm = torch.stack((K[:, :, 0] / W, K[:, :, 1] / H, K[:, :, 2]), dim=2)
        return SplatOutput(
            gaussians=gaussians,
            pose_enc_list=pose_list,
            extrinsics=c2w,
            intrinsics=K_norm,
            depth=depth,
            depth_conf=depth_conf,
            points=points,
            scene_scale=scene_scale,
            raw_gs=raw,
            captures=captures,
        )

    def gaussians_from_raw(self, raw: torch.Tensor, points: torch.Tensor, B: int, voxelize_output,
                           depth_conf: torch.Tensor | None = None) -> list[RawGaussians]:
        """Gaussian-head output + depth points -> per-scene Gaussians (voxel-fused if asked); the parity
        tool calls it again on the same head outputs to get both variants from one run.

        With ``cfg.render_conf`` (per-pixel path only, as in the official code) only pixels whose depth
        confidence exceeds the ``conf_threshold`` quantile of the whole batch's confidences are kept; with
        ``cfg.opacity_conf`` each kept Gaussian's opacity is scaled by ``sigmoid(conf - that quantile)``.
        The official code supports ``opacity_conf`` for one scene without voxelisation only (other shapes
        do not broadcast there); we apply it per scene, which is the same for one scene.
        """
        cfg = self.cfg
        do_voxelize = cfg.voxelize if voxelize_output is None else voxelize_output
        anchor, conf = raw[:, :, : cfg.raw_gs_dim], raw[:, :, cfg.raw_gs_dim]
        keep, conf_weight = None, None
        if cfg.render_conf or cfg.opacity_conf:
            if depth_conf is None:
                raise ValueError("render_conf/opacity_conf need the depth confidence [B, S, H, W]")
            if cfg.opacity_conf and do_voxelize:
                raise ValueError(
                    "opacity_conf cannot be combined with voxelisation (the official code cannot either: its per-pixel "
                    "weights do not match the fused voxels); turn voxelize off or opacity_conf off"
                )
            threshold = torch.quantile(depth_conf.flatten(0, 1), cfg.conf_threshold)
            if cfg.render_conf:
                keep = depth_conf > threshold
            if cfg.opacity_conf:
                conf_weight = torch.sigmoid(depth_conf - threshold)
        scenes = []
        for b in range(B):
            if do_voxelize:
                pts, feats = voxelize(anchor[b], points[b].permute(0, 3, 1, 2), conf[b], cfg.voxel_size)
                weight = None
            else:
                feats = anchor[b].permute(0, 2, 3, 1).reshape(-1, anchor.shape[2])
                pts = points[b].reshape(-1, 3)
                weight = None if conf_weight is None else conf_weight[b].reshape(-1)
                if keep is not None:
                    mask = keep[b].reshape(-1)
                    feats, pts = feats[mask], pts[mask]
                    weight = None if weight is None else weight[mask]
            opacity = opacity_from_density(feats[:, 0].sigmoid(), cfg.opacity_mapping)
            if weight is not None:
                opacity = opacity * weight
            scenes.append(adapt_gaussians(pts, feats[:, 1:], opacity, cfg.sh_degree))
        return scenes


class AnySplat(nn.Module):
    """The plain AnySplat model: images -> Gaussians + cameras (the "Images to Splats" entry)."""

    def __init__(self, cfg: AnySplatConfig | None = None):
        super().__init__()
        self.cfg = cfg or AnySplatConfig()
        self.encoder = AnySplatEncoder(self.cfg)

    def forward(self, images01: torch.Tensor, **kwargs) -> SplatOutput:
        """images01 [B, S, 3, H, W] in [0, 1], H and W multiples of 14."""
        check_image_size(images01.shape[-2:], self.cfg.patch_size)
        B, S = images01.shape[:2]
        agg = self.encoder.aggregator

        def run_dino():
            # The official entry rounds the images to bf16 before normalising; so do we, for parity.
            x = agg.normalize_images(images01.bfloat16().float()).flatten(0, 1)
            return agg.patch_embed.forward_images(x)

        return self.encoder.decode(run_dino, B, S, images01, **kwargs)


def upsample_latent(z: torch.Tensor, temporal: int = 4) -> torch.Tensor:
    """Wan latent [B, C, T, h, w] -> [B, C, (T-1)*temporal+1, h, w]: trilinear, align_corners=True, as the
    official decoder (and the layer search that fits its stitching conv) upsample time."""
    T, h, w = z.shape[2:]
    return F.interpolate(z, size=[(T - 1) * temporal + 1, h, w], mode="trilinear", align_corners=True)


class StitchedDecoder(nn.Module):
    """Wan latent -> Conv3d stitching layer -> AnySplat from DINO block `cut` on -> Gaussians."""

    def __init__(self, cfg: StitchConfig | None = None):
        super().__init__()
        self.cfg = cfg or StitchConfig()
        a = self.cfg.anysplat
        self.encoder = AnySplatEncoder(a, first_dino_block=self.cfg.cut_block)
        self.stitching_layer = nn.Conv3d(
            self.cfg.latent_channels,
            a.embed_dim,
            kernel_size=self.cfg.kernel,
            stride=self.cfg.stride,
            padding=self.cfg.padding,
            padding_mode="replicate",
        )

    def num_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.cfg.temporal_upsample + 1

    def stitch_tokens(self, z: torch.Tensor, captures: dict | None = None) -> torch.Tensor:
        """Raw Wan latent [B, 16, T, h, w] -> trilinear time upsampling -> conv -> [B, C, F, h/2, w/2]."""
        up = upsample_latent(z, self.cfg.temporal_upsample)
        tokens = self.stitching_layer(up.to(self.stitching_layer.weight.dtype))
        if captures is not None:
            captures["latent_up"], captures["stitch_tokens"] = up, tokens
        return tokens

    def forward_with_latent(self, z: torch.Tensor, context_image: torch.Tensor, **kwargs) -> SplatOutput:
        """z [B, 16, T, h, w] raw Wan-VAE latent; context_image [B, 3, F, H, W] in [-1, 1] (the decoded
        video at the decoder's resolution, F = (T-1)*4+1; its token grid (H/14, W/14) must equal the
        latent's (h/2, w/2))."""
        self.check_inputs(z, context_image)
        a = self.cfg.anysplat
        B, _, S, H, W = context_image.shape
        images01 = (context_image.permute(0, 2, 1, 3, 4) + 1) / 2
        tokens_holder: dict | None = {} if kwargs.get("capture", False) else None

        def run_dino():
            tokens = self.stitch_tokens(z, tokens_holder)
            x = tokens.permute(0, 2, 3, 4, 1).reshape(B * S, -1, tokens.shape[1])
            # The official stitched path passes (width, height) where the RGB path passes (rows, cols).
            return self.encoder.aggregator.patch_embed.forward_tokens(x, (W // a.patch_size, H // a.patch_size))

        out = self.encoder.decode(run_dino, B, S, images01, **kwargs)
        out.captures.update(tokens_holder or {})
        return out

    def check_inputs(self, z: torch.Tensor, context_image: torch.Tensor) -> None:
        a = self.cfg.anysplat
        if z.dim() != 5 or z.shape[1] != self.cfg.latent_channels:
            raise ValueError(
                f"latent must be [B, {self.cfg.latent_channels}, T, h, w] (a Wan 2.1 latent), got {list(z.shape)}"
            )
        if not torch.isfinite(z).all():
            raise ValueError("latent contains NaN or Inf values; re-run the sampler or check its settings")
        if context_image.dim() != 5 or context_image.shape[1] != 3:
            raise ValueError(f"context image must be [B, 3, F, H, W], got {list(context_image.shape)}")
        B, T, h, w = z.shape[0], z.shape[2], z.shape[3], z.shape[4]
        Bc, _, S, H, W = context_image.shape
        check_image_size((H, W), a.patch_size)
        if Bc != B or S != self.num_frames(T):
            raise ValueError(
                f"context image has batch {Bc} and {S} frames but the latent (batch {B}, {T} latent frames) "
                f"needs batch {B} and {self.num_frames(T)} frames"
            )
        sh, sw = self.cfg.stride[1], self.cfg.stride[2]
        if (h // sh, w // sw) != (H // a.patch_size, W // a.patch_size):
            raise ValueError(
                f"latent of {h}x{w} gives a {h // sh}x{w // sw} token grid but the {H}x{W} context image needs "
                f"{H // a.patch_size}x{W // a.patch_size}; use a latent of {2 * (H // a.patch_size)}x"
                f"{2 * (W // a.patch_size)} (e.g. a 512x512 video with a 448x448 context)"
            )


def check_image_size(hw, patch: int) -> None:
    H, W = int(hw[0]), int(hw[1])
    if H % patch or W % patch or H < patch or W < patch:
        raise ValueError(
            f"image size {H}x{W} is not a multiple of the {patch}-pixel patch; use e.g. "
            f"{max(patch, H // patch * patch)}x{max(patch, W // patch * patch)}"
        )
