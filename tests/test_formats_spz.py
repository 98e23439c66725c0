"""Niantic's .spz (vist3a.formats.spz): a round trip within its quantisation, version 3 rotations, exact 24-bit positions,
one gzip member whichever compressor wrote it, corrupt and cut streams refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import QUANTISABLE_SH, plain_gaussians, random_gaussians


def test_spz_round_trip(tmp_path):
    import gzip

    from vist3a.formats.spz import SPZ_MAGIC, load_spz, save_spz

    g = random_gaussians(500, 3, scale_range=(1e-3, 0.101), **QUANTISABLE_SH)
    path = save_spz(g, tmp_path / "s.spz")
    raw = gzip.decompress(path.read_bytes())
    assert int.from_bytes(raw[:4], "little") == SPZ_MAGIC and raw[4] == 2 and int.from_bytes(raw[8:12], "little") == g.num
    h = load_spz(path)
    assert h.num == g.num and h.sh_degree == 3
    assert (h.means - g.means).abs().max() < 1.0 / 4096
    assert (h.opacities - g.opacities).abs().max() < 1.0 / 255 + 1e-4
    assert ((h.scales.log() - g.scales.log()).abs().max()) < 1.0 / 16 + 1e-4
    dots = (h.rotations * g.rotations).sum(1).abs()
    assert dots.min() > 0.99
    assert (h.sh[:, :, 0] - g.sh[:, :, 0]).abs().max() < 0.03
    assert (h.sh[:, :, 1:4] - g.sh[:, :, 1:4]).abs().max() < 0.04  # 5-bit degree-1 bands
    assert (h.sh[:, :, 4:] - g.sh[:, :, 4:]).abs().max() < 0.07  # 4-bit higher bands (values within +-1)
    # degree 4 (AnySplat) is capped at 3; an explicit degree truncates
    assert load_spz(save_spz(random_gaussians(500, 4, scale_range=(1e-3, 0.101), **QUANTISABLE_SH), tmp_path / "d4.spz")).sh_degree == 3
    assert load_spz(save_spz(random_gaussians(500, 4, scale_range=(1e-3, 0.101), **QUANTISABLE_SH), tmp_path / "d0.spz", sh_degree=0)).sh_degree == 0


def _smallest_three(q_wxyz: np.ndarray) -> np.ndarray:
    """The .spz v3 rotation bytes, encoded independently here from the format's description: x, y, z, w
    order; 2-bit index of the largest-magnitude component, then for each other component in order a
    sign bit and a 9-bit magnitude scaled by 1/sqrt(1/2); the quaternion is flipped so the largest is
    positive; one little-endian uint32."""
    xyzw = q_wxyz[:, [1, 2, 3, 0]].astype(np.float64)
    largest = np.abs(xyzw).argmax(1)
    xyzw *= np.where(xyzw[np.arange(len(xyzw)), largest] < 0, -1.0, 1.0)[:, None]
    words = []
    for row, big in zip(xyzw, largest):
        word = int(big)
        for i in range(4):
            if i != big:
                word = (word << 10) | (int(row[i] < 0) << 9) | int(math.floor(511 * abs(row[i]) / math.sqrt(0.5) + 0.5))
        words.append(word)
    return np.asarray(words, "<u4").view(np.uint8)


def test_spz_version_3_rotations(tmp_path):
    import gzip

    from vist3a.formats.spz import load_spz, spz_bytes

    g = random_gaussians(400, 2, 9, **QUANTISABLE_SH)
    v2 = bytearray(gzip.decompress(spz_bytes(g)))
    n, rot_at = g.num, 16 + g.num * (9 + 1 + 3 + 3)
    v3 = v2[:4] + (3).to_bytes(4, "little") + v2[8:rot_at] + _smallest_three(g.rotations.numpy()).tobytes() + v2[rot_at + 3 * n:]
    (tmp_path / "v3.spz").write_bytes(gzip.compress(bytes(v3)))
    (tmp_path / "v2.spz").write_bytes(gzip.compress(bytes(v2)))
    a, b = load_spz(tmp_path / "v2.spz"), load_spz(tmp_path / "v3.spz")
    for name in ("means", "scales", "opacities", "sh"):  # only the rotation block differs
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    dots = (b.rotations.double() * g.rotations.double()).sum(1).abs()
    assert dots.min() > 1 - 1e-5 and (b.rotations.norm(dim=1) - 1).abs().max() < 1e-6  # 9-bit: far finer than v2's 8
    assert ((a.rotations.double() * g.rotations.double()).sum(1).abs().min()) > 0.99


def test_spz_positions_decode_exactly_across_the_24_bit_range(tmp_path):
    from vist3a.formats.spz import load_spz, save_spz

    fixed = np.array([-(1 << 23) + 1, -(1 << 22), -4097, -1, 0, 1, 4095, (1 << 23) - 1], dtype=np.float64)
    means = torch.from_numpy(np.stack([fixed, fixed[::-1], np.roll(fixed, 3)], 1) / 4096).float()
    g = plain_gaussians(means, opacity=0.5)
    assert torch.equal(load_spz(save_spz(g, tmp_path / "p.spz")).means, means)


def test_spz_gzip_is_one_member_whichever_compressor_wrote_it(tmp_path, monkeypatch):
    # Big enough (> 8 MB of payload) for the threaded ISA-L path; the reference reader inflates one
    # gzip member, so the stream must be exactly one, with the same payload as the zlib fallback's.
    import zlib

    from vist3a.formats import spz

    g = random_gaussians(150_000, 3, 4, **QUANTISABLE_SH)
    fast = spz.spz_bytes(g)
    inflate = zlib.decompressobj(31)
    payload = inflate.decompress(fast)
    assert inflate.eof and inflate.unused_data == b"" and len(payload) > 8 << 20
    monkeypatch.setattr(spz, "_gzip_module", lambda: (None, None))
    fallback = spz.spz_bytes(g)
    assert zlib.decompress(fallback, 31) == payload
    (tmp_path / "zlib.spz").write_bytes(fallback)
    read_without_isal = spz.load_spz(tmp_path / "zlib.spz")
    monkeypatch.undo()
    (tmp_path / "isal.spz").write_bytes(fast)
    read_with_isal = spz.load_spz(tmp_path / "isal.spz")
    for name in ("means", "scales", "rotations", "opacities", "sh"):
        assert torch.equal(getattr(read_with_isal, name), getattr(read_without_isal, name)), name


@pytest.mark.parametrize("codec", ["isal", "zlib"])
def test_corrupt_spz_is_one_clear_error_with_either_codec(tmp_path, monkeypatch, codec):
    from vist3a.formats import spz

    if codec == "zlib":
        monkeypatch.setattr(spz, "_gzip_module", lambda: (None, None))
    good = spz.spz_bytes(random_gaussians(2000, 1, **QUANTISABLE_SH))
    cases = {"garbage.spz": good[:10] + b"\xff" * 64 + good[74:], "short.spz": good[: len(good) // 2], "plain.spz": b"hello"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(spz.SpzError, match=f"{name} is not a gzip-compressed .spz file"):
            spz.load_spz(tmp_path / name)


@pytest.mark.parametrize("codec", ["isal", "zlib"])
def test_spz_stream_reading_checks_size_crc_and_members(tmp_path, monkeypatch, codec):
    import gzip

    from vist3a.formats import spz

    if codec == "zlib":
        monkeypatch.setattr(spz, "_gzip_module", lambda: (None, None))
    monkeypatch.setattr(spz._Inflater, "_STEP", 4096)  # many pieces, sections split across them
    monkeypatch.setattr(spz._GzipStream, "_INPUT_STEP", 1000)
    g = random_gaussians(3000, 3, 2, **QUANTISABLE_SH)
    payload = gzip.decompress(spz.spz_bytes(g))
    (tmp_path / "one.spz").write_bytes(gzip.compress(payload))
    # members one after another and trailing zero padding read like one member (as gzip.decompress does)
    third = len(payload) // 3
    (tmp_path / "members.spz").write_bytes(b"".join(gzip.compress(payload[i:i + third]) for i in range(0, len(payload), third)) + bytes(8))
    one, members = spz.load_spz(tmp_path / "one.spz"), spz.load_spz(tmp_path / "members.spz")
    for name in ("means", "scales", "rotations", "opacities", "sh"):
        assert torch.equal(getattr(one, name), getattr(members, name)), name
    assert (one.means - g.means).abs().max() < 2.0 ** -12
    wrong_sizes = {"long.spz": payload + b"\x07" * 5, "cut.spz": payload[:-5], "headless.spz": payload[:10]}
    for name, data in wrong_sizes.items():
        (tmp_path / name).write_bytes(gzip.compress(data))
    with pytest.raises(spz.SpzError, match=f"long.spz holds {len(payload) - 16 + 5} data bytes, expected {len(payload) - 16} for 3000"):
        spz.load_spz(tmp_path / "long.spz")
    with pytest.raises(spz.SpzError, match=f"cut.spz holds {len(payload) - 16 - 5} data bytes"):
        spz.load_spz(tmp_path / "cut.spz")
    with pytest.raises(spz.SpzError, match="headless.spz is too short to hold an .spz header"):
        spz.load_spz(tmp_path / "headless.spz")
    good = (tmp_path / "one.spz").read_bytes()
    (tmp_path / "crc.spz").write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:])  # payload intact
    with pytest.raises(spz.SpzError, match="crc.spz is not a gzip-compressed .spz file"):
        spz.load_spz(tmp_path / "crc.spz")
    with pytest.raises(FileNotFoundError, match="missing.spz"):
        spz.load_spz(tmp_path / "missing.spz")
    (tmp_path / "tail.spz").write_bytes(good + b"trailing junk")
    with pytest.raises(spz.SpzError, match="tail.spz is not a gzip-compressed .spz file"):
        spz.load_spz(tmp_path / "tail.spz")
