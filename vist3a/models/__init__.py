"""AnySplat, the stitched decoder and their building blocks."""

from .anysplat import AnySplat, AnySplatEncoder, SplatOutput, StitchedDecoder, upsample_latent
from .config import AnySplatConfig, StitchConfig

__all__ = ["AnySplat", "AnySplatEncoder", "AnySplatConfig", "SplatOutput", "StitchConfig", "StitchedDecoder", "upsample_latent"]
