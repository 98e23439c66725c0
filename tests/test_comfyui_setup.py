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
