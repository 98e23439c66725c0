"""The stitched decoder's weights: cut AnySplat, list the LoRA-wrapped layers, merge and write the official checkpoint.

Key facts (see ``tests/fixtures/stitched_checkpoint_format.md``):

* The stitched decoder is AnySplat with the 14x14 patch conv removed and the first ``cut`` DINO
  blocks deleted; ``nn.ModuleList`` deletion renumbers the remaining blocks from 0.
* The official checkpoint stores LoRA factors for every ``nn.Linear``/``nn.Conv2d`` (the DPT heads'
  ``resize_layers.0/1`` are ConvTranspose2d and are not wrapped), the trained biases of those
  layers, the Conv3d stitching layer and three trained tokens. It is merged as
  ``W + (B @ A).view(W.shape) * alpha / r`` with ``alpha / r = 32 / 64 = 0.5``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import torch

from ..errors import CheckpointError
from .common import fmt_shape, shape_of
from .keys import (
    CONV_TRANSPOSE_RE,
    DINO_BLOCKS_PREFIX,
    DINO_RE,
    DISTILL_PREFIX,
    OFFICIAL_LORA_RANK,
    OFFICIAL_LORA_SCALE,
    PATCH_CONV_PREFIX,
    STITCHED_PTH_TOP_KEYS,
    STITCHING_PREFIX,
    TOKEN_KEYS,
    dino_block_count,
)


def stitched_from_anysplat(
    full_sd: Mapping[str, Any], cut: int = 2, *, drop_distill: bool = True, source: str = "AnySplat weights"
) -> dict:
    """AnySplat state dict -> stitched-decoder state dict (without the new stitching layer).

    Mirrors ``AnySplatStitched(model, f"enc_blocks_{cut}")``: the 14x14 patch conv and DINO blocks
    ``0..cut-1`` are dropped and block ``i + cut`` becomes block ``i`` (ModuleList deletion
    renumbers). ``encoder.distill_*`` (unused training copies) are dropped unless asked not to.
    Values are passed through untouched, so this also works on shape metadata.
    """
    n_blocks = dino_block_count(full_sd)
    if n_blocks == 0:
        raise CheckpointError(
            f"Checkpoint '{source}' has no '{DINO_BLOCKS_PREFIX}N.*' keys, so it is not an AnySplat "
            "model; load the lhjiang/anysplat model.safetensors as the base.",
            path=source,
        )
    if not 0 <= cut <= n_blocks:
        raise CheckpointError(
            f"Cannot cut '{source}' after {cut} DINO blocks: it has {n_blocks}; use a cut between 0 "
            f"and {n_blocks} (the released decoder uses 2).",
            path=source,
        )
    out: dict = {}
    for key, value in full_sd.items():
        if key.startswith(PATCH_CONV_PREFIX) or (drop_distill and key.startswith(DISTILL_PREFIX)):
            continue
        m = DINO_RE.match(key)
        if m:
            i = int(m.group(1))
            if i < cut:
                continue
            key = f"{DINO_BLOCKS_PREFIX}{i - cut}.{m.group(2)}"
        out[key] = value
    return out


class WrappedModule(NamedTuple):
    """A layer the official ``add_lora(target_modules=None)`` wraps, described by shapes only."""

    name: str
    kind: str  # "Linear" | "Conv2d"
    weight_shape: tuple[int, ...]
    has_bias: bool

    def lora_shapes(self, rank: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(lora_A, lora_B) shapes at ``rank``; conv factors are scaled by the kernel size k."""
        if self.kind == "Linear":
            out_f, in_f = self.weight_shape
            return (rank, in_f), (out_f, rank)
        out_c, in_c, k = self.weight_shape[:3]
        return (rank * k, in_c * k), (out_c * k, rank * k)

    def rank_of(self, lora_A_shape: Sequence[int]) -> Optional[int]:
        """Rank implied by a lora_A shape, or None when it cannot belong to this layer."""
        a = tuple(lora_A_shape)
        if len(a) != 2:
            return None
        k = 1 if self.kind == "Linear" else self.weight_shape[2]
        if a[0] % k or a[0] == 0:
            return None
        rank = a[0] // k
        return rank if self.lora_shapes(rank)[0] == a else None


def wrapped_modules(stitched_sd: Mapping[str, Any]) -> list[WrappedModule]:
    """The modules the official code wraps with LoRA, in state-dict order.

    Every 2-D ``.weight`` (``nn.Linear``) and 4-D ``.weight`` (``nn.Conv2d``), except the DPT heads'
    ``resize_layers.0/1`` (ConvTranspose2d, not a Conv2d subclass) and the Conv3d stitching layer,
    which lives outside the wrapped model. Works on tensors or shapes.
    """
    mods = []
    for key, value in stitched_sd.items():
        if not key.endswith(".weight") or key.startswith(STITCHING_PREFIX) or CONV_TRANSPOSE_RE.search(key):
            continue
        shape = shape_of(value)
        name = key[: -len(".weight")]
        if len(shape) == 2:
            kind = "Linear"
        elif len(shape) == 4:
            if shape[2] != shape[3]:
                raise CheckpointError(
                    f"Layer '{name}' has a non-square kernel {fmt_shape(shape)} that the official Conv2d "
                    "LoRA cannot wrap; this state dict is not a VIST3A stitched decoder.",
                    key=key,
                )
            kind = "Conv2d"
        else:
            continue
        mods.append(WrappedModule(name, kind, shape, f"{name}.bias" in stitched_sd))
    return mods


def expected_lora_keys(
    stitched_sd: Mapping[str, Any], rank: int = OFFICIAL_LORA_RANK
) -> "OrderedDict[str, tuple[int, ...]]":
    """Key -> shape of the official ``ckpt["lora"]`` dict, in its order (lora_A, bias, lora_B)."""
    keys: "OrderedDict[str, tuple[int, ...]]" = OrderedDict()
    for m in wrapped_modules(stitched_sd):
        a, b = m.lora_shapes(rank)
        keys[f"{m.name}.lora_A"] = a
        if m.has_bias:
            keys[f"{m.name}.bias"] = (m.weight_shape[0],)
        keys[f"{m.name}.lora_B"] = b
    return keys


def _check_factors(m: WrappedModule, A: Any, B: Any, *, source: str) -> int:
    """Shapes of one module's (A, B) must fit its weight; returns the rank."""
    a, b = shape_of(A), shape_of(B)
    rank = m.rank_of(a)
    if rank is None or m.lora_shapes(rank)[1] != b:
        out_c, in_c = m.weight_shape[:2]
        if m.kind == "Linear":
            need = f"lora_A [r, {in_c}] and lora_B [{out_c}, r]"
        else:
            k = m.weight_shape[2]
            need = f"lora_A [r*{k}, {in_c * k}] and lora_B [{out_c * k}, r*{k}]"
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has LoRA factors for '{m.name}' of shapes lora_A "
            f"{fmt_shape(a)} / lora_B {fmt_shape(b)}, but the decoder's {m.kind} weight {fmt_shape(m.weight_shape)} "
            f"needs {need}; use the AnySplat base and cut this checkpoint was trained with.",
            path=source,
            key=f"{m.name}.lora_A",
        )
    return rank


def _check_top_level(ckpt: Any, source: str) -> None:
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' holds a {type(ckpt).__name__}, not a dict; expected the "
            f"official anysplat_stitched.pth layout with {', '.join(STITCHED_PTH_TOP_KEYS)}.",
            path=source,
        )
    for key in STITCHED_PTH_TOP_KEYS:
        if key not in ckpt:
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has no top-level key '{key}' (found "
                f"{', '.join(map(str, ckpt))}); expected the official anysplat_stitched.pth layout.",
                path=source,
                key=key,
            )
    if not isinstance(ckpt["lora"], Mapping):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has a {type(ckpt['lora']).__name__} under 'lora' where a "
            "dict of LoRA tensors was expected; re-download the checkpoint.",
            path=source,
            key="lora",
        )
    sl = ckpt["stitching_layer"]
    if not isinstance(sl, Mapping) or not all(
        isinstance(sl.get(k), torch.Tensor) for k in ("weight", "bias")
    ):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has no tensors 'weight' and 'bias' under 'stitching_layer'; "
            "re-download the checkpoint.",
            path=source,
            key="stitching_layer",
        )


def _replacement(
    out: dict, stitched_sd: Mapping[str, Any], key: str, value: Any, *, source: str, ckpt_key: str
) -> None:
    """Put ``value`` (float32 copy) under ``key`` after checking it against the base's shape."""
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has a {type(value).__name__} under '{ckpt_key}' where a "
            "tensor was expected; re-download the checkpoint.",
            path=source,
            key=ckpt_key,
        )
    if key in stitched_sd and shape_of(stitched_sd[key]) != tuple(value.shape):
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has '{ckpt_key}' of shape {fmt_shape(value.shape)} but the "
            f"decoder's '{key}' is {fmt_shape(shape_of(stitched_sd[key]))}; use the AnySplat base and "
            "stitching configuration this checkpoint was trained with.",
            path=source,
            key=ckpt_key,
        )
    out[key] = value.detach().to(device="cpu", dtype=torch.float32, copy=True)


def merge_stitched_checkpoint(
    stitched_sd: Mapping[str, torch.Tensor],
    ckpt: Mapping[str, Any],
    *,
    source: str,
    lora_scale: float = OFFICIAL_LORA_SCALE,
    strict: bool = True,
) -> dict[str, torch.Tensor]:
    """Apply an official ``anysplat_stitched.pth`` dict to a stitched-decoder state dict.

    Per wrapped module M: ``W += (B @ A).view(W.shape) * lora_scale`` in float32 (the official
    eval-mode merge, but without its in-place bf16 rounding), ``M.bias`` replaced by the trained
    bias; then the stitching layer and the three tokens are replaced. ``encoder.distill_*`` keys are
    ignored. Every other LoRA key must fit a module of ``stitched_sd`` and (with ``strict``) every
    wrapped module must have factors, which catches a wrong base or a different cut. Inputs are not
    modified; untouched tensors are shared with ``stitched_sd``.
    """
    _check_top_level(ckpt, source)
    modules = {m.name: m for m in wrapped_modules(stitched_sd)}
    n_blocks = dino_block_count(stitched_sd)
    parts = _lora_parts(ckpt["lora"], modules, n_blocks, source=source)
    if strict:
        _check_every_module_has_factors(modules, parts, n_blocks, source=source)
    out = dict(stitched_sd)
    for name, p in parts.items():
        _merge_module(out, stitched_sd, modules[name], p, lora_scale, source=source)
    _replace_stitching_layer_and_tokens(out, stitched_sd, ckpt, source=source)
    return out


def _lora_parts(
    lora: Mapping[Any, Any], modules: Mapping[str, WrappedModule], n_blocks: int, *, source: str
) -> dict[str, dict[str, torch.Tensor]]:
    """``ckpt["lora"]`` grouped per wrapped module (name -> lora_A / lora_B / bias); unknown keys are refused."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        if not isinstance(key, str):
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has a non-string LoRA key {key!r}; re-download it.",
                path=source,
            )
        if key.startswith(DISTILL_PREFIX):
            continue
        for suffix in (".lora_A", ".lora_B", ".bias"):
            if key.endswith(suffix):
                name, part = key[: -len(suffix)], suffix[1:]
                break
        else:
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has LoRA key '{key}', which is none of "
                "'<module>.lora_A', '<module>.lora_B' or '<module>.bias'; this is not an official "
                "anysplat_stitched.pth, so re-download it.",
                path=source,
                key=key,
            )
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has a {type(value).__name__} under LoRA key '{key}' "
                "where a tensor was expected; re-download it.",
                path=source,
                key=key,
            )
        if name not in modules:
            m = DINO_RE.match(key)
            hint = (
                f"; the decoder has DINO blocks 0..{n_blocks - 1} after its cut, so the checkpoint "
                "was made for a different cut"
                if m
                else ""
            )
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has LoRA key '{key}' (shape {fmt_shape(value.shape)}) but "
                f"the stitched decoder has no LoRA-wrapped module '{name}'{hint}; use the AnySplat base "
                "and cut this checkpoint was trained with.",
                path=source,
                key=key,
            )
        parts.setdefault(name, {})[part] = value
    return parts


def _check_every_module_has_factors(
    modules: Mapping[str, WrappedModule], parts: Mapping[str, Any], n_blocks: int, *, source: str
) -> None:
    """Every layer the official code wraps must have factors (otherwise: a wrong base or another cut)."""
    absent = [n for n in modules if n not in parts]
    if absent:
        more = f" (and {len(absent) - 1} more modules)" if len(absent) > 1 else ""
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has no LoRA factors for '{absent[0]}'{more}, which the "
            f"official code wraps in this decoder ({n_blocks} DINO blocks after the cut); use the "
            "AnySplat base and cut this checkpoint was trained with.",
            path=source,
            key=f"{absent[0]}.lora_A",
        )


def _merge_module(
    out: dict, stitched_sd: Mapping[str, torch.Tensor], m: WrappedModule, p: Mapping[str, torch.Tensor],
    lora_scale: float, *, source: str,
) -> None:
    """``W + (B @ A).view(W.shape) * lora_scale`` in float32, and the trained bias, into ``out``."""
    name = m.name
    for half in ("lora_A", "lora_B"):
        if half not in p:
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has no '{name}.{half}' although it has the other "
                "half of that module's LoRA; the file is incomplete, so re-download it.",
                path=source,
                key=f"{name}.{half}",
            )
    _check_factors(m, p["lora_A"], p["lora_B"], source=source)
    weight = stitched_sd[f"{name}.weight"]
    delta = p["lora_B"].detach().to("cpu", torch.float32) @ p["lora_A"].detach().to("cpu", torch.float32)
    out[f"{name}.weight"] = weight.detach().to("cpu").float() + delta.reshape(weight.shape) * lora_scale
    if "bias" in p:
        if not m.has_bias:
            raise CheckpointError(
                f"Stitched checkpoint '{source}' has '{name}.bias' but that layer of the decoder has "
                "no bias; use the AnySplat base this checkpoint was trained with.",
                path=source,
                key=f"{name}.bias",
            )
        _replacement(
            out, stitched_sd, f"{name}.bias", p["bias"], source=source, ckpt_key=f"lora/{name}.bias"
        )


def _replace_stitching_layer_and_tokens(
    out: dict, stitched_sd: Mapping[str, torch.Tensor], ckpt: Mapping[str, Any], *, source: str
) -> None:
    """The trained Conv3d stitching layer and the three trained tokens replace the base's."""
    sl = ckpt["stitching_layer"]
    if tuple(sl["weight"].shape[:1]) != tuple(sl["bias"].shape) or sl["weight"].dim() != 5:
        raise CheckpointError(
            f"Stitched checkpoint '{source}' has a stitching layer weight {fmt_shape(sl['weight'].shape)} and "
            f"bias {fmt_shape(sl['bias'].shape)} that do not form a Conv3d; re-download it.",
            path=source,
            key="stitching_layer",
        )
    for part in ("weight", "bias"):
        _replacement(
            out, stitched_sd, f"{STITCHING_PREFIX}{part}", sl[part],
            source=source, ckpt_key=f"stitching_layer/{part}",
        )
    for ckpt_key, key in TOKEN_KEYS.items():
        if key not in stitched_sd:
            raise CheckpointError(
                f"The stitched decoder state dict has no '{key}' to receive '{ckpt_key}' from '{source}'; "
                "build it with stitched_from_anysplat() from a full AnySplat state dict.",
                path=source,
                key=key,
            )
        _replacement(out, stitched_sd, key, ckpt[ckpt_key], source=source, ckpt_key=ckpt_key)


def _cpu_copy(t: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    # clone() so torch.save stores only this tensor, never the whole storage it may be a view of
    return t.detach().to("cpu", dtype=dtype or t.dtype).clone(memory_format=torch.contiguous_format)


def make_stitched_checkpoint(
    trained_stitched_sd: Mapping[str, Any],
    lora_factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    source: str = "trained stitched decoder",
) -> dict:
    """Inverse of :func:`merge_stitched_checkpoint`, for our training export.

    ``trained_stitched_sd``: the stitched decoder after training with LoRA left UNmerged (its
    wrapped ``.weight`` tensors are the frozen base and are not stored; only their shapes are used),
    holding the trained biases, tokens and ``stitching_layer.*``. ``lora_factors``: module name ->
    (lora_A, lora_B) for every wrapped module, one rank throughout. Returns the official layout
    (``lora`` OrderedDict with ``M.lora_A, M.bias, M.lora_B`` per module in state-dict order, factors
    float32; ``stitching_layer`` {weight, bias}; tokens), loadable by ``torch.load(weights_only=True)``.
    The official loader itself only accepts rank 64 (it hard-codes ``r64,a32``).
    """
    modules = wrapped_modules(trained_stitched_sd)
    names = {m.name for m in modules}
    stray = [n for n in lora_factors if n not in names]
    if stray:
        raise CheckpointError(
            f"LoRA factors for '{stray[0]}' do not match any LoRA-wrapped module of '{source}'"
            f"{f' (and {len(stray) - 1} more)' if len(stray) > 1 else ''}; pass factors keyed by the "
            "stitched decoder's module names.",
            path=source,
            key=stray[0],
        )
    lora: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    ranks = set()
    for m in modules:
        if m.name not in lora_factors:
            raise CheckpointError(
                f"No LoRA factors were given for '{m.name}' of '{source}', which the official layout "
                "needs for every wrapped Linear/Conv2d; pass (lora_A, lora_B) for all of "
                "wrapped_modules().",
                path=source,
                key=m.name,
            )
        A, B = lora_factors[m.name]
        ranks.add(_check_factors(m, A, B, source=source))
        if len(ranks) > 1:
            raise CheckpointError(
                f"LoRA factors of '{m.name}' in '{source}' have rank {sorted(ranks)[-1]} while earlier "
                f"modules have rank {sorted(ranks)[0]}; the official layout uses one rank for all modules.",
                path=source,
                key=m.name,
            )
        lora[f"{m.name}.lora_A"] = _cpu_copy(A, torch.float32)
        if m.has_bias:
            bias = trained_stitched_sd[f"{m.name}.bias"]
            if not isinstance(bias, torch.Tensor):
                raise CheckpointError(
                    f"'{source}' has no bias tensor under '{m.name}.bias' (found {type(bias).__name__}); "
                    "pass the trained state dict with real tensors.",
                    path=source,
                    key=f"{m.name}.bias",
                )
            lora[f"{m.name}.bias"] = _cpu_copy(bias)
        lora[f"{m.name}.lora_B"] = _cpu_copy(B, torch.float32)

    def tensor(key: str) -> torch.Tensor:
        value = trained_stitched_sd.get(key)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"'{source}' has no tensor '{key}', which the official stitched checkpoint stores; "
                "pass the full trained stitched-decoder state dict.",
                path=source,
                key=key,
            )
        return _cpu_copy(value)

    ckpt: dict = {
        "lora": lora,
        "stitching_layer": {
            "weight": tensor("stitching_layer.weight"),
            "bias": tensor("stitching_layer.bias"),
        },
    }
    for ckpt_key, key in TOKEN_KEYS.items():
        ckpt[ckpt_key] = tensor(key)
    return ckpt
