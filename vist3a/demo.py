"""`make demo`: text -> latent -> splats -> .ply + rendered preview, offline.

Uses the real weights when they are laid out like ComfyUI's model folders under `$VIST3A_MODELS`
(or `models/` in the repository), otherwise tiny random-weight models, and says which.
"""

from __future__ import annotations

import time
from pathlib import Path

from .outputs import save_scene_outputs
from .pipeline import GenerateSettings, VIST3APipeline

PROMPT = "a cozy wooden cabin in a snowy pine forest"


def find_real_weights(models: Path) -> dict | None:
    """{wan, decoder, anysplat, lora} when a complete 1.3B set is present, else None."""
    wan = next((p for p in sorted((models / "diffusers").glob("Wan2.1-T2V-1.3B*")) if (p / "model_index.json").is_file()), None)
    decoder = models / "vist3a" / "anysplat_stitched.pth"
    anysplat = next((p for p in (models / "vist3a" / "anysplat", models / "vist3a") if (p / "model.safetensors").is_file()), None)
    lora = models / "loras" / "vist3a_1.3b_lora_ema"
    if wan is None or anysplat is None or not decoder.is_file():
        return None
    return {"wan": wan, "decoder": decoder, "anysplat": anysplat, "lora": lora if lora.is_dir() else None}


def run_demo(out: Path, models_dir: str | None = None) -> int:
    models = Path(models_dir) if models_dir else Path(__file__).resolve().parents[1] / "models"
    real = find_real_weights(models)
    t0 = time.perf_counter()
    if real:
        print(f"using the real weights in {models}")
        pipe = VIST3APipeline.load(**{k: v for k, v in real.items() if v is not None})
        settings = GenerateSettings()
    else:
        print(f"no real weights in {models} (see README: Weights); using TINY RANDOM models - the splat is noise, "
              "the point is that every stage runs")
        pipe = VIST3APipeline.load(tiny=True, device="cpu")
        settings = GenerateSettings(frames=5, height=64, width=64, steps=8)
    t1 = time.perf_counter()
    scene, _ = pipe.generate(PROMPT, settings)
    t2 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    written = save_scene_outputs(scene, out / "scene.ply", views=out, size=128 if not real else 512)
    print(f'prompt: "{PROMPT}" -> {scene.gaussians.num} Gaussians (load {t1 - t0:.1f} s, generate {t2 - t1:.1f} s)')
    for path in written:
        print(f"wrote {path}")
    return 0
