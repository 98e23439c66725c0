"""`python -m vist3a parity FIXTURE.safetensors`: numerical parity with the official VIST3A code.

The fixture's sibling `.json` describes the run (`run_config`); weights are re-created with the
deterministic fill rules of tests/fixtures/PARITY.md, checked against the stored checksums, the model is
run on the stored inputs and every tensor whose name we recognise is compared with
max|a-b| <= tol * max|ref|. Voxelised outputs are compared by count, stats and nearest-mean matched
rows, because 1e-6 noise can move a point across a voxel boundary.
"""

from __future__ import annotations

import json
import math
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_write
from .errors import ParityError
from .models import AnySplat, AnySplatConfig, SplatOutput, StitchConfig, StitchedDecoder
from .models.anysplat import AnySplatEncoder

DEFAULT_TOL = 1e-4
GAUSSIAN_FIELDS = ("means", "covariances", "harmonics", "opacities", "scales", "rotations")



# ---------------------------------------------------------------------------------------------- fill


def fill_kind(name: str, shape) -> str:
    if name.endswith("bias"):
        return "zeros"
    if name.endswith("ls1.gamma") or name.endswith("ls2.gamma"):
        return "ones"
    if name.endswith("weight") and len(shape) == 1 and "norm" in name:
        return "ones"
    if name.endswith("weight") and len(shape) >= 2:
        return "fanin"
    return "std002"


def fill_value(name: str, shape, rule: str = "A", offset: int = 0, camera_rule: bool = True) -> tuple[str, torch.Tensor]:
    """The value rule A/B gives parameter `name` (PARITY.md section 2)."""
    kind = fill_kind(name, shape)
    shape = tuple(int(s) for s in shape)

    def randn():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")) + offset)
        return torch.randn(shape, generator=g, dtype=torch.float32)

    if kind == "zeros":
        v = randn() * 0.02 if rule == "B" else torch.zeros(shape)
    elif kind == "ones":
        v = 1 + randn() * 0.02 if rule == "B" else torch.ones(shape)
    else:
        v = randn()
        if kind == "fanin":
            v *= math.prod(shape[1:]) ** -0.5
        else:
            v *= 0.02
    if camera_rule and name.endswith("camera_head.pose_branch.fc2.weight"):
        v *= 0.1
    if camera_rule and name.endswith("camera_head.pose_branch.fc2.bias"):
        v = torch.tensor([0, 0, 0, 0, 0, 0, 0.25, 0.3, 0.3], dtype=torch.float32)
    return kind, v


@torch.no_grad()
def fill_model(model: torch.nn.Module, rule: str, offset: int, checksums: list | None, camera_rule: bool = True) -> int:
    """Fill every state_dict entry; verify against `[key, kind, sum, first]` checksums when given.

    Returns the number of verified entries; raises ParityError on the first mismatch."""
    state = model.state_dict()
    expected = {row[0]: row for row in checksums} if checksums else None
    if expected is not None:
        missing = [k for k in expected if k not in state]
        extra = [k for k in state if k not in expected]
        if missing or extra:
            raise ParityError(
                f"the fixture's fill checksums name {len(missing)} parameters our model lacks "
                f"(e.g. {missing[:2]}) and our model has {len(extra)} it does not list (e.g. {extra[:2]})"
            )
    for name, tensor in state.items():
        kind, value = fill_value(name, tensor.shape, rule, offset, camera_rule)
        if expected is not None:
            _, want_kind, want_sum, want_first = expected[name]
            got_sum = float(value.double().sum())
            got_first = float(value.reshape(-1)[0])
            if (
                kind != want_kind
                or abs(got_sum - want_sum) > 1e-6 * max(1.0, abs(want_sum))
                or abs(got_first - want_first) > 1e-7 * max(1.0, abs(want_first))
            ):
                raise ParityError(
                    f"fill checksum mismatch for {name}: expected ({want_kind}, sum {want_sum}, first {want_first}), "
                    f"got ({kind}, sum {got_sum}, first {got_first})"
                )
        tensor.copy_(value)
    return len(expected) if expected else 0


# ----------------------------------------------------------------------------------------- run model


def _model_config(run_config: dict) -> AnySplatConfig:
    enc = run_config.get("encoder_cfg")
    return AnySplatConfig.from_official(enc) if enc else AnySplatConfig()


def build_model(meta: dict, inputs: dict) -> torch.nn.Module:
    rc = meta.get("run_config", {})
    cfg = _model_config(rc)
    if "input/z" in inputs:
        cut = StitchConfig.parse_location(rc.get("stitching_layer_location", "enc_blocks_2"))
        spec = rc.get("stitching_layer_config", "conv3d_k5x3x3_o1024_s1x2x2_p2x1x1")
        return StitchedDecoder(StitchConfig(cut_block=cut, anysplat=cfg, **parse_conv_spec(spec)))
    if "input/images" in inputs:
        return AnySplat(cfg)
    raise ParityError("fixture has neither input/z (stitched decoder) nor input/images (AnySplat)")


def parse_conv_spec(spec: str) -> dict:
    """`conv3d_k5x3x3_o1024_s1x2x2_p2x1x1` -> StitchConfig kernel/stride/padding (out = embed_dim)."""
    m = re.fullmatch(r"conv3d_k([\dx]+)_o(\d+)(?:_s([\dx]+))?(?:_p([\dx]+))?", spec)
    if not m:
        raise ParityError(f"unsupported stitching layer spec {spec!r}; expected e.g. conv3d_k5x3x3_o1024_s1x2x2_p2x1x1")

    def triple(txt, default):
        if not txt:
            return default
        parts = tuple(int(p) for p in txt.split("x"))
        return parts * 3 if len(parts) == 1 else parts

    return {"kernel": triple(m.group(1), None), "stride": triple(m.group(3), (1, 1, 1)), "padding": triple(m.group(4), (0, 0, 0))}


def _gaussians_dict(out_gaussians) -> dict:
    g = out_gaussians[0]
    return {f: getattr(g, f).unsqueeze(0) for f in GAUSSIAN_FIELDS}


@torch.no_grad()
def run_model(model, inputs: dict) -> dict:
    """Run once (per-pixel Gaussians) and voxelise the same head outputs; return named tensors."""
    model.eval()
    if "input/z" in inputs:
        out: SplatOutput = model.forward_with_latent(inputs["input/z"], inputs["input/context_image"], voxelize_output=False, capture=True)
    else:
        out = model(inputs["input/images"], voxelize_output=False, capture=True)
    encoder: AnySplatEncoder = model.encoder
    B = out.depth.shape[0]
    # opacity_conf has no voxelised variant (the official code cannot combine them either).
    vox = None if encoder.cfg.opacity_conf else encoder.gaussians_from_raw(out.raw_gs, out.points, B, True, out.depth_conf)
    named = {
        "inter/patch_embed_norm_out": out.captures["patch_embed_norm_out"],
        "inter/gs_head_out": out.raw_gs,
        "out/depth": out.depth,
        "out/depth_conf": out.depth_conf,
        "out/pred_pose_enc_list": torch.stack(out.pose_enc_list),
        "out/last_pred_pose_enc": out.pose_enc_list[-1],
        "out/pred_context_pose_extrinsic": out.extrinsics,
        "out/pred_context_pose_intrinsic": out.intrinsics,
        "out/scene_scale": out.scene_scale.double().reshape(1),
    }
    if vox is not None:
        named["vox/num_gaussians"] = torch.tensor([float(vox[0].means.shape[0])], dtype=torch.float64)
    for i, agg in enumerate(out.captures["agg_out"]):
        named[f"inter/agg_out_{i}"] = agg
    if "stitch_tokens" in out.captures:
        named["inter/stitch_tokens"] = out.captures["stitch_tokens"]
        named["inter/latent_up"] = out.captures["latent_up"]
    for prefix, gs in (("out", out.gaussians), ("vox", vox)):
        if gs is None:
            continue
        for f, t in _gaussians_dict(gs).items():
            named[f"{prefix}/gaussians/{f}"] = t
    return named


# ------------------------------------------------------------------------------------------ compare


@dataclass
class Line:
    name: str
    rel: float  # the error relative to the tolerance's scale
    ok: bool
    note: str = ""


@dataclass
class Report:
    lines: list[Line] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.lines) and all(l.ok for l in self.lines)

    @property
    def worst(self) -> Line | None:
        return max(self.lines, key=lambda l: l.rel, default=None)


def stats7(t: torch.Tensor) -> torch.Tensor:
    """[numel, sum, abs_sum, l2_norm, min, max, mean] in float64, as the fixture stores them."""
    d = t.double().reshape(-1)
    return torch.tensor([d.numel(), d.sum(), d.abs().sum(), d.norm(), d.min(), d.max(), d.mean()], dtype=torch.float64)


def max_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double(), ref.double()
    scale = ref.abs().max().item()
    diff = (a - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def compare_stats(ours: torch.Tensor, ref: torch.Tensor, tol: float) -> tuple[float, bool, str]:
    """numel exact; abs_sum and l2 relative; min/max relative to max(|min|,|max|). Sum/mean are
    skipped: they cancel for zero-mean tensors."""
    s = stats7(ours)
    if int(s[0]) != int(ref[0]):
        return math.inf, False, f"numel {int(s[0])} vs {int(ref[0])}"
    rel_abs = abs(s[2] - ref[2]).item() / max(abs(ref[2].item()), 1e-30)
    rel_l2 = abs(s[3] - ref[3]).item() / max(abs(ref[3].item()), 1e-30)
    span = max(abs(ref[4].item()), abs(ref[5].item()), 1e-30)
    rel_mm = max(abs(s[4] - ref[4]).item(), abs(s[5] - ref[5]).item()) / span
    worst = max(rel_abs, rel_l2, rel_mm)
    return worst, worst <= tol, "stats"


def _match_rows(ours: dict, ref: dict, index: torch.Tensor, tol: float) -> tuple[float, bool, str]:
    """Voxel rows: each reference row is matched to our voxel with the nearest mean (exact distances)."""
    if "means" not in ref:
        worst = max(max_rel(ours[f][:, index.long()], r) for f, r in ref.items())
        return worst, worst <= tol, "rows compared by index (no reference means to match on)"
    means = ours["means"][0].double()
    ref_means = ref["means"][0].double()
    nearest = torch.empty(len(ref_means), dtype=torch.long)
    for start in range(0, len(ref_means), 256):
        chunk = ref_means[start : start + 256]
        d = ((chunk[:, None, :] - means[None, :, :]) ** 2).sum(-1)
        nearest[start : start + 256] = d.argmin(dim=1)
    worst = 0.0
    for f, r in ref.items():
        worst = max(worst, max_rel(ours[f][0][nearest], r[0]))
    shifted = int((nearest != index.long()).sum())
    return worst, worst <= tol, f"rows matched by nearest mean ({shifted} of {len(index)} moved)"


def compare(named: dict, ref: dict, tol: float = DEFAULT_TOL, prefix: str = "") -> Report:
    """Compare our named outputs with the fixture tensors under `prefix` ('' or 'ruleB/')."""
    report = Report()
    refs = {k[len(prefix):]: v for k, v in ref.items() if k.startswith(prefix) and not k.startswith("input/")}
    if not prefix:
        refs = {k: v for k, v in refs.items() if not k.startswith("ruleB/")}
    vox_subset = {}
    for name, r in sorted(refs.items()):
        label = prefix + name
        if name.startswith("vox/gaussians_subset/"):
            vox_subset[name.rsplit("/", 1)[1]] = r
            continue
        if name == "vox/num_gaussians":
            n, want = named[name].item(), r.item()
            report.lines.append(Line(label, abs(n - want) / max(want, 1), abs(n - want) <= max(8, 1e-3 * want), f"{int(n)} vs {int(want)}"))
            continue
        if name.startswith("stats/"):
            ours = named.get(name[len("stats/"):])
            if ours is None:
                report.skipped.append(label)
                continue
            rel, ok, note = compare_stats(ours, r, tol)
            report.lines.append(Line(label, rel, ok, note))
            continue
        ours = resolve(name, named, refs)
        if ours is None:
            report.skipped.append(label)
            continue
        if tuple(ours.shape) != tuple(r.shape):
            report.lines.append(Line(label, math.inf, False, f"shape {list(ours.shape)} vs {list(r.shape)}"))
            continue
        rel = max_rel(ours, r)
        report.lines.append(Line(label, rel, rel <= tol))
    if vox_subset and "vox/gaussians_subset_index" in refs:
        ours = {f: named[f"vox/gaussians/{f}"] for f in vox_subset}
        rel, ok, note = _match_rows(ours, vox_subset, refs["vox/gaussians_subset_index"], tol)
        report.lines.append(Line(prefix + "vox/gaussians_subset/*", rel, ok, note))
    return report


def resolve(name: str, named: dict, refs: dict) -> torch.Tensor | None:
    """Map a fixture tensor name to ours: full names, `_frameN` slices, `gs_head_out_chN_*`, subsets."""
    if name in named:
        return named[name]
    m = re.fullmatch(r"(.+)_frame(\d+)", name)
    if m and m.group(1) in named:
        full, i = named[m.group(1)], int(m.group(2))
        if m.group(1) == "inter/patch_embed_norm_out":
            return full[i]  # [B*S, P, C] with B = 1
        return full[:, i]
    m = re.fullmatch(r"inter/gs_head_out_ch(\d+)(?:_\w+)?", name)
    if m:
        return named["inter/gs_head_out"][:, :, int(m.group(1))]
    if name == "inter/gs_head_out_subset" and "out/gaussians_subset_index" in refs:
        raw = named["inter/gs_head_out"]
        flat = raw.permute(0, 1, 3, 4, 2).reshape(raw.shape[0], -1, raw.shape[2])
        return flat[:, refs["out/gaussians_subset_index"].long()]
    m = re.fullmatch(r"(out|vox)/gaussians_subset/(\w+)", name)
    if m and f"{m.group(1)}/gaussians_subset_index" in refs:
        full = named.get(f"{m.group(1)}/gaussians/{m.group(2)}")
        if full is not None:
            return full[:, refs[f"{m.group(1)}/gaussians_subset_index"].long()]
    if name.endswith("_index"):
        return refs[name]  # subset indices are inputs to the comparison, compared to themselves
    return None


# ------------------------------------------------------------------------------------------- driver


def load_fixture(path: str | Path) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise ParityError(f"fixture {path} does not exist")
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise ParityError(f"fixture {path} has no sibling metadata file {meta_path.name}")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ParityError(f"fixture {path} is not a readable safetensors file ({exc})") from None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ParityError(f"metadata {meta_path} is not valid JSON ({exc})") from None
    return tensors, meta


def run_parity(path: str | Path, tol: float = DEFAULT_TOL, echo=print) -> Report:
    t0 = time.perf_counter()
    ref, meta = load_fixture(path)
    rc = meta.get("run_config", {})
    offset = int(rc.get("seed_offset", 0))
    camera_rule = bool(rc.get("special_camera_head_rule", True))
    inputs = {k: v for k, v in ref.items() if k.startswith("input/")}
    model = build_model(meta, inputs)
    report = Report()
    rules = [("A", "", meta.get("fill_checksums_rule_A"))]
    if any(k.startswith("ruleB/") for k in ref):
        rules.append(("B", "ruleB/", meta.get("fill_checksums_rule_B")))
    for rule, prefix, checksums in rules:
        verified = fill_model(model, rule, offset, checksums, camera_rule)
        echo(f"rule {rule}: filled {len(model.state_dict())} tensors, {verified} checksums verified")
        named = run_model(model, inputs)
        part = compare(named, ref, tol, prefix)
        report.lines += part.lines
        report.skipped += part.skipped
    for line in report.lines:
        echo(f"  {line.name:58s} {line.rel:10.3e}  {'ok' if line.ok else 'FAIL'}  {line.note}".rstrip())
    for name in report.skipped:
        echo(f"  {name:58s} (not recognised, not compared)")
    worst = report.worst
    wall = time.perf_counter() - t0
    n_fail = sum(not l.ok for l in report.lines)
    if report.passed:
        echo(f"parity: PASS {len(report.lines)} tensors within {tol:g}*max|ref|, worst {worst.rel:.3e} ({worst.name}), {wall:.1f} s")
    else:
        where = f"worst {worst.rel:.3e} ({worst.name})" if worst else "nothing compared"
        echo(f"parity: FAIL {n_fail} of {len(report.lines)} tensors over {tol:g}*max|ref|, {where}, {wall:.1f} s")
    return report


# ------------------------------------------------------------------------------------ fixture writer


def write_fixture(path: str | Path, inputs: dict, run_config: dict, *, subset_stride: int = 16) -> Path:
    """Write a fixture in the official layout from OUR model (rule A, `run_config['seed_offset']`).

    For checking the tool's plumbing on shapes the public fixtures do not cover (frame counts above
    the DPT chunk of 8, other sizes and seed offsets); numerical parity itself comes only from
    fixtures made with the official code.
    """


    path = Path(path)
    meta = {"run_config": dict(run_config)}
    model = build_model(meta, inputs)
    offset = int(run_config.get("seed_offset", 0))
    fill_model(model, "A", offset, None, bool(run_config.get("special_camera_head_rule", True)))
    checksums = []
    for name, tensor in model.state_dict().items():
        kind = fill_kind(name, tensor.shape)
        checksums.append([name, kind, float(tensor.double().sum()), float(tensor.reshape(-1)[0])])
    named = run_model(model, inputs)
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    for key in ("out/depth", "out/depth_conf", "out/pred_pose_enc_list", "out/last_pred_pose_enc",
                "out/pred_context_pose_extrinsic", "out/pred_context_pose_intrinsic", "out/scene_scale",
                "vox/num_gaussians", "inter/patch_embed_norm_out", "inter/gs_head_out"):
        tensors[key] = named[key]
    last = max(int(k.rsplit("_", 1)[1]) for k in named if k.startswith("inter/agg_out_"))
    tensors[f"inter/agg_out_{last}_frame1"] = named[f"inter/agg_out_{last}"][:, 1]
    for prefix in ("out", "vox"):
        n = named[f"{prefix}/gaussians/means"].shape[1]
        index = torch.arange(0, n, subset_stride)
        tensors[f"{prefix}/gaussians_subset_index"] = index.float()
        for f in GAUSSIAN_FIELDS:
            full = named[f"{prefix}/gaussians/{f}"]
            tensors[f"{prefix}/gaussians_subset/{f}"] = full[:, index]
            tensors[f"stats/{prefix}/gaussians/{f}"] = stats7(full)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta["fill_checksums_rule_A"] = checksums
    meta["shapes"] = {k: list(v.shape) for k, v in tensors.items()}
    save_file(tensors, str(path))
    with atomic_write(path.with_suffix(".json"), "w") as f:
        json.dump(meta, f)
    return path
