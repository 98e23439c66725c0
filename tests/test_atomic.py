"""Atomic writes (vist3a.atomic): atomic_write and the write-behind stream, and every writer leaving either the complete
file or nothing (failures injected mid-write, a full disk seen through the CLI)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from helpers import random_gaussians

import vist3a.formats.ply as ply_module
from vist3a import atomic, cli, decoders, tiny
from vist3a.atomic import WriteBehind, atomic_save_bytes, atomic_write
from vist3a.formats import save_ply, save_splat
from vist3a.render.media import save_orbit_video, save_png_grid


def _only(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def failing_write(monkeypatch):
    """Make the n-th write() of any file opened in binary/text write mode raise (a crash mid-file)."""
    real_open = open

    class Boom(OSError):
        pass

    def arm(after_bytes=64):
        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if "w" not in mode or ".tmp" not in str(file):
                return f
            written = [0]
            real_write = f.write

            def write(data):
                written[0] += len(data)
                if written[0] > after_bytes:
                    real_write(data[: max(0, len(data) // 2)])
                    raise Boom("injected failure mid-write")
                return real_write(data)

            f.write = write
            return f

        monkeypatch.setattr("builtins.open", fake_open)
        return Boom

    return arm


@pytest.mark.parametrize("writer, name", [
    (lambda p: save_ply(random_gaussians(), p), "s.ply"),
    (lambda p: save_splat(random_gaussians(), p), "s.splat"),
    (lambda p: save_png_grid(torch.rand(4, 32, 32, 3), p), "g.png"),
    (lambda p: save_orbit_video(torch.rand(4, 32, 32, 3), p), "o.webp"),
])
def test_failure_mid_write_leaves_nothing(tmp_path, failing_write, writer, name):
    boom = failing_write(after_bytes=64)
    with pytest.raises(boom):
        writer(tmp_path / name)
    assert _only(tmp_path) == []


def test_failure_keeps_the_previous_complete_file(tmp_path, failing_write):
    save_ply(random_gaussians(10), tmp_path / "s.ply")
    before = (tmp_path / "s.ply").read_bytes()
    boom = failing_write(after_bytes=64)
    with pytest.raises(boom):
        save_ply(random_gaussians(40), tmp_path / "s.ply")
    assert (tmp_path / "s.ply").read_bytes() == before and _only(tmp_path) == ["s.ply"]


def test_export_failure_leaves_no_weights(tmp_path, failing_write):
    decoder = tiny.build_tiny_decoder()
    boom = failing_write(after_bytes=1024)
    with pytest.raises(boom):
        decoders.save_stitched_export(decoder, tmp_path / "export")
    assert _only(tmp_path) == []  # no export folder, no temp folder


def test_failed_re_export_keeps_the_previous_export(tmp_path, failing_write):
    decoders.save_stitched_export(tiny.build_tiny_decoder(seed=1), tmp_path / "export", step=1)
    boom = failing_write(after_bytes=1024)
    with pytest.raises(boom):
        decoders.save_stitched_export(tiny.build_tiny_decoder(seed=2), tmp_path / "export", step=2)
    assert _only(tmp_path) == ["export"]
    assert decoders.load_stitched_decoder(tmp_path / "export") is not None


def test_full_disk_through_the_cli(tmp_path, monkeypatch, capsys):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    code = cli.main(["generate", "x", "-o", str(tmp_path / "o.ply"), "--tiny", "--frames", "5", "--size", "64", "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert _only(tmp_path) == []


# ---------------------------------------------------------------------------------------- atomic


def test_atomic_write_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as f:
            f.write(b"partial data")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_previous_file(tmp_path):
    target = atomic_save_bytes(tmp_path / "out.bin", b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write(b"new")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    with atomic_write(target, "w") as f:
        f.write("text")
    assert target.read_text() == "text"


def test_atomic_write_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="output directory .*missing does not exist; create it"):
        atomic_save_bytes(tmp_path / "missing" / "x.ply", b"")


def test_write_behind_hands_every_finished_window_to_the_disk(tmp_path, monkeypatch):
    advice = []
    real = os.posix_fadvise if hasattr(os, "posix_fadvise") else None

    def record(fd, offset, length, how):
        advice.append((offset, length, how))
        assert os.fstat(fd).st_size >= offset + length  # only bytes already written (flushed) are handed over
        if real is not None:
            real(fd, offset, length, how)

    monkeypatch.setattr(atomic.os, "posix_fadvise", record, raising=False)
    monkeypatch.setattr(atomic.os, "POSIX_FADV_DONTNEED", getattr(os, "POSIX_FADV_DONTNEED", 4), raising=False)
    data = np.random.default_rng(0).integers(0, 256, 1_000_003, dtype=np.uint8)
    with atomic_write(tmp_path / "w.bin", "wb") as f:
        stream = WriteBehind(f, window=1 << 16)
        stream.write(b"head")  # small writes accumulate ...
        assert stream.write(data[:700_000]) == 700_000  # ... big ones go out a window at a time
        stream.write(memoryview(data[700_000:]))
    assert (tmp_path / "w.bin").read_bytes() == b"head" + data.tobytes()
    # contiguous ranges from 0, each at least a window, covering all but the unfinished tail
    assert advice and advice[0][0] == 0 and all(how == atomic.os.POSIX_FADV_DONTNEED for *_, how in advice)
    assert all(a[0] + a[1] == b[0] for a, b in zip(advice, advice[1:])) and min(a[1] for a in advice) >= 1 << 16
    assert 4 + data.size - (1 << 16) < advice[-1][0] + advice[-1][1] <= 4 + data.size
    # without posix_fadvise (macOS, Windows) it is a plain write
    monkeypatch.delattr(atomic.os, "posix_fadvise")
    advice.clear()
    with atomic_write(tmp_path / "plain.bin", "wb") as f:
        WriteBehind(f, window=1 << 16).write(data)
    assert (tmp_path / "plain.bin").read_bytes() == data.tobytes() and advice == []


def test_ply_and_splat_files_do_not_depend_on_blocks_or_the_write_behind_window(tmp_path, monkeypatch):
    g = random_gaussians(3000, 2)
    wide = [save_ply(g, tmp_path / "a.ply").read_bytes(), save_splat(g, tmp_path / "a.splat").read_bytes()]
    monkeypatch.setattr(atomic, "WRITE_BEHIND_BYTES", 4096)
    monkeypatch.setattr(ply_module.ply_binary, "CHUNK_BYTES", 1000)  # 7 rows a block: the two buffers alternate
    narrow = [save_ply(g, tmp_path / "b.ply").read_bytes(), save_splat(g, tmp_path / "b.splat").read_bytes()]
    assert wide == narrow


def test_save_ply_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    def failing_write(stream, table):
        stream.write(b"\x00" * 64)  # part of the body made it to disk, then the disk filled up
        raise OSError("disk full")

    monkeypatch.setattr(ply_module.ply_binary, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_ply(random_gaussians(5, 0), tmp_path / "scene.ply")
    assert list(tmp_path.iterdir()) == []
