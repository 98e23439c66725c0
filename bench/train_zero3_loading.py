"""Host memory per rank when the frozen Wan transformer is loaded for ZeRO-3 training: the full model on
every rank then partitioned by ``deepspeed.initialize`` ("full", what align.py did before), against
building it under ``deepspeed.zero.Init`` and streaming the safetensors file one tensor at a time
("streamed", vist3a_train/common/zero_load.py).

CPU, 2 ranks (gloo, DeepSpeed ZeRO-3 from vist3a_train/configs/zero3.json), a scaled Wan transformer
with random weights written once as a diffusers transformer folder (bf16). Each rank reports its peak
resident set (``ru_maxrss``) after the imports and after the model is loaded, partitioned and wrapped
with the VIST3A LoRA by ``deepspeed.initialize``; the difference is what loading cost on that rank.

    PYTHONPATH=$PWD python bench/train_zero3_loading.py --layers 8 --dim 1536 --out bench/results/train_zero3_loading_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def scaled_config(layers: int, dim: int) -> dict:
    heads = dim // 128
    return {"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2], "num_attention_heads": heads,
            "attention_head_dim": 128, "in_channels": 16, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
            "ffn_dim": int(dim * 35 / 6) // 64 * 64, "num_layers": layers, "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None, "added_kv_proj_dim": None,
            "rope_max_seq_len": 1024}


def make_model(folder: Path, config: dict, seed: int = 0) -> int:
    """A diffusers transformer folder with random bf16 weights; returns the parameter count."""
    import torch
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    sd = {}
    for name, p in model.state_dict().items():
        sd[name] = (torch.randn(p.shape) * 0.02).to(torch.bfloat16)
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return sum(v.numel() for v in sd.values())


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    from vist3a_train.common.engine import load_deepspeed_config
    from vist3a_train.common.lora import add_wan_lora

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    base = _rss_peak_mb()
    t0 = time.time()
    ds_cfg = load_deepspeed_config(REPO / "vist3a_train" / "configs" / "zero3.json", micro_batch=1, grad_clip=1.0,
                                   bf16=True)  # both paths hold bf16 weights, as on GH200
    if args.mode == "full":
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel.from_pretrained(args.model, torch_dtype=torch.bfloat16).eval().requires_grad_(False)
    else:
        from vist3a_train.common.zero_load import load_wan_transformer_zero3

        model = load_wan_transformer_zero3(Path(args.model), ds_cfg, torch.bfloat16)
    peft_model = add_wan_lora(model, 8, 16)
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()

    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    engine, *_ = deepspeed.initialize(model=peft_model, optimizer=opt, config=ds_cfg, dist_init_required=False)
    dist.barrier()
    load_s = time.time() - t0
    peak_after_load, rss_after_load = _rss_peak_mb(), _rss_now_mb()  # before the (optional) check below
    local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in engine.module.parameters())
    check = None
    if args.check:  # every weight equals the file's (gathered on all ranks, compared on rank 0)
        from vist3a_train.common.zero_load import read_safetensors_index, stream_tensor

        index = read_safetensors_index(sorted(Path(args.model).glob("*.safetensors")))
        worst = 0.0
        for name, p in engine.module.named_parameters():
            key = name.replace("base_model.model.", "").replace(".base_layer.", ".")
            if key not in index:
                continue
            with deepspeed.zero.GatheredParameters([p]):
                if rank == 0:
                    worst = max(worst, float((p.data.float() - stream_tensor(index[key]).float()).abs().max()))
        check = worst
    out = {"rank": rank, "peak_rss_mb_after_imports": base, "peak_rss_mb_after_load": peak_after_load,
           "rss_mb_after_load": rss_after_load, "load_s": load_s, "local_param_numel": local, "max_abs_diff": check}
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, out)
    if rank == 0:
        Path(args.result).write_text(json.dumps(every))
    dist.destroy_process_group()


def run_mode(mode: str, model: Path, ranks: int, result: Path, check: bool) -> list[dict]:
    launcher = Path(sys.executable).parent / "torchrun"
    cmd = ([str(launcher)] if launcher.exists() else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", "--nproc_per_node", str(ranks), str(Path(__file__).resolve()), "--worker", mode,
        "--model", str(model), "--result", str(result)] + (["--check"] if check else [])
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=("full", "streamed"))
    ap.add_argument("--model")
    ap.add_argument("--result")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/vist3a_zero3_bench")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "train_zero3_loading_cpu.json"))
    args = ap.parse_args()
    if args.worker:
        args.mode = args.worker
        return worker(args)
    work = Path(args.workdir)
    config = scaled_config(args.layers, args.dim)
    folder = work / f"wan_l{args.layers}_d{args.dim}"
    if not (folder / "config.json").is_file():
        n = make_model(folder, config)
    else:
        from vist3a_train.common.zero_load import read_safetensors_index

        n = 0
        for e in read_safetensors_index([folder / "diffusion_pytorch_model.safetensors"]).values():
            c = 1
            for s in e[3]:
                c *= s
            n += c
    results = {m: run_mode(m, folder, args.ranks, work / f"{m}.json", check=(m == "streamed")) for m in ("full", "streamed")}
    import deepspeed
    import torch

    summary = {
        m: {"peak_rss_mb_per_rank": [round(r["peak_rss_mb_after_load"], 1) for r in rs],
            "load_cost_mb_per_rank": [round(r["peak_rss_mb_after_load"] - r["peak_rss_mb_after_imports"], 1) for r in rs],
            "rss_mb_after_load_per_rank": [round(r["rss_mb_after_load"], 1) for r in rs],
            "local_param_numel_per_rank": [r["local_param_numel"] for r in rs],
            "load_s_per_rank": [round(r["load_s"], 2) for r in rs]}
        for m, rs in results.items()}
    doc = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "what": "host peak RSS per rank, frozen Wan transformer loaded for ZeRO-3 (2 CPU ranks, gloo)",
        "model": {"config": config, "parameters": n, "file_mb_bf16": round(n * 2 / 2**20, 1)},
        "ranks": args.ranks, "device": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "deepspeed": deepspeed.__version__, "python": platform.python_version()},
        "results": summary,
        "streamed_max_abs_diff_to_file": max(r["max_abs_diff"] or 0.0 for r in results["streamed"]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(doc["results"], indent=2))


if __name__ == "__main__":
    main()
