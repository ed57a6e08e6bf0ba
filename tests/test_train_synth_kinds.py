"""The graphic-kind training scenes (issue 38): exact labels, determinism, the SA-1B files."""

from __future__ import annotations

import numpy as np
import pytest

from segany.train import synth_kinds as sk


def _scene(kind: str, i: int) -> sk.Scene:
    return sk.KINDS[kind](np.random.default_rng([7, i]), 96, 128)


@pytest.mark.parametrize("kind", list(sk.KINDS))
def test_every_kind_draws_masks_that_fit_the_image(kind):
    for i in range(6):
        img, masks = _scene(kind, i)
        assert img.shape == (96, 128, 3)
        assert all(m.shape == (96, 128) and m.dtype == bool for m in masks)
        assert all(int(m.sum()) >= sk.MIN_AREA for m in masks)
    counts = [len(_scene(kind, i)[1]) for i in range(6)]
    assert sum(counts) > 0, kind


@pytest.mark.parametrize("kind", ["flat", "tilings", "outlines"])
def test_flat_kinds_are_one_colour_per_mask_before_the_camera(kind):
    """The label is exact: every visible mask is painted in one colour (outlines: the page
    colour inside, the ink on the outline)."""
    for i in range(8):
        img, masks = _scene(kind, i)
        for m in masks:
            colours = np.unique(img[m].reshape(-1, 3), axis=0)
            assert len(colours) <= (2 if kind == "outlines" else 1), (kind, i, colours)


def test_masks_of_one_scene_are_disjoint_except_the_grey_body_which_holds_its_parts():
    for kind in ("flat", "glyphs", "tilings", "outlines"):
        for i in range(6):
            _, masks = _scene(kind, i)
            total = np.sum(masks, axis=0) if masks else np.zeros(1)
            assert total.max() <= 1, (kind, i)
    for i in range(6):
        _, masks = _scene("grey", i)
        body, parts = masks[0], masks[1:]
        assert all((p <= body).all() for p in parts)  # inside the body
        if parts:
            assert np.sum(parts, axis=0).max() <= 1


def test_silhouettes_of_one_ink_never_touch():
    """Same-coloured shapes that touched would show as one region with two labels."""
    import cv2

    seen = 0
    for i in range(40):
        img, masks = _scene("flat", i)
        inks = {tuple(img[m][0]) for m in masks}
        if len(masks) < 2 or len(inks) != 1:
            continue
        seen += 1
        for a in range(len(masks)):
            grown = cv2.dilate(masks[a].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            assert not any((grown & masks[b]).any() for b in range(len(masks)) if b != a)
    assert seen > 0


def test_write_kinds_is_deterministic_and_readable_as_sa1b(tmp_path):
    from segany.formats.datasets import Sa1bDataset

    a = sk.write_kinds(tmp_path / "a", 5, 11, long_side=96)
    b = sk.write_kinds(tmp_path / "b", 5, 11, long_side=96)
    for name in sorted(p.name for p in a.glob("sa_*")):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    reader = Sa1bDataset(a)
    assert len(reader) == 5
    for i in range(5):
        sample = reader[i]
        assert max(sample.load_image().shape[:2]) == 96
        assert len(sample.objects) >= 1  # every file holds a mask
    with pytest.raises(Exception, match="unknown scene kind 'nope'"):
        sk.make_scene(np.random.default_rng(0), "nope")


def test_cli_synth_kinds(tmp_path, capsys):
    from segany.cli import main

    out = tmp_path / "k"
    assert main(["synth", str(out), "-n", "3", "--size", "80", "--kinds", "flat,grey", "-q"]) == 0
    assert len(list(out.glob("sa_*.png"))) == 3
    assert main(["synth", str(tmp_path / "bad"), "-n", "1", "--kinds", "flat,nope", "-q"]) != 0
    assert "unknown kind(s) nope" in capsys.readouterr().err
