"""`python -m vist3a eval gen DIR`: the official generation metrics over a batch folder (`t3_scene_evaluation.py`,
and `dpg_evaluation.py` for the DPG-bench score).

Each sub-folder with `prompt.txt` and `gs.mp4` (or `gs.webp`) is one sample; 8 frames are taken from the video
at positions int(i * frames / 8), as the official script does; every configured metric scores them against the
prompt (first line of prompt.txt). Metric models come from local paths only (flags or a JSON config file).

Frames: the official code decodes with OpenCV (`cv2.VideoCapture`, seek to each position, BGR -> RGB); we decode
with imageio-ffmpeg. On the H.264 files the batch writes both give identical pixels
(`tests/fixtures/official_eval/`, made by running the official `sample_video_frames`).

Results: `eval_results.json` (the official file name and keys `all_average`, `eval_results`), plus
`gen_results.json` with the same content (the name earlier releases wrote; kept for one release),
`gen_results.md`, `gen_metrics.png`, and with DPG-bench `dpg_bench_results.txt` (the official text report).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from ..errors import VIST3AError
from .dpg import DpgBench, official_report, read_questions
from .gen_metrics import Aesthetic, ClipScore, DpgVQA, Musiq, UnifiedReward, UnifiedRewardUnparsable
from .image_metrics import read_weights_for
from .report import bar_chart, markdown_table, write_json, write_text

NUM_FRAMES = 8
VIDEO_NAMES = ("gs.mp4", "gs.webp")
# metric -> (config/flag keys it needs, result keys it produces, in the official JSON's order)
METRICS = {
    "unified_reward": (("unified_reward",), ("unified_reward_alignment_score", "unified_reward_coherence_score",
                                              "unified_reward_style_score")),
    "clip": (("clip",), ("clip_score",)),
    "longclip": (("longclip",), ("longclip_score",)),
    "aesthetic": (("aesthetic_clip", "aesthetic_head"), ("aesthetic_avg",)),
    "musiq": (("musiq",), ("imaging_avg",)),
    "dpg": (("dpg_csv",), ("dpg_score",)),  # VQA model: dpg_vqa, else the unified_reward folder (the official default)
}
RESULTS_FILE = "eval_results.json"  # official name (t3_scene_evaluation.py --eval_save_path default)
LEGACY_RESULTS_FILE = "gen_results.json"


@dataclass
class Sample:
    folder: str
    prompt: str
    video: Path


def find_samples(root: str | Path) -> list[Sample]:
    root = Path(root)
    if not root.is_dir():
        raise VIST3AError(f"{root} is not a folder; give the output folder of `python -m vist3a batch`")
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        video = next((d / n for n in VIDEO_NAMES if (d / n).is_file()), None)
        if video is None or not (d / "prompt.txt").is_file():
            print(f"skipping {d.name}: missing gs.mp4 or prompt.txt")
            continue
        lines = (d / "prompt.txt").read_text(encoding="utf-8").splitlines()
        out.append(Sample(d.name, lines[0].strip() if lines else "", video))
    if not out:
        raise VIST3AError(f"{root} has no sample folders (each needs prompt.txt and gs.mp4); run `python -m vist3a batch` first")
    return out


def read_video(path: Path) -> list[np.ndarray]:
    if path.suffix == ".mp4":
        import imageio.v2 as imageio

        for attempt in range(3):  # imageio-ffmpeg gives ffmpeg 10 s to report the header; a busy machine can miss it
            try:
                reader = imageio.get_reader(path, format="FFMPEG")
                try:
                    return [np.asarray(f) for f in reader]
                finally:
                    reader.close()
            except OSError as exc:
                if attempt == 2 or "meta information" not in str(exc):
                    raise VIST3AError(f"cannot read video {path}: {str(exc).splitlines()[0]}") from None
    with Image.open(path) as im:
        frames = []
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
        return frames


def sample_frames(path: Path, n: int = NUM_FRAMES) -> list[Image.Image]:
    frames = read_video(path)
    return [Image.fromarray(frames[int(i * len(frames) / n)]) for i in range(n)]


# ------------------------------------------------------------------------------------------- model loading


def _need(path: Optional[str], flag: str, what: str) -> Path:
    if not path:
        raise VIST3AError(f"{flag} is not set: give {what} (a local path; nothing is downloaded)")
    p = Path(path)
    if not p.exists():
        raise VIST3AError(f"{flag} {p} does not exist: give {what}")
    return p


def _dtype_kwarg(dtype) -> dict:
    """`from_pretrained` dtype argument: `dtype` from transformers 4.56 on, `torch_dtype` before."""
    import transformers

    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load_clip_score(path: str, key: str, flag: str, long: bool = False, device="cpu"):
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    what = ("a LongCLIP folder (zer0int/LongCLIP-L-Diffusers)" if long
            else "a Hugging Face CLIP folder (openai/clip-vit-base-patch16)")
    p = _need(path, flag, what)
    try:
        config = CLIPConfig.from_pretrained(p)
        if long:
            config.text_config.max_position_embeddings = 248
        # pinned to fp32: the official pin (transformers 4.51) loads fp32; transformers 5 defaults to "auto" (file dtype)
        model = CLIPModel.from_pretrained(p, config=config, **_dtype_kwarg(torch.float32)).eval().to(device)
        processor = CLIPProcessor.from_pretrained(p)
    except (OSError, ValueError) as exc:
        raise VIST3AError(f"{flag} {p} is not {what}: {str(exc).splitlines()[0]}") from None
    return ClipScore(model, processor, key)


def load_aesthetic(clip_path: str, head_path: str, arch: str = "ViT-L-14", device="cpu", half: Optional[bool] = None):
    """``half`` None: fp16 on CUDA, fp32 elsewhere (the official clip.load behaviour)."""
    import open_clip

    cp = _need(clip_path, "--aesthetic-clip", "the OpenAI CLIP ViT-L/14 weights as an open_clip state dict "
                                              "(open_clip_model.safetensors of timm/vit_large_patch14_clip_224.openai)")
    hp = _need(head_path, "--aesthetic-head", "the LAION predictor sa_0_4_vit_l_14_linear.pth")
    # OpenAI weights use QuickGELU. On CUDA fp16 as clip.load makes it: linear/conv/attention weights fp16, fp32
    # LayerNorms (open_clip's "fp16" precision builds exactly that); on the CPU fp32, as clip.load does there.
    half = torch.device(device).type == "cuda" if half is None else half
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True, precision="fp16" if half else "fp32",
                                   device=device)
    sd = read_weights_for(cp, "--aesthetic-clip")
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise VIST3AError(f"--aesthetic-clip {cp} does not fit open_clip {arch}: {str(exc).splitlines()[0]}") from None
    head_sd = read_weights_for(hp, "--aesthetic-head")
    width = head_sd.get("weight", torch.empty(0, 0)).shape[-1] if "weight" in head_sd else 0
    if set(head_sd) != {"weight", "bias"} or head_sd["weight"].shape[0] != 1:
        raise VIST3AError(f"--aesthetic-head {hp} is not a LAION linear predictor (keys weight [1, D], bias [1])")
    head = torch.nn.Linear(width, 1)
    head.load_state_dict(head_sd)
    return Aesthetic(model.eval().to(device), head.eval().to(device), dtype=torch.float16 if half else torch.float32)


def load_musiq(path: str, device="cpu"):
    p = _need(path, "--musiq", "pyiqa's MUSIQ SPAQ checkpoint musiq_spaq_ckpt-358bb6af.pth")
    try:
        from pyiqa.archs.musiq_arch import MUSIQ
    except ImportError:
        raise VIST3AError("--musiq needs the pyiqa package (pip install pyiqa) for the MUSIQ architecture") from None
    model = MUSIQ(pretrained_model_path=str(p)).to(device).eval()
    return Musiq(model, torch.device(device))


def load_unified_reward(path: str, device="cpu", flag: str = "--unified-reward"):
    p = _need(path, flag, "the UnifiedReward folder (CodeGoat24/UnifiedReward-qwen-7b)")
    try:
        from qwen_vl_utils import process_vision_info
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    except ImportError:
        raise VIST3AError("--unified-reward needs qwen-vl-utils (pip install qwen-vl-utils) and a transformers with Qwen2.5-VL") from None
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(p, **_dtype_kwarg(torch.bfloat16)).to(device).eval()
    return UnifiedReward(model, AutoProcessor.from_pretrained(p), process_vision_info, torch.device(device))


def load_dpg(csv_path: str, vqa_path: Optional[str], device="cpu", shared=None):
    """DPG-bench: the question CSV and the VQA model (official: UnifiedReward-qwen-7b; ``shared`` reuses an
    already loaded UnifiedReward instead of loading the same 7B model twice)."""
    questions = read_questions(_need(csv_path, "--dpg-csv", "the DPG-bench question CSV (dpg_evaluation.py --csv)"))
    if shared is not None and (vqa_path is None or vqa_path == shared[0]):
        ur = shared[1]
        vqa = DpgVQA(ur.model, ur.processor, ur.vision_info, ur.device)
    else:
        ur = load_unified_reward(vqa_path, device=device, flag="--dpg-vqa")
        vqa = DpgVQA(ur.model, ur.processor, ur.vision_info, ur.device)
    return DpgBench(questions, vqa)


def read_config(path: Optional[str]) -> dict:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise VIST3AError(f"--config {p} does not exist; give a JSON file mapping clip / longclip / aesthetic_clip / "
                          "aesthetic_head / musiq / unified_reward to local paths")
    try:
        cfg = json.loads(p.read_text())
    except ValueError as exc:
        raise VIST3AError(f"--config {p} is not valid JSON ({exc})") from None
    unknown = set(cfg) - {k for need, _ in METRICS.values() for k in need} - {"aesthetic_arch", "device", "dpg_vqa"}
    if unknown:
        raise VIST3AError(f"--config {p}: unknown key {sorted(unknown)[0]!r}; known: clip, longclip, aesthetic_clip, "
                          "aesthetic_head, aesthetic_arch, musiq, unified_reward, dpg_csv, dpg_vqa")
    return cfg


def build_metrics(paths: dict, wanted: Optional[list[str]], device="cpu") -> dict[str, Callable]:
    """Metric name -> scorer. `wanted` None: every metric whose model paths are given (at least one)."""
    if wanted is None:
        wanted = [m for m, (need, _) in METRICS.items() if any(paths.get(k) for k in need)]
        if not wanted:
            raise VIST3AError("no metric model given: pass --clip PATH (and/or --longclip, --aesthetic-clip with "
                              "--aesthetic-head, --musiq, --unified-reward) or --config FILE")
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise VIST3AError(f"--metrics: unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    out = {}
    for m in wanted:
        if m == "clip":
            out[m] = load_clip_score(paths.get("clip"), "clip_score", "--clip", device=device)
        elif m == "longclip":
            out[m] = load_clip_score(paths.get("longclip"), "longclip_score", "--longclip", long=True, device=device)
        elif m == "aesthetic":
            out[m] = load_aesthetic(paths.get("aesthetic_clip"), paths.get("aesthetic_head"),
                                    paths.get("aesthetic_arch") or "ViT-L-14", device=device)
        elif m == "musiq":
            out[m] = load_musiq(paths.get("musiq"), device=device)
        elif m == "unified_reward":
            out[m] = load_unified_reward(paths.get("unified_reward"), device=device)
        elif m == "dpg":
            shared = (paths.get("unified_reward"), out["unified_reward"]) if "unified_reward" in out else None
            out[m] = load_dpg(paths.get("dpg_csv"), paths.get("dpg_vqa") or paths.get("unified_reward"), device, shared)
    return out


# ------------------------------------------------------------------------------------------------- running


def run_gen_eval(root: str | Path, metrics: dict[str, Callable], out_dir: str | Path,
                 log: Callable[[str], None] = print) -> dict:
    samples = find_samples(root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = [k for m in METRICS if m in metrics for k in METRICS[m][1]]
    rows, t0 = [], time.perf_counter()
    for i, s in enumerate(samples, 1):
        frames = sample_frames(s.video)
        row = {"prompt": s.prompt, "folder": s.folder}
        for m in METRICS:
            if m in metrics:
                try:
                    row.update(metrics[m](frames, s.prompt))
                except UnifiedRewardUnparsable as exc:
                    raise VIST3AError(f"sample {s.folder}: {exc} (the official evaluation stops here too); "
                                      "check the UnifiedReward model folder, or leave unified_reward out of --metrics") from None
        rows.append(row)
        log(f"[gen] {i}/{len(samples)} {s.folder[:50]!r}: " + ", ".join(f"{k} {row[k]:.4f}" if row[k] is not None else f"{k} n/a" for k in keys))
    average = {}
    for k in keys:
        vals = [r[k] for r in rows if r[k] is not None]
        average[k] = float(np.mean(vals)) if vals else None
    result = {"all_average": average, "eval_results": rows, "samples": len(rows),
              "wall_seconds": round(time.perf_counter() - t0, 3)}  # official key names
    if "dpg" in metrics:
        result["dpg"] = metrics["dpg"].summary()
        if result["dpg"] is not None:
            write_text(out / "dpg_bench_results.txt", official_report(result["dpg"], str(root), str(out / "dpg_bench_results.txt")))
    write_json(out / RESULTS_FILE, result)
    write_json(out / LEGACY_RESULTS_FILE, result)
    md = f"# Generation metrics, {len(rows)} samples\n\n" + markdown_table(["metric", "mean"], [[k, average[k]] for k in keys])
    md += "\n" + markdown_table(["prompt", *keys], [[r["prompt"][:80], *(r[k] for k in keys)] for r in rows])
    write_text(out / "gen_results.md", md)
    bar_chart(keys, [average[k] for k in keys], out / "gen_metrics.png", f"Mean over {len(rows)} samples")
    return result
