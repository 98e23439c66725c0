"""Load PLY's path check: only files under the allowed roots, after resolving `..` and symlinks."""

from __future__ import annotations

import os

import pytest

from vist3a.read_roots import EXTRA_ROOTS_ENV, PathNotAllowed, check_read_path, extra_roots_from_env


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "input" / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "input" / "sub" / "ok.ply").write_bytes(b"ply")
    (tmp_path / "secret" / "s.ply").write_bytes(b"ply")
    return tmp_path


def test_file_inside_a_root_is_returned_resolved(tree):
    p = check_read_path(tree / "input" / "sub" / "ok.ply", [tree / "input"])
    assert p == (tree / "input" / "sub" / "ok.ply").resolve()
    # `..` that stays inside is fine
    assert check_read_path(tree / "input" / "sub" / ".." / "sub" / "ok.ply", [tree / "input"]) == p


@pytest.mark.parametrize("make", [
    lambda t: t / "secret" / "s.ply",                           # plainly outside
    lambda t: t / "input" / ".." / "secret" / "s.ply",          # ../ traversal
    lambda t: t / "input" / "sub" / ".." / ".." / "secret" / "s.ply",
])
def test_outside_and_traversal_are_refused_with_one_line_that_leads_with_the_fix(tree, make):
    with pytest.raises(PathNotAllowed) as e:
        check_read_path(make(tree), [tree / "input", tree / "output"])
    msg = str(e.value)
    assert msg.startswith(f"Copy s.ply into {(tree / 'input').resolve()} ") and "\n" not in msg, msg
    assert str((tree / "secret" / "s.ply").resolve()) in msg and "1 other folder" in msg and EXTRA_ROOTS_ENV in msg


def test_the_refusal_stays_short_with_many_roots(tree):
    """A ComfyUI server has dozens of model folders: the message counts them instead of listing them."""
    roots = [tree / "input"] + [tree / f"models_{i}" for i in range(60)]
    with pytest.raises(PathNotAllowed) as e:
        check_read_path(tree / "secret" / "s.ply", roots)
    msg = str(e.value)
    assert len(msg.replace(str(tree), "")) < 250 and "models_7" not in msg and "60 other folders" in msg, msg


def test_symlink_inside_a_root_pointing_out_is_refused(tree):
    link = tree / "input" / "link.ply"
    os.symlink(tree / "secret" / "s.ply", link)
    with pytest.raises(PathNotAllowed):
        check_read_path(link, [tree / "input"])
    dir_link = tree / "input" / "elsewhere"
    os.symlink(tree / "secret", dir_link, target_is_directory=True)
    with pytest.raises(PathNotAllowed):
        check_read_path(dir_link / "s.ply", [tree / "input"])


def test_a_root_that_is_itself_a_symlink_still_works(tree):
    root_link = tree / "models_link"
    os.symlink(tree / "secret", root_link, target_is_directory=True)
    assert check_read_path(root_link / "s.ply", [root_link]) == (tree / "secret" / "s.ply").resolve()


def test_prefix_of_a_root_name_is_not_inside_it(tree):
    (tree / "input2").mkdir()
    (tree / "input2" / "x.ply").write_bytes(b"ply")
    with pytest.raises(PathNotAllowed):
        check_read_path(tree / "input2" / "x.ply", [tree / "input"])


def test_extra_roots_come_from_the_environment_only(tree):
    assert extra_roots_from_env({}) == []
    env = {EXTRA_ROOTS_ENV: f"{tree / 'secret'}{os.pathsep}{os.pathsep}"}
    roots = extra_roots_from_env(env)
    assert roots == [str(tree / "secret")]
    assert check_read_path(tree / "secret" / "s.ply", [tree / "input", *roots]).name == "s.ply"
