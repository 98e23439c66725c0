"""`make demo` picks up weights laid out like ComfyUI's model folders (here: tiny files under the
released names) and falls back to tiny models, saying which it used."""

import subprocess
import sys

from guards import HANG_S

from vist3a.demo import find_real_weights
from vist3a.pipeline import GenerateSettings, VIST3APipeline
from vist3a.tiny_release import write_tiny_release


def test_release_layout_is_found_and_loads(tmp_path):
    assert find_real_weights(tmp_path) is None
    write_tiny_release(tmp_path)
    found = find_real_weights(tmp_path)
    assert found == {
        "wan": tmp_path / "diffusers" / "Wan2.1-T2V-1.3B-Diffusers",
        "decoder": tmp_path / "vist3a" / "anysplat_stitched.pth",
        "anysplat": tmp_path / "vist3a" / "anysplat",
        "lora": tmp_path / "loras" / "vist3a_1.3b_lora_ema",
    }
    pipe = VIST3APipeline.load(**found, device="cpu")  # the same call run_demo makes
    scene, _ = pipe.generate("a chair", GenerateSettings(frames=5, height=64, width=64, steps=2))
    assert scene.gaussians.num > 0 and set(pipe.described) == {"wan", "lora", "decoder", "anysplat"}


def test_demo_without_weights_says_it_uses_tiny_models(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vist3a", "demo", "--out", str(tmp_path / "out"), "--models", str(tmp_path)],
                          capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TINY RANDOM models" in proc.stdout
    assert (tmp_path / "out" / "scene.ply").stat().st_size > 0 and (tmp_path / "out" / "orbit.png").is_file()
