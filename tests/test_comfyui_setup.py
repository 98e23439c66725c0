"""The local ComfyUI set-up survives a moved or renamed checkout: the custom_nodes link is re-pointed."""

from __future__ import annotations

import os

import pytest

import comfyui_env


def test_link_repo_creates_and_keeps_a_good_link(tmp_path):
    link = comfyui_env.link_repo(tmp_path / "custom_nodes")
    assert link.is_symlink() and link.resolve() == comfyui_env.REPO.resolve()
    again = comfyui_env.link_repo(tmp_path / "custom_nodes")
    assert again == link and os.readlink(link) == str(comfyui_env.REPO)


@pytest.mark.parametrize("old_target", ["moved-away-checkout", "other-checkout"])
def test_link_repo_repoints_a_stale_link(tmp_path, capsys, old_target):
    nodes = tmp_path / "custom_nodes"
    nodes.mkdir()
    target = tmp_path / old_target
    if old_target == "other-checkout":  # a link to another folder that still exists
        target.mkdir()
    (nodes / comfyui_env.LINK_NAME).symlink_to(target, target_is_directory=True)
    link = comfyui_env.link_repo(nodes)
    assert link.resolve() == comfyui_env.REPO.resolve()
    assert f"pointed to {target}; re-pointing it" in capsys.readouterr().out


def test_link_repo_leaves_a_real_folder_alone(tmp_path):
    folder = tmp_path / "custom_nodes" / comfyui_env.LINK_NAME
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is a folder, not a link to this checkout"):
        comfyui_env.link_repo(tmp_path / "custom_nodes")
    assert (folder / "keep.txt").read_text() == "mine"


def test_example_video_is_written_without_installing_comfyui(tmp_path, monkeypatch):
    """`make serve28` writes the example video with the project's mp4 writer: it must not install ComfyUI 0.3.75
    (and its requirements) into the project venv for PyAV, as it once did."""
    import imageio.v2 as imageio
    import numpy as np

    def refuse(*args, **kwargs):
        raise AssertionError("write_example_video tried to install ComfyUI or a package")

    monkeypatch.setattr(comfyui_env, "install", refuse)
    monkeypatch.setattr(comfyui_env, "_pip", refuse)
    path = comfyui_env.write_example_video(tmp_path / "input" / "orbit.mp4")
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        frames = np.stack([f for f in reader])
    finally:
        reader.close()
    assert frames.shape == (9, 96, 96, 3), frames.shape
    yellow = (frames[..., 0] > 180) & (frames[..., 1] > 150) & (frames[..., 2] < 110)
    first, last = (np.nonzero(yellow[i])[1].mean() for i in (0, 8))
    assert last - first > 30, (first, last)  # the box moves across the frames: an orbit to reconstruct
