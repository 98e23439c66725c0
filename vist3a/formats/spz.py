"""Niantic's ``.spz`` (gzip, ~10x smaller than PLY), version 2 as the reference library (nianticlabs/spz) writes it:

    header (16 bytes, little endian): magic 0x5053474e ("NGSP"), version 2, num_points u32,
        sh_degree u8 (0..3), fractional_bits u8, flags u8, reserved u8
    positions  N x 3 x 24-bit signed fixed point (value * 2^fractional_bits)
    alphas     N x u8   (opacity in (0, 1) * 255)
    colors     N x 3 u8 (SH DC coefficient * 0.15 * 255 + 127.5)
    scales     N x 3 u8 ((log scale + 10) * 16)
    rotations  N x 3 u8 (x, y, z of the unit quaternion with w >= 0, * 127.5 + 127.5)
    sh         N x ((d+1)^2 - 1) x 3 u8, coefficient-major / channel-minor; degree-1 bands quantised
               to 5 bits, higher bands to 4 bits (value * 128 + 128)

and the whole stream gzip-compressed. Coordinates are written as they are (no axis conversion), so a
file matches the PLY written from the same Gaussians. SH degrees above 3 are truncated (the format
stops at 3).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..atomic import atomic_save_bytes
from ..errors import SpzError
from ..gaussians import Gaussians
from .axes import sh_flip_signs
from .common import PathLike, cpu_float32

__all__ = ["SPZ_MAGIC", "SPZ_VERSION", "SpzError", "save_spz", "load_spz", "decode_spz", "spz_bytes", "widest_fractional_bits",
           "gzip_compress", "gzip_decompress"]

SPZ_MAGIC = 0x5053474E
SPZ_VERSION = 2
_COLOR_SCALE = 0.15
_HEADER = struct.Struct("<IIIBBBB")
_BLOCK_ROWS = 1 << 16


def _gzip_module():
    """python-isal's igzip (ISA-L: ~45x faster than zlib at level 6 on a decoder-sized scene, same gzip
    format) where it is installed, else the standard library."""
    try:
        from isal import igzip, igzip_threaded
    except ImportError:
        return None, None
    return igzip, igzip_threaded


def gzip_compress(parts: Sequence, compresslevel: Optional[int] = None) -> bytes:
    """``parts`` (contiguous buffers) as one gzip member (mtime 0). ``None``: the fast default (ISA-L
    level 2, threaded for big payloads, or zlib level 1 without isal); 0-3 use ISA-L when present; 4-9
    zlib (smaller, much slower). Big payloads stream part by part, never joined into one copy."""
    views = [memoryview(p).cast("B") for p in parts]
    igzip, threaded = _gzip_module()
    if igzip is not None and (compresslevel is None or compresslevel <= 3):
        level = 2 if compresslevel is None else compresslevel
        threads = min(4, os.cpu_count() or 1)
        if threads > 1 and sum(v.nbytes for v in views) > (8 << 20):  # one member, blocks compressed in parallel
            buf = io.BytesIO()
            with threaded.open(buf, "wb", compresslevel=level, threads=threads) as f:
                for view in views:
                    f.write(view)
            return buf.getvalue()
        return igzip.compress(b"".join(views), compresslevel=level, mtime=0)
    return gzip.compress(b"".join(views), compresslevel=1 if compresslevel is None else compresslevel, mtime=0)


def gzip_decompress(data: bytes) -> bytes:
    """Inflate a gzip stream; a corrupt one raises ``gzip.BadGzipFile`` whichever codec read it."""
    igzip, _ = _gzip_module()
    try:
        return (igzip or gzip).decompress(data)
    except _codec_errors() as e:
        raise gzip.BadGzipFile(f"corrupt deflate data: {e}") from e


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _quantize_sh(rest: torch.Tensor, signs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[N, 3, K-1] SH bands (times ``signs`` [K-1] when given) -> uint8 [N, K-1, 3] as stored
    (coefficient-major): round(x * 128) + 128
    rounded to a multiple of 8 (degree-1 bands, 5 bits) or 16 (higher bands, 4 bits), like the
    reference quantiser. The maths runs in the channel-major layout (contiguous inner rows); only the
    uint8 result is transposed. Blocks of rows keep the float temporaries in cache."""
    n, _, bands = rest.shape
    bucket = torch.full((bands,), 16.0)
    bucket[:3] = 8.0
    scale = torch.full((bands,), 128.0) if signs is None else signs * 128.0
    out = torch.empty(n, bands, 3, dtype=torch.uint8)
    for start in range(0, n, _BLOCK_ROWS):
        block = rest[start:start + _BLOCK_ROWS]
        q = block.mul(scale).round_().add_(128.0 + bucket / 2).div_(bucket).floor_().mul_(bucket)
        out[start:start + _BLOCK_ROWS] = q.clamp_(0, 255).to(torch.uint8).transpose(1, 2)
    return out


def widest_fractional_bits(means: torch.Tensor, headroom_bits: int = 1) -> int:
    """Most fixed-point fraction bits (0..12) that keep every coordinate of ``means`` inside the 24-bit
    position field with ``headroom_bits`` to spare: finer positions for small scenes, no overflow for big ones."""
    extent = float(means.detach().abs().max()) if means.numel() else 0.0
    return int(max(0, min(12, 23 - headroom_bits - math.ceil(math.log2(extent + 1.0)))))


def spz_bytes(g: Gaussians, sh_degree: Optional[int] = None, fractional_bits: int = 12,
              compresslevel: Optional[int] = None, flip: Optional[tuple] = None) -> bytes:
    """The gzip-compressed ``.spz`` (v2) encoding of ``g`` (``compresslevel``: see :func:`gzip_compress`).

    ``flip``: axis signs (two of them -1, a half turn; see :mod:`.axes`) applied to positions, rotations and
    SH on the way in, for containers that fix the payload's axes (glTF's SPZ payload is RUB).
    """
    degree = min(g.sh_degree, 3) if sh_degree is None else min(int(sh_degree), g.sh_degree, 3)
    if degree < 0:
        raise ValueError(f"sh_degree must be >= 0, got {sh_degree}")
    n = g.num
    if n == 0:
        raise ValueError("refusing to write an .spz: there are no Gaussians to save (all pruned?)")
    means = cpu_float32(g.means).double()
    if flip is not None:
        means.mul_(torch.tensor(flip, dtype=torch.float64))
    fixed = means.mul(1 << fractional_bits).round_()
    limit = 1 << 23
    if bool((fixed.abs() >= limit).any()):
        raise ValueError(
            f"positions up to {float(means.abs().max()):.1f} do not fit .spz's 24-bit fixed point with "
            f"{fractional_bits} fractional bits; scale the scene down or use the PLY"
        )
    # the low three bytes of each little-endian int32 are the 24-bit two's complement value
    pos = fixed.to(torch.int32).numpy().astype("<i4", copy=False).view(np.uint8).reshape(n, 3, 4)[:, :, :3]

    alphas = _u8(cpu_float32(g.opacities) * 255.0)
    sh = cpu_float32(g.sh)  # [N, 3, K]
    colors = _u8(sh[:, :, 0] * (_COLOR_SCALE * 255.0) + 0.5 * 255.0)
    scales = _u8(cpu_float32(g.scales).clamp_min(1e-30).log_().add_(10.0).mul_(16.0))
    q = torch.nn.functional.normalize(cpu_float32(g.rotations), dim=1, eps=1e-12)  # wxyz
    if flip is not None:  # a half turn M composes as M R M: x, y, z of the quaternion take sy*sz, sx*sz, sx*sy
        sx, sy, sz = flip
        q[:, 1:] *= torch.tensor([sy * sz, sx * sz, sx * sy])
    xyz = q[:, 1:] * torch.where(q[:, :1] < 0, -1.0, 1.0)  # w >= 0
    rots = _u8(xyz * 127.5 + 127.5)

    header = _HEADER.pack(SPZ_MAGIC, SPZ_VERSION, n, degree, fractional_bits, 0, 0)
    parts = [header, np.ascontiguousarray(pos)] + [t.contiguous().numpy() for t in (alphas, colors, scales, rots)]
    if degree > 0:
        signs = None if flip is None else torch.from_numpy(sh_flip_signs(flip, (degree + 1) ** 2)[1:])
        parts.append(_quantize_sh(sh[:, :, 1:(degree + 1) ** 2], signs).numpy())
    return gzip_compress(parts, compresslevel)


def save_spz(g: Gaussians, path: PathLike, sh_degree: Optional[int] = None) -> Path:
    """Write ``g`` as ``.spz`` (v2), atomically; SH degree capped at 3 (or ``sh_degree``)."""
    g.validate()
    return atomic_save_bytes(path, spz_bytes(g, sh_degree))


def _codec_errors() -> tuple:
    igzip, _ = _gzip_module()
    if igzip is None:
        return (zlib.error,)
    from isal import isal_zlib

    return (zlib.error, isal_zlib.error)


def _decompressobj():
    igzip, _ = _gzip_module()
    if igzip is None:
        return zlib.decompressobj(wbits=31)
    from isal import isal_zlib

    return isal_zlib.decompressobj(wbits=31)


class _GzipStream:
    """A gzip file's payload, inflated a piece at a time (members one after another and trailing zero
    padding allowed, like ``gzip.decompress``). Input goes in 1 MiB slices so that what the codec has
    not consumed yet, which it hands back as a copy, stays small. Corrupt data raises
    ``gzip.BadGzipFile``, a stream cut short ``EOFError``."""

    _INPUT_STEP = 1 << 20

    def __init__(self, data: bytes):
        self._data, self._pos, self._tail = memoryview(data), 0, b""
        self._inflate, self._errors = _decompressobj(), _codec_errors()

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` more payload bytes; ``b""`` at the end of the last member."""
        try:
            return self._read(limit)
        except self._errors as e:
            raise gzip.BadGzipFile(f"corrupt deflate data: {e}") from e

    def _read(self, limit: int) -> bytes:
        while True:
            if self._inflate.eof:
                rest = bytes(self._inflate.unused_data) + bytes(self._data[self._pos:])
                if not rest.strip(b"\0"):
                    return b""
                self._data, self._pos, self._tail = memoryview(rest), 0, b""
                self._inflate = _decompressobj()
            piece = self._tail or self._data[self._pos:self._pos + self._INPUT_STEP]
            if not self._tail:
                self._pos += len(piece)
            out = self._inflate.decompress(piece, limit)
            self._tail = self._inflate.unconsumed_tail
            if out:
                return out
            if not piece and not self._tail and not self._inflate.eof:
                raise EOFError("the compressed data ends before the end-of-stream marker")


class _Inflater(threading.Thread):
    """Inflates the rest of a stream into one preallocated buffer on a worker thread (both codecs release
    the GIL), so the reader decodes each section while the next is inflated: an .spz read then costs
    little more than the inflate alone."""

    _STEP = 8 << 20

    def __init__(self, stream: _GzipStream, out: np.ndarray):
        super().__init__(daemon=True)
        self._stream, self._out = stream, out
        self._ready = threading.Condition()
        self.filled, self.extra, self.finished, self.error = 0, 0, False, None

    def run(self) -> None:
        try:
            while self.filled < len(self._out):
                chunk = self._stream.read(min(self._STEP, len(self._out) - self.filled))
                if not chunk:
                    break
                self._out[self.filled:self.filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
                with self._ready:
                    self.filled += len(chunk)
                    self._ready.notify_all()
            while chunk := self._stream.read(self._STEP):  # more payload than the header announced
                self.extra += len(chunk)
        except BaseException as e:  # handed to the reader, which raises it in its own thread
            self.error = e
        finally:
            with self._ready:
                self.finished = True
                self._ready.notify_all()

    def wait_for(self, end: int) -> bool:
        """Block until ``end`` bytes are in the buffer; False if the stream finished (or failed) short of it."""
        with self._ready:
            self._ready.wait_for(lambda: self.filled >= end or self.finished)
            return self.filled >= end


def load_spz(path: PathLike) -> Gaussians:
    """Read an ``.spz`` (version 2 or 3) back into float32 CPU :class:`Gaussians` (quantised values).

    Each section is decoded as soon as it has been inflated, the SH bands block by block. Raises
    :class:`SpzError` naming the file for anything that is not a readable .spz, and
    ``FileNotFoundError`` if the file does not exist (as :func:`~vist3a.formats.ply.read_ply`).
    """
    path = Path(path)
    return decode_spz(path.read_bytes(), path)


def decode_spz(data, path) -> Gaussians:
    """:func:`load_spz` of an .spz held in memory (any bytes-like object, e.g. a slice of a mapped file);
    ``path`` names it in errors."""
    stream = _GzipStream(data)
    header = b""
    try:
        while len(header) < _HEADER.size and (more := stream.read(_HEADER.size - len(header))):
            header += more
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError
        raise SpzError(f"{path} is not a gzip-compressed .spz file ({e})") from e
    if len(header) < _HEADER.size:
        raise SpzError(f"{path} is too short to hold an .spz header")
    magic, version, n, degree, frac, _flags, _ = _HEADER.unpack(header)
    if magic != SPZ_MAGIC or version not in (2, 3) or degree > 3:
        raise SpzError(f"{path} is not an .spz v2/v3 file (magic {magic:#x}, version {version}, sh degree {degree})")
    k = (degree + 1) ** 2 - 1
    sizes = [n * 9, n, n * 3, n * 3, n * (3 if version == 2 else 4), n * k * 3]
    payload = np.empty(sum(sizes), np.uint8)
    inflater = _Inflater(stream, payload)
    inflater.start()
    try:
        decoded = _decode_spz(payload, sizes, inflater.wait_for, n, k, frac, version)
    finally:
        inflater.join()
    if isinstance(inflater.error, (OSError, EOFError)):
        raise SpzError(f"{path} is not a gzip-compressed .spz file ({inflater.error})") from inflater.error
    if inflater.error is not None:
        raise inflater.error
    if decoded is None or inflater.extra:
        raise SpzError(f"{path} holds {inflater.filled + inflater.extra} data bytes, expected {payload.size} for {n} points")
    return decoded


def _decode_spz(payload: np.ndarray, sizes: list, arrived: Callable[[int], bool], n: int, k: int, frac: int,
                version: int) -> Optional[Gaussians]:
    """Decode the sections of an .spz payload in file order, each once ``arrived(end)``; None if the data
    stops short. float32 where the values allow it (they are 8-24 bit quantised)."""
    ends = np.cumsum(sizes).tolist()
    sh = np.empty((n, 3, k + 1), dtype=np.float32)
    pos_b, a_b, c_b, s_b, r_b = (payload[end - size:end] for size, end in zip(sizes[:5], ends[:5]))
    if not arrived(ends[0]):
        return None
    means = _decode_positions(pos_b, n, frac)
    if not arrived(ends[3]):
        return None
    opac = np.clip(a_b.astype(np.float32) / np.float32(255.0), 1e-4, 1 - 1e-4)
    sh[:, :, 0] = (c_b.reshape(n, 3).astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(_COLOR_SCALE)
    scales = np.exp(s_b.reshape(n, 3).astype(np.float32) / np.float32(16.0) - np.float32(10.0))
    if not arrived(ends[4]):
        return None
    rotations = _decode_rotations_v2(r_b, n) if version == 2 else _decode_rotations_v3(r_b, n)
    if k:  # coefficient-major / channel-minor in the file: transposing copies straight into place, per block of rows
        rest = torch.from_numpy(sh)[:, :, 1:]
        stored = torch.from_numpy(payload[ends[4]:]).view(n, k, 3)
        for start in range(0, n, _BLOCK_ROWS * 4):
            stop = min(n, start + _BLOCK_ROWS * 4)
            if not arrived(ends[4] + stop * k * 3):
                return None
            rest[start:stop].copy_(stored[start:stop].transpose(1, 2)).mul_(1.0 / 128.0).sub_(1.0)
    return Gaussians(torch.from_numpy(means), torch.from_numpy(scales), rotations, torch.from_numpy(opac), torch.from_numpy(sh))


def _decode_positions(pos_b: np.ndarray, n: int, frac: int) -> np.ndarray:
    """24-bit two's complement fixed point -> float32 [N, 3], exactly (24-bit integers fit float32).

    Each value's three bytes go into the top of a little-endian int32 whose low byte is zero; an
    arithmetic shift right by 8 then sign-extends it (4x faster than assembling the bytes by shifts).
    """
    words = np.zeros((n, 3, 4), np.uint8)
    words[:, :, 1:] = pos_b.reshape(n, 3, 3)
    fixed = words.view("<i4")[..., 0] >> 8
    return fixed.astype(np.float32) * np.float32(1.0 / (1 << frac))  # a power of two: exact


_UNIT_BYTE = np.arange(256) / 127.5 - 1.0  # float64 value of each rotation byte


def _decode_rotations_v2(r_b: np.ndarray, n: int) -> torch.Tensor:
    """x, y, z bytes of a unit quaternion with w >= 0 -> float32 wxyz [N, 4] (float64 maths)."""
    xyz = _UNIT_BYTE[r_b.reshape(n, 3)]
    squares = np.einsum("ij,ij->i", xyz, xyz)
    w = np.sqrt(np.maximum(1.0 - squares, 0.0))
    norm = np.sqrt(w * w + squares)  # 1 unless the quantised x, y, z overshoot the unit sphere
    out = np.empty((n, 4), np.float32)
    out[:, 0] = w / norm
    out[:, 1:] = xyz / norm[:, None]
    return torch.from_numpy(out)


def _decode_rotations_v3(r_b: np.ndarray, n: int) -> torch.Tensor:
    """v3 smallest-three encoding (2-bit index of the largest component + 3 x (sign bit, 9-bit magnitude),
    components in x, y, z, w order) -> float32 wxyz [N, 4]."""
    v = r_b.reshape(n, 4).astype(np.uint32)
    packed = v[:, 0] | (v[:, 1] << 8) | (v[:, 2] << 16) | (v[:, 3] << 24)
    largest = packed >> 30
    xyzw = np.zeros((n, 4))
    mask, scale = (1 << 9) - 1, np.sqrt(0.5)
    bits = packed.copy()
    for i in range(3, -1, -1):
        sel = largest != i
        mag = (bits & mask).astype(np.float64)
        neg = (bits >> 9) & 1
        val = scale * mag / mask * np.where(neg == 1, -1.0, 1.0)
        xyzw[sel, i] = val[sel]
        bits = np.where(sel, bits >> 10, bits)
    rest_sq = 1.0 - (xyzw ** 2).sum(1)
    xyzw[np.arange(n), largest] = np.sqrt(np.maximum(rest_sq, 0.0))
    wxyz = xyzw[:, [3, 0, 1, 2]]
    return torch.from_numpy((wxyz / np.linalg.norm(wxyz, axis=1, keepdims=True)).astype(np.float32))
