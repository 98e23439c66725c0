"""The UMT5 tokenizer from wherever a user has one: a diffusers folder, a ``.model`` file, or the sentencepiece
model that ComfyUI embeds in its text-encoder files.

sentencepiece / tokenizers / transformers are imported inside the functions: they take seconds to import.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Union

import torch

from ..errors import CheckpointError
from .state_dicts import SPIECE_KEY, file_tensors, read_state_dict, require_exists

__all__ = ["tokenizer_from_spm", "load_tokenizer"]

PathLike = Union[str, Path]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _proto_fields(buf: bytes):
    """(field number, value) pairs of one protobuf message; enough to read sentencepiece's ModelProto.

    Written out because the only alternative, the ``protobuf`` package, would be a dependency for
    reading two fields.
    """
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def tokenizer_from_spm(spm: Union[bytes, PathLike], source: str = "sentencepiece model"):
    """A transformers ``T5Tokenizer`` equivalent to a (U)MT5 sentencepiece model.

    Vocabulary, scores and piece types come from the model itself, and its precompiled
    normaliser (NFKC tables) is kept, so ids match sentencepiece's own ``encode`` + ``</s>``,
    which is what ComfyUI feeds its UMT5 and what the diffusers tokenizer produces.
    """
    import sentencepiece
    from tokenizers import AddedToken
    from transformers import T5Tokenizer

    data = Path(spm).read_bytes() if not isinstance(spm, (bytes, bytearray)) else bytes(spm)
    try:
        processor = sentencepiece.SentencePieceProcessor(model_proto=data)
    except Exception as exc:
        raise CheckpointError(f"{source} is not a valid sentencepiece model ({exc})") from exc
    if (processor.pad_id(), processor.eos_id(), processor.unk_id()) != (0, 1, 2):
        raise CheckpointError(
            f"{source} is not a T5/UMT5 sentencepiece model (pad/eos/unk ids are "
            f"{processor.pad_id()}/{processor.eos_id()}/{processor.unk_id()}, expected 0/1/2)"
        )
    charsmap = None
    pieces: list[tuple[str, float]] = []
    special: list[AddedToken] = []
    for number, value in _proto_fields(data):
        if number == 1:  # SentencePiece {1: piece, 2: score, 3: type}
            piece, score, kind = "", 0.0, 1
            for n, v in _proto_fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            if kind in (3, 4) and len(pieces) > 2:  # control / user-defined beyond pad, eos, unk
                special.append(AddedToken(piece, normalized=False, special=kind == 3))
            pieces.append((piece, score))
        elif number == 3:  # NormalizerSpec {2: precompiled_charsmap}
            charsmap = next((v for n, v in _proto_fields(value) if n == 2), None) or None
    if len(pieces) != processor.get_piece_size():
        raise CheckpointError(
            f"{source}: could not read its vocabulary ({len(pieces)} of {processor.get_piece_size()} pieces)")
    return T5Tokenizer(
        vocab=pieces,
        _spm_precompiled_charsmap=charsmap,
        extra_ids=0,
        additional_special_tokens=special or None,
        model_max_length=512,
    )


def load_tokenizer(path: PathLike):
    """A UMT5 tokenizer from a tokenizer folder, a diffusers Wan folder, a ``.model`` file, or a text
    encoder file that embeds ``spiece_model``."""
    from transformers import AutoTokenizer

    path = require_exists(path, "tokenizer", "give the tokenizer/ folder of a Wan2.1-T2V-*-Diffusers download")
    if path.is_dir():
        folder = path / "tokenizer" if (path / "model_index.json").is_file() else path
        if not any((folder / n).is_file() for n in ("tokenizer.json", "spiece.model", "tokenizer_config.json")):
            raise CheckpointError(
                f"{folder} has no tokenizer files (tokenizer.json / spiece.model); give the tokenizer/ folder "
                f"of a Wan2.1-T2V-*-Diffusers download",
                path=folder,
            )
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if path.suffix.lower() == ".model":
        return tokenizer_from_spm(path, source=str(path))
    if path.suffix.lower() == ".safetensors":
        sd = read_state_dict(path, keys=[k for k in file_tensors(path) if k == SPIECE_KEY])
        if SPIECE_KEY in sd:
            return tokenizer_from_spm(bytes(sd[SPIECE_KEY].to(torch.uint8).numpy().tobytes()), source=str(path))
    raise CheckpointError(
        f"{path} holds no tokenizer (no tokenizer folder, .model file or embedded spiece_model); give the "
        f"tokenizer/ folder of a Wan2.1-T2V-*-Diffusers download",
        path=path,
    )
