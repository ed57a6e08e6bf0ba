"""examples/kinds/make_set.py (issue 38): every kind builds, labels are exact and seeded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "kinds" / "make_set.py"


@pytest.fixture(scope="module")
def make_set():
    spec = importlib.util.spec_from_file_location("kinds_make_set", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MIN_OBJECTS = {"silhouettes": 8, "text": 10, "tiles": 10, "phantoms": 6, "lowcontrast": 6}


@pytest.mark.parametrize("kind", sorted(MIN_OBJECTS))
def test_kind_builds_disjoint_nonempty_objects(make_set, kind):
    scenes = make_set.build(kind, seed=5, size=192, images=2)
    assert len(scenes) == 2
    count = 0
    for name, img, labels in scenes:
        assert img.shape == (192, 192, 3) and img.dtype == np.uint8
        assert labels.shape == img.shape[:2]
        ids = np.unique(labels[labels > 0])
        # ids are 1..N with no gap: every drawn object kept at least one pixel (none hidden)
        assert list(ids) == list(range(1, len(ids) + 1)), name
        for i in ids:  # no object is a speck
            assert (labels == i).sum() >= 30, (name, i)
        count += len(ids)
    assert count >= MIN_OBJECTS[kind], count  # over the two images


@pytest.mark.parametrize("kind", ["silhouettes", "text", "lowcontrast"])
def test_drawn_masks_are_disjoint_and_show_in_the_image(make_set, kind):
    rng = np.random.default_rng(3)
    img, masks = make_set.SYNTHETIC[kind](rng, 160, 0)
    stack = np.stack(masks).astype(int)
    assert stack.sum(0).max() == 1  # no pixel in two objects
    bg = stack.sum(0) == 0
    for m in masks:
        # the object's mean differs from the background's: it is there to be seen
        assert abs(img[m].mean() - img[bg].mean()) > 3


def test_same_seed_same_set_other_seed_other_set(make_set):
    for kind in MIN_OBJECTS:
        a = make_set.build(kind, seed=11, size=128, images=1)
        b = make_set.build(kind, seed=11, size=128, images=1)
        c = make_set.build(kind, seed=12, size=128, images=1)
        assert np.array_equal(a[0][1], b[0][1]) and np.array_equal(a[0][2], b[0][2]), kind
        assert not np.array_equal(a[0][1], c[0][1]), kind


def test_photos_kind_is_the_real_set(make_set):
    scenes = make_set.build("photos", seed=0)
    names = [name for name, _, _ in scenes]
    assert names == ["china", "coins", "flower"]
    assert sum(len(np.unique(lab)) - 1 for _, _, lab in scenes) == 29


def test_unknown_kind_is_refused(make_set):
    with pytest.raises(ValueError, match="expected one of"):
        make_set.build("clouds", seed=0)


def test_command_line_writes_the_label_map_layout(make_set, tmp_path, monkeypatch):
    from segany.formats.datasets import LabelMapDataset

    argv = ["make_set.py", str(tmp_path), "--size", "128", "--images", "1", "--part", "reserved"]
    monkeypatch.setattr("sys.argv", argv)
    make_set.main()
    assert not (tmp_path / "photos").exists()  # the reserved part has no photos
    for kind in MIN_OBJECTS:
        assert len(LabelMapDataset(tmp_path / kind)) == 1
