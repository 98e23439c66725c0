"""Every writer leaves either the complete file or nothing: failures injected mid-write, and a full
disk (ENOSPC) seen through the CLI."""

import errno
import os

import pytest
import torch
from helpers import random_gaussians

from vist3a import atomic, cli, decoders, tiny
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
