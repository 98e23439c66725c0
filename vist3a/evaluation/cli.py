"""`python -m vist3a eval {nvs, gen}`: argument parsing and model loading for the benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import VIST3AError


def _device(name: str | None):
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _load_vae(path: str, device):
    import torch

    from ..wan.loading import load_vae_file, load_wan_diffusers

    p = Path(path)
    if not p.exists():
        raise VIST3AError(f"--vae {p} does not exist; give wan_2.1_vae.safetensors or a Wan2.1-T2V-*-Diffusers folder")
    if p.is_dir():
        return load_wan_diffusers(p, vae_dtype=torch.float32, device=device, components=("vae",)).vae.eval()
    return load_vae_file(p, dtype=torch.float32, device=device).eval()


def build_nvs_model(args):
    from .nvs import NVSModel

    device = _device(args.device)
    if args.model == "anysplat":
        if args.anysplat:
            from ..decoders import load_anysplat

            net = load_anysplat(args.anysplat, device=device)
        elif args.tiny:
            from ..tiny import build_tiny_anysplat

            net = build_tiny_anysplat(seed=args.model_seed).to(device)
        else:
            raise VIST3AError("--model anysplat needs --anysplat PATH (folder with model.safetensors + config.json), or --tiny")
        return NVSModel("anysplat", net.eval(), seed=args.seed)
    if args.decoder:
        from ..decoders import load_stitched_decoder

        net = load_stitched_decoder(args.decoder, args.anysplat, device=device)
    elif args.tiny:
        from ..tiny import build_tiny_decoder

        net = build_tiny_decoder(seed=args.model_seed).to(device)
    else:
        raise VIST3AError("--model stitched needs --decoder PATH (anysplat_stitched.pth, with --anysplat PATH) and --vae PATH, or --tiny")
    if args.vae:
        vae = _load_vae(args.vae, device)
    elif args.tiny:
        from ..wan.tiny import build_tiny_wan

        vae = build_tiny_wan(seed=args.model_seed, device=device).vae.eval()
    else:
        raise VIST3AError("--model stitched needs --vae PATH (wan_2.1_vae.safetensors or a Wan2.1-T2V-*-Diffusers folder)")
    return NVSModel("stitched", net.eval(), vae=vae, seed=args.seed)


def nvs_precision(args, device) -> str:
    """--precision auto: the official evaluation's fp16 autocast for the stitched decoder on CUDA; fp32 otherwise
    (the CPU has no fast fp16 kernels, and the official script never ran there)."""
    if args.precision != "auto":
        return args.precision
    return "fp16" if device.type == "cuda" and args.model == "stitched" else "fp32"


def _nvs(args) -> int:
    from .image_metrics import load_lpips
    from .nvs import run_nvs
    from .re10k import Re10KTest

    if args.tiny and args.load_size is None:
        args.load_size = 64
    load_size = args.load_size or 512
    context_size = args.context_size or (load_size // 16 * 14)  # latent /8, tokens /2 -> 14 px patches
    if args.metrics_only:
        return _nvs_metrics_only(args)
    if not args.data or not args.index:
        raise VIST3AError("eval nvs needs DATA and --index PATH (or --metrics-only to score existing images/<seq>/{gt,pred})")
    data = Re10KTest(args.data, args.index, args.seq_file, load_size=load_size, context_size=context_size)
    if data.skipped:
        print(f"{len(data.skipped)} listed sequences have no entry in {args.index} and are skipped, as the official loop "
              f"(which looks each sequence up in that map) can only have done: {', '.join(data.skipped)}")
    lp = None if args.no_lpips else load_lpips(args.lpips_vgg, args.lpips_lin, device=_device(args.device))
    from .nvs import prepare_precision

    model = build_nvs_model(args)
    prepare_precision(model, nvs_precision(args, model.device))
    result = run_nvs(data, model, args.output, lpips_model=lp, limit=args.limit)
    o = result["overall"]
    print(f"NVS {result['model']} on {result['sequences']} sequences: PSNR {o['PSNR']:.4f} SSIM {o['SSIM']:.4f} "
          f"LPIPS {'n/a' if o['LPIPS'] is None else format(o['LPIPS'], '.4f')}; results in {args.output}")
    return 0


def _nvs_metrics_only(args) -> int:
    from .image_metrics import load_lpips
    from .nvs import score_image_folders

    lp = None if args.no_lpips else load_lpips(args.lpips_vgg, args.lpips_lin, device=_device(args.device))
    result = score_image_folders(args.output, lpips_model=lp)
    o = result["overall"]
    print(f"NVS metrics of {result['sequences']} sequences in {args.output}/images: PSNR {o['PSNR']:.4f} "
          f"SSIM {o['SSIM']:.4f} LPIPS {'n/a' if o['LPIPS'] is None else format(o['LPIPS'], '.4f')}")
    return 0


def _gen(args) -> int:
    from .gen import build_metrics, read_config, run_gen_eval

    paths = read_config(args.config)
    for key in ("clip", "longclip", "aesthetic_clip", "aesthetic_head", "aesthetic_arch", "musiq", "unified_reward",
                "dpg_csv", "dpg_vqa"):
        if getattr(args, key) is not None:
            paths[key] = getattr(args, key)
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    metrics = build_metrics(paths, wanted, device=_device(args.device or paths.get("device")))
    out = args.output or str(Path(args.folder) / "eval")
    result = run_gen_eval(args.folder, metrics, out)
    means = ", ".join(f"{k} {'n/a' if v is None else format(v, '.4f')}" for k, v in result["all_average"].items())
    if result.get("dpg"):
        means += f", DPG-Bench score {result['dpg']['score']:.4f}"
    print(f"{result['samples']} samples: {means}; results in {out}")
    return 0


def add_eval_parser(sub) -> None:
    """Register `eval` with its sub-commands on the main parser's subparsers."""
    e = sub.add_parser("eval", help="official benchmarks: novel-view synthesis (nvs), generation metrics (gen)")
    esub = e.add_subparsers(dest="eval_command", required=True)

    n = esub.add_parser("nvs", help="RealEstate10K novel-view synthesis: PSNR / SSIM / LPIPS (official protocol)")
    n.add_argument("data", nargs="?", help="RealEstate10K test folder (one sub-folder per sequence with annotations.json)")
    n.add_argument("--index", help="official evaluation/datasets/re10k_indexmap.json (required unless --metrics-only)")
    n.add_argument("--metrics-only", dest="metrics_only", action="store_true",
                   help="score the existing OUTPUT/images/<seq>/{gt,pred}/*.png only, as the official calculate_metric.py")
    n.add_argument("--precision", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                   help="auto: fp16 autocast with bf16 weights on CUDA for the stitched decoder (the official evaluation), "
                        "fp32 otherwise")
    n.add_argument("--seq-file", dest="seq_file", help="official evaluation/datasets/re10k_test.txt (default: every sequence of --index)")
    n.add_argument("-o", "--output", required=True, help="output folder (images/<seq>/{gt,pred}, CSVs, JSON, Markdown, chart)")
    n.add_argument("--model", choices=("stitched", "anysplat"), default="stitched")
    n.add_argument("--decoder", help="anysplat_stitched.pth or a stitched-decoder export folder")
    n.add_argument("--anysplat", help="AnySplat folder (model.safetensors + config.json)")
    n.add_argument("--vae", help="Wan 2.1 VAE: wan_2.1_vae.safetensors or a Wan2.1-T2V-*-Diffusers folder")
    n.add_argument("--tiny", action="store_true", help="tiny random models for whatever is not given (tests)")
    n.add_argument("--lpips-vgg", dest="lpips_vgg", help="torchvision vgg16-397923af.pth (LPIPS backbone)")
    n.add_argument("--lpips-lin", dest="lpips_lin", help="LPIPS v0.1 vgg.pth (default: the copy in the lpips package)")
    n.add_argument("--no-lpips", dest="no_lpips", action="store_true", help="skip LPIPS")
    n.add_argument("--load-size", dest="load_size", type=int, default=None, help="VAE input size (official 512)")
    n.add_argument("--context-size", dest="context_size", type=int, default=None, help="decoder RGB size (official 448)")
    n.add_argument("--limit", type=int, default=None, help="only the first N sequences")
    n.add_argument("--seed", type=int, default=0, help="seed of the VAE latent sample")
    n.add_argument("--device", default=None)
    n.add_argument("--model-seed", dest="model_seed", type=int, default=0, help=argparse.SUPPRESS)
    n.set_defaults(func=_nvs)

    g = esub.add_parser("gen", help="CLIP score, LAION aesthetic, MUSIQ, UnifiedReward over a batch folder (official)")
    g.add_argument("folder", help="output folder of `python -m vist3a batch` (sub-folders with prompt.txt + gs.mp4)")
    g.add_argument("-o", "--output", help="results folder (default FOLDER/eval)")
    g.add_argument("--config", help="JSON file: {clip, longclip, aesthetic_clip, aesthetic_head, musiq, unified_reward, "
                                    "dpg_csv, dpg_vqa: PATH}")
    g.add_argument("--metrics", help="comma list of clip,longclip,aesthetic,musiq,unified_reward,dpg (default: all configured)")
    g.add_argument("--clip", help="Hugging Face CLIP folder (official: openai/clip-vit-base-patch16)")
    g.add_argument("--longclip", help="LongCLIP folder (official: zer0int/LongCLIP-L-Diffusers)")
    g.add_argument("--aesthetic-clip", dest="aesthetic_clip", help="OpenAI CLIP ViT-L/14 as an open_clip state dict")
    g.add_argument("--aesthetic-arch", dest="aesthetic_arch", help="open_clip architecture of --aesthetic-clip (default ViT-L-14)")
    g.add_argument("--aesthetic-head", dest="aesthetic_head", help="LAION predictor sa_0_4_vit_l_14_linear.pth")
    g.add_argument("--musiq", help="pyiqa MUSIQ SPAQ checkpoint musiq_spaq_ckpt-358bb6af.pth (needs pyiqa)")
    g.add_argument("--unified-reward", dest="unified_reward", help="UnifiedReward-qwen-7b folder (needs qwen-vl-utils)")
    g.add_argument("--dpg-csv", dest="dpg_csv", help="DPG-bench question CSV (what the official dpg_evaluation.py reads as --csv)")
    g.add_argument("--dpg-vqa", dest="dpg_vqa", help="DPG-bench VQA model folder (default: --unified-reward, the official model)")
    g.add_argument("--device", default=None)
    g.set_defaults(func=_gen)
