"""prepare_views: frame picking, crop/resize to AnySplat's patch grid, one-line errors."""

from __future__ import annotations

import pytest
import torch

from vist3a.view_prep import ViewsError, prepare_views


def _batch(n, h, w):
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None] / max(n - 1, 1)
    return x.expand(n, h, w, 4).clone()  # frame i has the constant value i/(n-1); an alpha channel too


def test_evenly_spaced_frames_and_square_crop():
    v = prepare_views(_batch(10, 60, 90), max_views=4, size=28)
    assert v.shape == (4, 3, 28, 28)
    torch.testing.assert_close(v[:, 0, 0, 0], torch.tensor([0, 3, 6, 9]) / 9)  # frames 0, 3, 6, 9


def test_crop_is_centred_and_exact_size_is_untouched():
    x = torch.zeros(2, 20, 40, 3)
    x[:, :, 10:30] = 1.0  # the centre 20x20 square is white, the sides black
    v = prepare_views(x, max_views=8, size=14)
    assert v.shape == (2, 3, 14, 14)
    torch.testing.assert_close(v, torch.ones_like(v))
    same = prepare_views(torch.rand(3, 28, 28, 3), max_views=8, size=28)
    assert same.shape == (3, 3, 28, 28)


def test_keep_aspect_rounds_sides_to_the_patch_grid():
    v = prepare_views(_batch(3, 100, 200), max_views=8, size=56, resize="keep aspect")
    assert v.shape == (3, 3, 28, 56)
    tall = prepare_views(_batch(2, 300, 20), max_views=8, size=56, resize="keep aspect")
    assert tall.shape == (2, 3, 56, 14)  # never below one patch


@pytest.mark.parametrize("args, words", [
    ((torch.rand(1, 8, 8, 3), 4, 14), "At least 2 views"),
    ((torch.rand(8, 8, 3), 4, 14), "IMAGE batch"),
    ((torch.rand(3, 8, 8, 3), 4, 20), "multiple of 14"),
])
def test_bad_inputs_are_one_line_errors(args, words):
    with pytest.raises(ViewsError) as e:
        prepare_views(*args)
    assert words in str(e.value) and "\n" not in str(e.value)
