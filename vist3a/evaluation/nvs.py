"""The official novel-view-synthesis benchmark (`evaluation/novel_view_synthesis_bench/`), for AnySplat and for
the stitched decoder.

Per test sequence (12 indexed frames): the last 4 positions, in reverse order, are the targets; the other 8
are the context, with the last context view repeated once (9 views). Call 1 reconstructs Gaussians from the
context. Call 2 runs the context + targets (13 views) only to predict the target cameras; their translations
are scaled by mean(context translations of call 1) / mean(context translations of call 2) to bring them into
call 1's frame. The Gaussians of call 1 are rendered from the scaled target cameras (near 0.01, far 100,
white background) at the context size. Prediction and ground truth are quantised as the official PNGs
(`images/<seq>/{gt,pred}/000000.png`, also written), then PSNR / SSIM / LPIPS per view, mean per sequence,
mean over sequences.

The stitched decoder sees the Wan VAE encoding of the 512 px frames (a sample of the latent distribution,
seeded here; the official draws from the global RNG) plus the 448 px frames as RGB context.
"""

from __future__ import annotations

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
from ..functional import to_gaussians
from ..render import render_gaussians
from ..render.cameras import denormalize_intrinsics
from .image_metrics import LPIPS, psnr, quantize_like_official, ssim
from .re10k import Re10KTest, Views
from .report import bar_chart, markdown_table, write_json, write_text

NUM_TARGETS = 4
NEAR, FAR = 0.01, 100.0


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

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def predict(self, context01: torch.Tensor, vae01: torch.Tensor):
        dev = self.device
        if self.kind == "anysplat":
            return self.net(context01.to(dev))
        x = (vae01.to(dev).permute(0, 2, 1, 3, 4) * 2 - 1).to(next(self.vae.parameters()).dtype)
        g = torch.Generator(device=dev).manual_seed(self.seed)
        latent = self.vae.encode(x).latent_dist.sample(generator=g).float()
        return self.net.forward_with_latent(latent, context01.to(dev).permute(0, 2, 1, 3, 4) * 2 - 1)


@torch.no_grad()
def render_targets(model: NVSModel, views: Views) -> tuple[torch.Tensor, torch.Tensor, float]:
    """-> (predicted target views [4, 3, H, W], ground truth [4, 3, H, W], scale factor); both in [0, 1]."""
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
    rgb, _, _ = render_gaussians(g, c2w.to(g.means.device), K.to(g.means.device), W, H, background=1.0, near=NEAR, far=FAR)
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
    result = {"model": model.kind, "sequences": len(rows), "overall": overall, "per_sequence": rows,
              "wall_seconds": round(time.perf_counter() - t_start, 3)}
    write_json(out / "nvs_results.json", result)
    _write_csv(out / "_all_samples.csv", rows, ["seq", *keys])  # official file names
    _write_csv(out / "overall-metric.csv", [overall], keys)
    md = f"# NVS ({model.kind}), {len(rows)} sequences\n\n" + markdown_table(["", *keys], [["mean", *overall.values()]])
    md += "\n" + markdown_table(["sequence", *keys], [[r["seq"], *(r[k] for k in keys)] for r in rows])
    write_text(out / "nvs_results.md", md)
    bar_chart([r["seq"] for r in rows], [r["PSNR"] for r in rows], out / "nvs_psnr.png", f"PSNR per scene ({model.kind})")
    return result
