"""bf16 decoder error per output group, measured on the CPU against the official fp32 parity fixtures.

Ours runs the full-size stitched decoder / AnySplat (parity fill rule A, the fixture's inputs) twice: fp32 and
the bf16 mode of the official inference (`vist3a.decoders.set_precision(model, 'bf16')`: bf16 aggregator weights
under bf16 autocast, fp32 heads).  Each output group is compared with the official fp32 outputs stored in the
fixture (max|a-b| / max|ref|; Gaussians on the fixture's per-pixel subset), so the bf16 column is "how far the
bf16 path lands from the official fp32 result" and the fp32 column is the parity floor.

    OMP_NUM_THREADS=1 .venv/bin/python bench/decoder_bf16.py [--out bench/results/decoder_bf16_cpu.json]

About 6 GB of memory, a few minutes on 2 cores.  Not measured here: the official code itself under bf16
autocast (its CPU emulation stops with a dtype error in the DPT head: CPU autocast leaves the aggregator's
tokens in bf16 where the GPU run has fp32 tokens).
"""

from __future__ import annotations

import argparse

import torch

import common  # noqa: F401  (puts the repository root on sys.path)

FIXTURES = ("parity_stitched_small", "parity_anysplat_small")
GROUPS = {
    "depth": ["out/depth"], "depth_conf": ["out/depth_conf"],
    "cameras": ["out/pred_pose_enc_list", "out/pred_context_pose_extrinsic", "out/pred_context_pose_intrinsic"],
    "gaussian_means": ["out/gaussians_subset/means"], "gaussian_scales": ["out/gaussians_subset/scales"],
    "gaussian_rotations": ["out/gaussians_subset/rotations"], "gaussian_opacities": ["out/gaussians_subset/opacities"],
    "gaussian_sh": ["out/gaussians_subset/harmonics"], "gaussian_covariances": ["out/gaussians_subset/covariances"],
}


def measure(name: str) -> dict:
    from vist3a import parity
    from vist3a.decoders import set_precision

    ref, meta = parity.load_fixture(common.ROOT / "tests" / "fixtures" / f"{name}.safetensors")
    inputs = {k: v for k, v in ref.items() if k.startswith("input/")}
    model = parity.build_model(meta, inputs)
    parity.fill_model(model, "A", 0, meta["fill_checksums_rule_A"])
    rows = {g: {} for g in GROUPS}
    for precision in ("fp32", "bf16"):
        set_precision(model, precision)
        named = parity.run_model(model, inputs)
        for group, keys in GROUPS.items():
            rows[group][precision] = max(
                parity.max_rel(parity.resolve(k, named, ref).float(), ref[k].float()) for k in keys)
    del model
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(common.ROOT / "bench" / "results" / "decoder_bf16_cpu.json"))
    args = ap.parse_args()
    results = {name: measure(name) for name in FIXTURES}
    result = {"command": common.command_line(), "time": common.now(), "torch": torch.__version__,
              "metric": "max|ours - official_fp32| / max|official_fp32| per output group",
              "bf16_mode": "bf16 aggregator weights + CPU bf16 autocast, fp32 heads (vist3a.decoders.set_precision)",
              "fixtures": results}
    md = ["# Decoder under bf16 (CPU): relative max error vs the official fp32 outputs", "", f"`{result['command']}`", "",
          "| group | " + " | ".join(f"{n} fp32 | {n} bf16" for n in FIXTURES) + " |", "|---" * (1 + 2 * len(FIXTURES)) + "|"]
    for g in GROUPS:
        md.append(f"| {g} | " + " | ".join(f"{results[n][g]['fp32']:.1e} | {results[n][g]['bf16']:.1e}" for n in FIXTURES) + " |")
    print("\n".join(md))
    common.write_results(args.out, result, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
