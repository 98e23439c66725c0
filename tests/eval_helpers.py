"""Tiny random-weight stand-ins for the evaluation's models (CLIP, the aesthetic open_clip ViT, LPIPS' VGG file)
and the folder of official evaluation runs, shared by the evaluation tests and the GPU check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import torch

OFFICIAL_RUNS = Path(__file__).resolve().parent / "fixtures" / "official_runs"
"""What the official evaluation code wrote (tests/fixtures/make_official_runs.py)."""

TINY_AESTHETIC_ARCH = "vist3a-tiny-clip"


def tiny_clip():
    """A 2-layer CLIP model (seeded) and its processor with a character-level tokenizer (no downloads)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                max_position_embeddings=77, eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"],
                pad_token_id=vocab["<|endoftext|>"])
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=30, patch_size=6)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}),
                         tokenizer=tok)
    return model, proc


def tiny_aesthetic(folder: Path) -> SimpleNamespace:
    """The aesthetic predictor's files at random weights: a 1-layer open_clip ViT registered as TINY_AESTHETIC_ARCH
    (seeded) saved as ``clip.safetensors`` and a LAION-style linear head saved as ``head.pth``, in ``folder``.
    Returns the paths (clip, head), the modules (model, head_module) and the open_clip package."""
    import open_clip
    from safetensors.torch import save_file

    cfg = {"embed_dim": 16, "quick_gelu": True,
           "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (folder / "cfg").mkdir(parents=True)
    (folder / "cfg" / f"{TINY_AESTHETIC_ARCH}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / "cfg")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_AESTHETIC_ARCH, pretrained=None).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "clip.safetensors"))
    head = torch.nn.Linear(16, 1)
    torch.save(head.state_dict(), folder / "head.pth")
    return SimpleNamespace(clip=folder / "clip.safetensors", head=folder / "head.pth", model=model, head_module=head,
                           open_clip=open_clip)


def vgg_file(path: Path, ref) -> Path:
    """The VGG16 weights of an `lpips.LPIPS(net="vgg")` model saved under torchvision's key names (what we load)."""
    sd = {}
    for k, v in ref.net.state_dict().items():
        m = re.match(r"slice\d\.(\d+)\.(weight|bias)", k)
        sd[f"features.{m.group(1)}.{m.group(2)}"] = v
    torch.save(sd, path)
    return path
