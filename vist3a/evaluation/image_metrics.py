"""PSNR, SSIM and LPIPS exactly as the official NVS benchmark computes them (AnySplat's `evaluation/metrics.py`).

- PSNR: images clipped to [0, 1], MSE over channels and pixels, -10 log10(MSE).
- SSIM: scikit-image's `structural_similarity(win_size=11, gaussian_weights=True, channel_axis=0,
  data_range=1)`: Gaussian window sigma 1.5 (truncated at 3.5 sigma = 11 taps), covariances scaled by 121/120
  (scikit-image's default `use_sample_covariance=True`, which the official call does not turn off),
  K1 0.01 / K2 0.03, the filtered maps mirrored at the border ("symmetric" padding) and averaged after
  cropping 5 pixels on each side; channels averaged. Reimplemented in torch (float64), no scikit-image needed.
- LPIPS v0.1 with the VGG16 backbone, inputs in [0, 1] mapped to [-1, 1] (`normalize=True`). Weights are
  never downloaded: the torchvision VGG16 state dict and the LPIPS linear layers come from local files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VIST3AError
from ..weights.readers import read_weights_file


@torch.no_grad()
def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [0, 1] -> [B]."""
    mse = ((gt.clip(0, 1) - pred.clip(0, 1)) ** 2).flatten(1).mean(1)
    return -10 * mse.log10()


def _gaussian_taps(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    # scipy.ndimage.gaussian_filter: radius = int(truncate * sigma + 0.5), normalised taps
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable filter of [N, H, W] with scipy's 'reflect' border (= numpy/torch 'symmetric')."""
    r = taps.numel() // 2
    n, h, w = x.shape
    # symmetric padding (edge sample repeated), built by index so it works for any size >= 1
    def sym_index(size: int) -> torch.Tensor:
        i = torch.arange(-r, size + r)
        period = 2 * size
        i = torch.remainder(i, period)
        return torch.where(i >= size, period - 1 - i, i)

    x = x[:, sym_index(h)][:, :, sym_index(w)]
    x = F.conv2d(x[:, None], taps.view(1, 1, -1, 1).to(x))  # vertical
    x = F.conv2d(x, taps.view(1, 1, 1, -1).to(x))  # horizontal
    return x[:, 0]


@torch.no_grad()
def ssim(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """[B, C, H, W] -> [B], as scikit-image with the official arguments (needs H, W >= 11)."""
    if min(pred.shape[-2:]) < 11:
        raise ValueError(f"SSIM with an 11-pixel window needs images of at least 11x11, got {list(pred.shape[-2:])}")
    B, C, H, W = pred.shape
    x = pred.double().reshape(B * C, H, W)
    y = gt.double().reshape(B * C, H, W)
    taps = _gaussian_taps()
    ux, uy = _filter(x, taps), _filter(y, taps)
    uxx, uyy, uxy = _filter(x * x, taps), _filter(y * y, taps), _filter(x * y, taps)
    # scikit-image's default use_sample_covariance=True (the official call keeps it): N / (N - 1), N = 11 * 11
    cov_norm = 121 / 120
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (11 - 1) // 2
    per_channel = s[:, pad:H - pad, pad:W - pad].reshape(B, C, -1).mean(-1)
    return per_channel.mean(1).to(pred.dtype)


# -------------------------------------------------------------------------------------------------- LPIPS

_VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16().features
_VGG_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """LPIPS v0.1 (VGG16): per-layer unit-normalised features, squared differences weighted by 1x1 convs,
    averaged over space, summed over layers."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import vgg16

        self.features = vgg16(weights=None).features[: _VGG_TAPS[-1] + 1].eval()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _VGG_CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG_TAPS:
                out.append(x)
        return out

    @torch.no_grad()
    def forward(self, pred01: torch.Tensor, gt01: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B]."""
        a = ((pred01 * 2 - 1) - self.shift) / self.scale
        b = ((gt01 * 2 - 1) - self.shift) / self.scale
        total = 0
        for fa, fb, lin in zip(self._taps(a), self._taps(b), self.lins):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fa - fb) ** 2).mean((2, 3), keepdim=True)
        return total[:, 0, 0, 0]


def read_weights_for(path: Path, flag: str) -> dict:
    """The tensors of a metric's local weights file, or one line naming the flag and the file."""
    if not path.is_file():
        raise VIST3AError(f"{flag} {path} does not exist; give the local file (nothing is downloaded)")
    try:
        return read_weights_file(path)
    except (VIST3AError, OSError) as exc:
        raise VIST3AError(f"{flag} {path} could not be read as a weights file ({str(exc).splitlines()[0]})") from None


def packaged_lpips_linear() -> Optional[Path]:
    """The LPIPS linear weights that the `lpips` PyPI package ships inside itself (no download)."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth"
    return path if path.is_file() else None


def load_lpips(vgg: str | Path | None, lin: str | Path | None = None, device="cpu") -> LPIPS:
    """`vgg`: torchvision's vgg16 state dict (vgg16-397923af.pth; keys `features.N.*`, other keys ignored);
    `lin`: LPIPS v0.1 `vgg.pth` (keys `linN.model.1.weight`; default: the copy inside the `lpips` package)."""
    if vgg is None:
        raise VIST3AError("LPIPS needs the VGG16 weights: pass --lpips-vgg PATH to torchvision's vgg16-397923af.pth "
                          "(from ~/.cache/torch/hub/checkpoints on a machine that has it), or --no-lpips")
    if lin is None:
        lin = packaged_lpips_linear()
        if lin is None:
            raise VIST3AError("LPIPS needs its linear layers: pass --lpips-lin PATH to LPIPS v0.1 vgg.pth "
                              "(pip install lpips ships it), or --no-lpips")
    model = LPIPS()
    sd = read_weights_for(Path(vgg), "--lpips-vgg")
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    missing = [k for k in model.features.state_dict() if k not in feats]
    if missing:
        raise VIST3AError(f"--lpips-vgg {vgg} is not a torchvision vgg16 state dict: no features.{missing[0]}")
    model.features.load_state_dict({k: feats[k] for k in model.features.state_dict()})
    lsd = read_weights_for(Path(lin), "--lpips-lin")
    for i, conv in enumerate(model.lins):
        key = f"lin{i}.model.1.weight"
        if key not in lsd or tuple(lsd[key].shape) != tuple(conv.weight.shape):
            raise VIST3AError(f"--lpips-lin {lin} is not LPIPS v0.1 vgg.pth: {key} missing or of another shape")
        conv.weight.data.copy_(lsd[key])
    return model.to(device).eval()


def quantize_like_official(images01: torch.Tensor) -> torch.Tensor:
    """What saving a PNG with AnySplat's `save_image` and reading it back does: float32 `x.clip(0, 1) * 255`
    truncated to uint8, then /255. (Truncation, not rounding: it can lower a level by one.)"""
    return (images01.float().clip(0, 1) * 255).to(torch.uint8).float() / 255


__all__ = ["psnr", "ssim", "LPIPS", "load_lpips", "packaged_lpips_linear", "quantize_like_official"]
