"""The official novel-view-synthesis benchmark (`evaluation/novel_view_synthesis_bench/`), for AnySplat and for
the stitched decoder.

Per test sequence (12 indexed frames): the last 4 positions, in reverse order, are the targets; the other 8
are the context, with the last context view repeated once (9 views). Call 1 reconstructs Gaussians from the
context. Call 2 runs the context + targets (13 views) only to predict the target cameras; their translations
are scaled by mean(context translations of call 1) / mean(context translations of call 2) to bring them into
call 1's frame. The Gaussians of call 1 are rendered from the scaled target cameras at the context size with
the official decoder's settings (white background, near 1e-10, far 1e10, radius clip 0.1: the near 0.01 / far
100 the official script passes are ignored by its decoder; `vist3a.render.settings`). Prediction and ground truth are quantised as the official PNGs
(`images/<seq>/{gt,pred}/000000.png`, also written), then PSNR / SSIM / LPIPS per view, mean per sequence,
mean over sequences.

The stitched decoder sees the Wan VAE encoding of the 512 px frames (a sample of the latent distribution,
seeded here; the official draws from the global RNG) plus the 448 px frames as RGB context.

Precision (`NVSModel.precision`): "fp16" is the official evaluation's: `nvs_eval.py` casts every Linear/Conv2d
outside the heads to bf16 (`cast_to_bfloat16`, VAE included) and runs both model calls under
`torch.cuda.amp.autocast()`, whose default dtype fp16 overrides the outer bf16 autocast; the heads run in fp32.
"bf16" is the bf16 transformer of the official inference; "fp32" is plain float32 (the CPU default).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_save_bytes
from ..decoders import set_precision
from ..errors import VIST3AError
from ..functional import to_gaussians
from ..render import OFFICIAL_RENDER, render_gaussians
from ..render.cameras import denormalize_intrinsics
from .image_metrics import LPIPS, psnr, quantize_like_official, ssim
from .re10k import Re10KTest, Views, to_tensor01
from .report import bar_chart, markdown_table, write_json, write_text

NUM_TARGETS = 4


def split_views(n: int) -> tuple[list[int], list[int]]:
    """(context positions, target positions) of `n` indexed frames, as the official script splits them."""
    targets = list(range(n))[::-1][:NUM_TARGETS]
    return [i for i in range(n) if i not in targets], targets


@dataclass
class NVSModel:
    """`predict(context01 [1, S, 3, c, c], vae01 [1, S, 3, l, l]) -> SplatOutput` for one model kind."""

    kind: str  # "stitched" | "anysplat"
    net: torch.nn.Module
    vae: Optional[torch.nn.Module] = None
    seed: int = 0
    precision: str = "fp32"  # "fp16" (official evaluation), "bf16" or "fp32"; see prepare_precision

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def predict(self, context01: torch.Tensor, vae01: torch.Tensor):
        ctx = (torch.autocast(self.device.type, dtype=torch.float16) if self.precision == "fp16"
               else contextlib.nullcontext())
        with ctx:
            return self._predict(context01, vae01)

    def _predict(self, context01: torch.Tensor, vae01: torch.Tensor):
        dev = self.device
        if self.kind == "anysplat":
            return self.net(context01.to(dev))
        x = (vae01.to(dev).permute(0, 2, 1, 3, 4) * 2 - 1).to(_input_dtype(self.vae))
        g = torch.Generator(device=dev).manual_seed(self.seed)
        latent = self.vae.encode(x).latent_dist.sample(generator=g).float()
        return self.net.forward_with_latent(latent, context01.to(dev).permute(0, 2, 1, 3, 4) * 2 - 1)


def _input_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of the first 3D/2D conv's weight (an official-cast VAE keeps fp32 Conv3d, bf16 Conv2d)."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv3d, torch.nn.Conv2d)):
            return m.weight.dtype
    return next(module.parameters()).dtype


def cast_like_official_eval(module: torch.nn.Module) -> torch.nn.Module:
    """`cast_to_bfloat16` of the official code: Linear and Conv2d weights (and biases) to bf16, except in modules
    whose name contains "head"; everything else (Conv3d, norms, tokens) stays as it is."""
    with torch.no_grad():
        for name, m in module.named_modules():
            if "head" in name.lower() or not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            m.weight.data = m.weight.data.to(torch.bfloat16)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(torch.bfloat16)
    return module


def prepare_precision(model: NVSModel, precision: str) -> NVSModel:
    """Set the model's weights and autocast for ``precision`` (fp16 | bf16 | fp32)."""
    if precision not in ("fp16", "bf16", "fp32"):
        raise ValueError(f"precision must be fp16, bf16 or fp32, got {precision!r}")
    if precision == "fp16":
        cast_like_official_eval(model.net)
        if model.vae is not None:
            cast_like_official_eval(model.vae)
    else:
        set_precision(model.net, precision)
    model.precision = precision
    return model


@torch.no_grad()
def render_targets(model: NVSModel, views: Views, settings=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """-> (predicted target views [4, 3, H, W], ground truth [4, 3, H, W], scale factor); both in [0, 1].
    ``settings``: a :class:`vist3a.render.RenderSettings`, default the official decoder's."""
    settings = OFFICIAL_RENDER if settings is None else settings
    source, targets = split_views(views.context.shape[0])
    ctx, ctx_vae = views.context[source], views.vae[source]
    ctx, ctx_vae = torch.cat([ctx, ctx[-1:]]), torch.cat([ctx_vae, ctx_vae[-1:]])
    n_ctx = ctx.shape[0]
    first = model.predict(ctx[None], ctx_vae[None])
    both = model.predict(torch.cat([ctx, views.context[targets]])[None], torch.cat([ctx_vae, views.vae[targets]])[None])
    scale = first.extrinsics[..., :3, 3].float().mean() / both.extrinsics[:, :n_ctx, :3, 3].float().mean()
    c2w = both.extrinsics[0, n_ctx:].float().clone()
    c2w[:, :3, 3] *= scale
    H, W = views.context.shape[-2:]
    K = denormalize_intrinsics(both.intrinsics[0, n_ctx:].float(), W, H)
    g = to_gaussians(first.gaussians[0])
    rgb, _, _ = render_gaussians(g, c2w.to(g.means.device), K.to(g.means.device), W, H, **settings.kwargs())
    return rgb.permute(0, 3, 1, 2).clamp(0, 1).cpu(), views.context[targets], float(scale)


def _save_png(img01: torch.Tensor, path: Path) -> None:
    arr = (img01.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # already on the 1/255 grid
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_bytes(path, buf.getvalue())


def _write_csv(path: Path, rows: list[dict], keys: list[str]) -> None:
    lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def run_nvs(data: Re10KTest, model: NVSModel, out_dir: str | Path, *, lpips_model: Optional[LPIPS] = None,
            limit: Optional[int] = None, log: Callable[[str], None] = print) -> dict:
    """Run the benchmark over `data` into `out_dir`; returns (and writes) the results. Sequences with a
    `images/<seq>/metrics.json` from an earlier run are reused (resume)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seqs = data.sequences[:limit] if limit else data.sequences
    rows, t_start = [], time.perf_counter()
    for i, seq in enumerate(seqs, 1):
        seq_dir = out / "images" / seq
        done = seq_dir / "metrics.json"
        if done.is_file():
            rows.append(json.loads(done.read_text()))
            continue
        t0 = time.perf_counter()
        pred, gt, scale = render_targets(model, data.views(seq))
        pred, gt = quantize_like_official(pred), quantize_like_official(gt)
        for j in range(pred.shape[0]):
            _save_png(gt[j], seq_dir / "gt" / f"{j:06d}.png")
            _save_png(pred[j], seq_dir / "pred" / f"{j:06d}.png")
        row = {"seq": seq, "PSNR": float(psnr(pred, gt).mean()), "SSIM": float(ssim(pred, gt).mean()),
               "LPIPS": None if lpips_model is None else float(lpips_model(pred.to(next(lpips_model.parameters()).device),
                                                                            gt.to(next(lpips_model.parameters()).device)).mean()),
               "scale_factor": scale, "seconds": round(time.perf_counter() - t0, 3)}
        write_json(done, row)
        rows.append(row)
        lp = "n/a" if row["LPIPS"] is None else f"{row['LPIPS']:.4f}"
        log(f"[nvs] {i}/{len(seqs)} {seq}: PSNR {row['PSNR']:.3f} SSIM {row['SSIM']:.4f} LPIPS {lp} ({row['seconds']:.1f} s)")
    keys = ["PSNR", "SSIM", "LPIPS"]
    overall = {k: (float(np.mean([r[k] for r in rows])) if rows and rows[0][k] is not None else None) for k in keys}
    result = {"model": model.kind, "precision": model.precision, "sequences": len(rows), "overall": overall, "per_sequence": rows,
              "wall_seconds": round(time.perf_counter() - t_start, 3)}
    write_json(out / "nvs_results.json", result)
    _write_csv(out / "_all_samples.csv", rows, ["seq", *keys])  # official file names
    _write_csv(out / "overall-metric.csv", [overall], keys)
    md = f"# NVS ({model.kind}), {len(rows)} sequences\n\n" + markdown_table(["", *keys], [["mean", *overall.values()]])
    md += "\n" + markdown_table(["sequence", *keys], [[r["seq"], *(r[k] for k in keys)] for r in rows])
    write_text(out / "nvs_results.md", md)
    bar_chart([r["seq"] for r in rows], [r["PSNR"] for r in rows], out / "nvs_psnr.png", f"PSNR per scene ({model.kind})")
    return result


def score_image_folders(out_dir: str | Path, *, lpips_model: Optional[LPIPS] = None,
                        log: Callable[[str], None] = print) -> dict:
    """Metrics-only mode, as the official `calculate_metric.py`: every `OUT/images/<seq>/` with `gt/` and `pred/`
    holding `000000.png` .. (as many as `gt/` has files) is scored per image pair (PSNR, SSIM, LPIPS on the PNGs
    read back as [0, 1] tensors), averaged per sequence and then over sequences. Sequences in sorted order (the
    official takes `os.listdir`'s order, which only changes the summation order). Writes the official CSVs and
    `nvs_results.{json,md}`."""
    out = Path(out_dir)
    images = out / "images"
    if not images.is_dir():
        raise VIST3AError(f"{images} does not exist; --metrics-only scores OUTPUT/images/<seq>/{{gt,pred}}/000000.png ... "
                          "(what `eval nvs` or the official nvs_eval.py writes)")
    seqs = sorted(p.name for p in images.iterdir() if (p / "gt").is_dir() and (p / "pred").is_dir())
    if not seqs:
        raise VIST3AError(f"{images} has no <seq>/gt and <seq>/pred folders to score")
    rows, t0 = [], time.perf_counter()
    for seq in seqs:
        pair = []
        for side in ("gt", "pred"):
            folder = images / seq / side
            n = len(list(folder.iterdir())) if side == "gt" else len(pair[0])
            try:
                pair.append(torch.stack([to_tensor01(Image.open(folder / f"{i:06d}.png")) for i in range(n)]))
            except (OSError, ValueError) as exc:
                raise VIST3AError(f"{seq}: cannot read {folder}/{{000000..{n - 1:06d}}}.png ({exc})") from None
        gt, pred = pair
        lp = None
        if lpips_model is not None:
            dev = next(lpips_model.parameters()).device
            lp = float(np.mean([float(lpips_model(p[None].to(dev), g[None].to(dev))) for p, g in zip(pred, gt)]))
        rows.append({"seq": seq, "PSNR": float(np.mean([float(psnr(p[None], g[None])) for p, g in zip(pred, gt)])),
                     "SSIM": float(np.mean([float(ssim(p[None], g[None])) for p, g in zip(pred, gt)])), "LPIPS": lp})
    keys = ["PSNR", "SSIM", "LPIPS"]
    overall = {k: (float(np.mean([r[k] for r in rows])) if rows[0][k] is not None else None) for k in keys}
    result = {"model": "metrics-only", "sequences": len(rows), "overall": overall, "per_sequence": rows,
              "wall_seconds": round(time.perf_counter() - t0, 3)}
    write_json(out / "nvs_results.json", result)
    _write_csv(out / "_all_samples.csv", rows, ["seq", *keys])
    _write_csv(out / "overall-metric.csv", [overall], keys)
    md = f"# NVS metrics of {len(rows)} sequences\n\n" + markdown_table(["", *keys], [["mean", *overall.values()]])
    write_text(out / "nvs_results.md", md + "\n" + markdown_table(["sequence", *keys], [[r["seq"], *(r[k] for k in keys)] for r in rows]))
    log(f"[nvs] scored {len(rows)} sequences from {images}")
    return result
