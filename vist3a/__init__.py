"""VIST3A core: text -> Wan 2.1 latent -> stitched AnySplat -> 3D Gaussian splats.

This package never imports ComfyUI, DeepSpeed or GUI code; the nodes, the CLI and the training
backend all build on it.
"""

__version__ = "0.1.0"
