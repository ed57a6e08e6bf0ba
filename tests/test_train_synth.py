"""The scene generator's grey share: off by default (earlier seeds unchanged), and a grey
scene is the colour scene's luminance with the same masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from segany.train.synth import SynthConfig, make_scene

SMALL = SynthConfig(long_side=64, min_short_side=56, min_objects=2, max_objects=4, min_area=20)


def _scene(cfg: SynthConfig, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
    return make_scene(np.random.default_rng([5, i]), cfg)


def test_gray_prob_zero_draws_nothing_extra_so_earlier_seeds_are_unchanged():
    """At 0 the scene consumes exactly the random numbers it did before the grey share existed:
    a share too small ever to fire gives the same image but costs one more draw, and only one."""
    assert SynthConfig().gray_prob == 0.0
    for i in range(3):
        off, never = np.random.default_rng([5, i]), np.random.default_rng([5, i])
        a_img, a_masks = make_scene(off, SMALL)
        b_img, b_masks = make_scene(never, dataclasses.replace(SMALL, gray_prob=1e-300))
        np.testing.assert_array_equal(a_img, b_img)
        assert len(a_masks) == len(b_masks)
        assert not np.array_equal(a_img[..., 0], a_img[..., 1])  # colour scenes stay colour
        off.random()  # the one draw the share makes when it is not 0
        np.testing.assert_array_equal(off.random(4), never.random(4))


def test_gray_scene_is_the_luminance_of_the_colour_scene():
    for i in range(3):
        colour, masks = _scene(SMALL, i)
        gray, gmasks = _scene(dataclasses.replace(SMALL, gray_prob=1.0), i)
        assert gray.dtype == np.uint8 and gray.shape == colour.shape
        np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
        np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
        # ITU-R BT.601 luma, computed independently of OpenCV (rounding differs by at most 1)
        luma = colour.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        assert np.abs(gray[..., 0].astype(np.float64) - luma).max() <= 1.0
        assert len(gmasks) == len(masks)
        for a, b in zip(masks, gmasks, strict=True):
            np.testing.assert_array_equal(a, b)


def test_cli_synth_gray_writes_grey_images_and_records_the_share(tmp_path, capsys):
    import json

    import cv2

    from segany.cli import main

    out = tmp_path / "g"
    assert main(["synth", str(out), "-n", "2", "--size", "64", "--gray", "1", "-q"]) == 0
    assert json.loads((out / "synth.json").read_text())["config"]["gray_prob"] == 1.0
    for jpg in sorted(out.glob("*.jpg")):
        img = cv2.imread(str(jpg)).astype(int)
        # JPEG keeps a grey image grey up to rounding of its chroma
        assert np.abs(img[..., 0] - img[..., 1]).max() <= 2
        assert np.abs(img[..., 1] - img[..., 2]).max() <= 2
    with pytest.raises(SystemExit) as stop:  # a usage error: argparse exits with 2
        main(["synth", str(tmp_path / "bad"), "-n", "1", "--gray", "1.5", "-q"])
    assert stop.value.code == 2
    assert "expected a fraction between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
