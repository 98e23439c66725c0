"""The official generation metrics (`evaluation/gen_eval/gen_metrics/`), each on a list of PIL frames + prompt.

- CLIP score: torchmetrics' `CLIPScore` definition with a Hugging Face CLIP (official: openai/clip-vit-base-patch16;
  LongCLIP zer0int/LongCLIP-L-Diffusers with 248 text positions): per frame max(100 * cos(image, text), 0), the
  frame given as a uint8 tensor to the CLIP processor, the caption tokenised without truncation and then cut to
  the model's text positions (torchmetrics' behaviour); mean over frames.
- LAION aesthetic: OpenAI CLIP ViT-L/14 image embedding (Resize 224 bicubic, centre crop, CLIP normalisation),
  L2-normalised, through the LAION linear head (`sa_0_4_vit_l_14_linear.pth`), divided by 10; mean over frames.
  On CUDA the CLIP runs in fp16 as `clip.load("ViT-L/14", device="cuda")` makes it (linear/conv/attention weights
  and projections in fp16, LayerNorms in fp32, the image cast to fp16); on the CPU in fp32, as clip.load does there.
- MUSIQ (pyiqa's architecture, SPAQ checkpoint): frames whose shorter side exceeds 512 are resized to 512 on
  it (no antialiasing); score / 100; mean over frames.
- UnifiedReward (Qwen2.5-VL, CodeGoat24/UnifiedReward-qwen-7b): the official question per frame, greedy
  `generate(max_new_tokens=4096)`, Alignment / Coherence / Style parsed from the answer; frames whose answer
  does not parse are skipped; mean per axis. A sample none of whose frames parses stops the run (the official
  loop divides by zero there); :class:`UnifiedRewardUnparsable` carries that, the caller names the sample.
- DPG-bench VQA (`dpg_evaluation.py`): the same Qwen2.5-VL model answers each question of the prompt's DPG
  question set with the official yes/no template; :mod:`.dpg` scores the answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, ImageOps


def _pil_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def _features(out) -> torch.Tensor:
    # transformers < 5 returns the projected embedding, >= 5 an output object carrying it as pooler_output
    return out if torch.is_tensor(out) else out.pooler_output


@dataclass
class ClipScore:
    model: object  # transformers CLIPModel
    processor: object  # transformers CLIPProcessor
    key: str = "clip_score"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, images: list[Image.Image], prompt: str) -> dict:
        text = self.processor(text=[prompt], return_tensors="pt", padding=True)
        limit = getattr(getattr(self.model.config, "text_config", None), "max_position_embeddings", None)
        ids, mask = text["input_ids"], text["attention_mask"]
        if limit is not None and ids.shape[-1] > limit:
            ids, mask = ids[..., :limit], mask[..., :limit]
        t = _features(self.model.get_text_features(ids.to(self.device), mask.to(self.device)))
        t = t / t.norm(p=2, dim=-1, keepdim=True)
        scores = []
        for img in images:
            arr = torch.from_numpy(np.asarray(_pil_rgb(img), dtype=np.uint8).copy()).permute(2, 0, 1)
            pix = self.processor(images=[arr], return_tensors="pt", padding=True)["pixel_values"]
            f = _features(self.model.get_image_features(pix.to(self.device)))
            f = f / f.norm(p=2, dim=-1, keepdim=True)
            scores.append(float(torch.clamp(100 * (f * t).sum(-1), min=0).item()))
        return {self.key: float(np.mean(scores))}


def clip_transform(n_px: int = 224):
    """The official aesthetic preprocessing (PIL in, normalised tensor out)."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose([Resize(n_px, interpolation=InterpolationMode.BICUBIC, antialias=False), CenterCrop(n_px), ToTensor(),
                    Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])


@dataclass
class Aesthetic:
    clip_model: object  # anything with encode_image (open_clip CLIP, OpenAI clip)
    head: torch.nn.Linear  # LAION predictor: Linear(768, 1)
    size: int = 224
    key: str = "aesthetic_avg"

    dtype: torch.dtype = torch.float32  # the dtype the CLIP's image input is cast to (fp16 on CUDA, as official)

    @torch.no_grad()
    def __call__(self, images: list[Image.Image], prompt: str = "") -> dict:
        tf = clip_transform(self.size)
        dev = next(self.head.parameters()).device
        scores = []
        for img in images:
            x = tf(_pil_rgb(img)).to(dev).unsqueeze(0).to(self.dtype)
            feats = self.clip_model.encode_image(x).float()
            feats = torch.nn.functional.normalize(feats, dim=-1, p=2)
            scores.append(self.head(feats).squeeze(-1))
        return {self.key: float((torch.cat(scores) / 10).mean().item())}


def musiq_input(img: Image.Image) -> torch.Tensor:
    """ToTensor, then the shorter side brought down to 512 when above it (official 'shorter' mode)."""
    from torchvision.transforms import Resize, ToTensor

    x = ToTensor()(_pil_rgb(img))
    _, h, w = x.shape
    if min(h, w) > 512:
        s = 512.0 / min(h, w)
        x = Resize(size=(int(s * h), int(s * w)), antialias=False)(x)
    return x


@dataclass
class Musiq:
    model: Callable  # pyiqa MUSIQ: [1, 3, H, W] in [0, 1] -> [1, 1]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    key: str = "imaging_avg"

    @torch.no_grad()
    def __call__(self, images: list[Image.Image], prompt: str = "") -> dict:
        vals = [float(self.model(musiq_input(img).unsqueeze(0).to(self.device))[0][0]) for img in images]
        return {self.key: sum(vals) / len(vals) / 100.0}


# -------------------------------------------------------------------------------------------- UnifiedReward

# The question is model input: it must be byte-identical to the official one for the official numbers.
UNIFIED_REWARD_QUESTION = (
    "You are presented with a generated image and its associated text caption. Your task is to analyze the image across multiple dimensions in relation to the caption. Specifically:\n\n"
    "1. Evaluate each word in the caption based on how well it is visually represented in the image. Assign a numerical score to each word using the format:\n"
    '   Word-wise Scores: [["word1", score1], ["word2", score2], ..., ["wordN", scoreN], ["[No_mistakes]", scoreM]]\n'
    "   - A higher score indicates that the word is less well represented in the image.\n"
    "   - The special token [No_mistakes] represents whether all elements in the caption were correctly depicted. A high score suggests no mistakes; a low score suggests missing or incorrect elements.\n\n"
    "2. Provide overall assessments for the image along the following axes (each rated from 1 to 5):\n"
    "- Alignment Score: How well the image matches the caption in terms of content.\n"
    "- Coherence Score: How logically consistent the image is (absence of visual glitches, object distortions, etc.).\n"
    "- Style Score: How aesthetically appealing the image looks, regardless of caption accuracy.\n\n"
    "Output your evaluation using the format below:\n\n"
    "---\n\n"
    'Word-wise Scores: [["word1", score1], ..., ["[No_mistakes]", scoreM]]\n\n'
    "Alignment Score (1-5): X\n"
    "Coherence Score (1-5): Y\n"
    "Style Score (1-5): Z\n\n"
    "Your task is provided as follows:\nText Caption: [{prompt}]\nASSISTANT:\n"
)

_NUMBER = r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?"
AXES = ("alignment", "coherence", "style")


def unified_reward_question(prompt: str) -> str:
    return UNIFIED_REWARD_QUESTION.replace("{prompt}", prompt)


def parse_unified_reward(text: str) -> Optional[dict]:
    """Alignment / Coherence / Style from an answer, as the official parser reads them: `<Axis> Score (..): v`
    (also `Scor`, `-` for `:`, any case); else the first number on the first line naming the axis.
    None when an axis is missing (the official code then skips the frame)."""
    out = {}
    for axis in AXES:
        label = axis.capitalize()
        m = re.search(label + r"\s*Score?(?:\s*\(.*?\))?\s*[:\-]\s*(" + _NUMBER + ")", text, flags=re.IGNORECASE)
        value = float(m.group(1)) if m else None
        if value is None:
            for line in text.splitlines():
                if label.lower() in line.lower():
                    n = re.search(_NUMBER, line)
                    if n:
                        value = float(n.group())
                        break
        if value is None:
            return None
        out[axis] = value
    return out


class UnifiedRewardUnparsable(Exception):
    """No frame of a sample gave a parsable UnifiedReward answer."""


@dataclass
class QwenVL:
    """One image + one text in, the model's greedy answer out (the official generation settings)."""

    model: object  # Qwen2_5_VLForConditionalGeneration (or anything with .generate)
    processor: object  # its AutoProcessor
    vision_info: Callable  # qwen_vl_utils.process_vision_info
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    max_new_tokens: int = 4096

    @torch.no_grad()
    def ask(self, image: Image.Image, text: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]
        chat = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        image_inputs, video_inputs = self.vision_info(messages)
        inputs = self.processor(text=[chat], images=image_inputs, videos=video_inputs, return_tensors="pt",
                                padding=True).to(self.device)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, use_cache=True)
        trimmed = [o[len(i):] for i, o in zip(inputs.input_ids, ids)]
        return self.processor.batch_decode(trimmed, skip_special_tokens=True)[0]


class UnifiedReward(QwenVL):
    def answer(self, image: Image.Image, prompt: str) -> str:
        return self.ask(image, unified_reward_question(prompt))

    def __call__(self, images: list[Image.Image], prompt: str) -> dict:
        parsed = []
        for img in images:
            try:
                scores = parse_unified_reward(self.answer(img, prompt))
            except Exception:  # noqa: BLE001 - the official loop skips a frame on any failure
                scores = None
            if scores is not None:
                parsed.append(scores)
        if not parsed:
            raise UnifiedRewardUnparsable(f"none of the {len(images)} frames gave a parsable UnifiedReward answer")
        return {f"unified_reward_{axis}_score": float(np.mean([p[axis] for p in parsed])) for axis in AXES}


DPG_QUESTION = "Please answer the following question with only one word 'Yes' or 'No': {question}\nASSISTANT:\n"


class DpgVQA(QwenVL):
    """The official DPG-bench VQA (`dpg_evaluation.py`, class MPLUG, which runs UnifiedReward-qwen-7b)."""

    def __call__(self, image: Image.Image, question: str) -> str:
        return self.ask(image, DPG_QUESTION.replace("{question}", question))
