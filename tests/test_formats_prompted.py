"""Prompted results (``segany.formats.prompted``) and the stale-output rule of output sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segany.formats import read_mask_png
from segany.formats.output_set import stale_numbered
from segany.formats.prompted import (
    mask_xywh,
    output_paths,
    prompted_document,
    stale_masks,
    write_prompted,
)
from segany.masks import batched_mask_to_box, decode_rle


def _mask(rows: slice, cols: slice, size: tuple[int, int] = (8, 10)) -> np.ndarray:
    m = np.zeros(size, dtype=bool)
    m[rows, cols] = True
    return m


@pytest.mark.parametrize(
    "mask, want",
    [
        (np.zeros((8, 10), bool), [0, 0, 0, 0]),
        (_mask(slice(2, 3), slice(3, 4)), [3, 2, 0, 0]),  # one pixel: w = x1 - x0 = 0
        (_mask(slice(1, 5), slice(2, 7)), [2, 1, 4, 3]),
        (_mask(slice(0, 8), slice(0, 10)), [0, 0, 9, 7]),
    ],
)
def test_mask_xywh_is_the_official_record_box(mask, want):
    assert mask_xywh(mask) == want
    assert all(type(v) is int for v in mask_xywh(mask))  # JSON writes 3, not 3.0


def test_mask_xywh_agrees_with_the_tight_box():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((12, 9)) > 0.9
        x0, y0, x1, y1 = batched_mask_to_box(torch.from_numpy(mask)).tolist()
        assert mask_xywh(mask) == [x0, y0, x1 - x0, y1 - y0]


@pytest.mark.parametrize(
    "names, prefix, count, stale",
    [
        # segment's STEM_mask{i}.png: only this stem's numbered masks at or past count
        (
            ["a_mask0.png", "a_mask1.png", "a_mask2.png", "a_mask10.png", "ab_mask5.png"],
            "a_mask",
            2,
            ["a_mask10.png", "a_mask2.png"],
        ),
        (["a_mask.png", "a_maskx.png", "a_mask3.jpg", "a_mask².png"], "a_mask", 0, []),
        # auto's STEM/{i}.png beside metadata.csv
        (["0.png", "1.png", "2.png", "x1.png", "metadata.csv"], "", 1, ["1.png", "2.png"]),
        (["0.png", "1.png"], "", 2, []),
    ],
)
def test_stale_numbered(tmp_path, names, prefix, count, stale):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in stale_numbered(tmp_path, prefix, count)] == stale


def test_stale_numbered_without_a_folder(tmp_path):
    assert stale_numbered(tmp_path / "missing", "", 0) == []


def test_stale_masks_of_a_stem_in_a_sub_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("sub/a_mask0.png", "sub/a_mask1.png", "a_mask1.png"):
        (tmp_path / name).write_bytes(b"")
    assert stale_masks(tmp_path, "sub/a", 1) == [tmp_path / "sub" / "a_mask1.png"]


def test_output_paths():
    assert [p.name for p in output_paths(Path("o"), "s", 2, overlay=True)] == [
        "s.json", "s_mask0.png", "s_mask1.png", "s_overlay.png"
    ]  # fmt: skip
    assert [p.name for p in output_paths(Path("o"), "s", 1, overlay=False)] == [
        "s.json", "s_mask0.png"
    ]  # fmt: skip


def test_write_prompted_two_boxes_three_candidates(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)
    masks = rng.random((2, 3, 8, 10)) > 0.5  # P×C×H×W
    scores = np.array([[0.1, 0.7, 0.2], [0.9, 0.3, 0.4]], dtype=np.float32)
    boxes = np.array([[1.0, 1.0, 5.0, 6.0], [2.0, 0.0, 9.0, 7.0]])
    points, labels = np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    doc = prompted_document(
        "img.png", (8, 10), points, labels, boxes,
        prompt_count=2, multimask=True, stem="img", overlay=True,
    )  # fmt: skip
    write_prompted(tmp_path, "img", doc, masks, scores, image)

    back = json.loads((tmp_path / "img.json").read_text())
    assert back == json.loads(json.dumps(doc))
    assert list(back) == ["image", "multimask", "prompts", "masks", "json", "overlay"]
    assert back["image"] == {"file_name": "img.png", "width": 10, "height": 8}
    assert [q["box"] for q in back["prompts"]] == boxes.tolist()
    entries = back["masks"]
    assert [(m["id"], m["prompt"], m["candidate"]) for m in entries] == [
        (0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0), (4, 1, 1), (5, 1, 2)
    ]  # fmt: skip
    for m in entries:
        want = masks[m["prompt"], m["candidate"]]
        assert list(m) == [
            "id", "prompt", "candidate", "score", "area", "bbox", "file", "segmentation"
        ]  # fmt: skip
        assert m["file"] == f"img_mask{m['id']}.png"
        np.testing.assert_array_equal(read_mask_png(tmp_path / m["file"]), want)
        np.testing.assert_array_equal(decode_rle(m["segmentation"]), want)
        assert m["area"] == int(want.sum()) and m["bbox"] == mask_xywh(want)
        assert m["score"] == pytest.approx(float(scores[m["prompt"], m["candidate"]]))
    assert (tmp_path / "img_overlay.png").is_file()


def test_write_prompted_without_overlay_writes_through_where(tmp_path):
    doc = prompted_document(
        "img.png", (4, 4), np.array([[1.0, 2.0]]), np.array([1]), np.zeros((0, 4)),
        prompt_count=1, multimask=False, stem="img", overlay=False,
    )  # fmt: skip
    assert doc["prompts"] == [{"points": [[1.0, 2.0]], "labels": [1], "box": None}]
    staged = tmp_path / "staged"
    masks = np.ones((1, 1, 4, 4), dtype=bool)
    image = np.zeros((4, 4, 3), np.uint8)
    write_prompted(
        tmp_path, "img", doc, masks, np.ones((1, 1)), image, where=lambda p: staged / p.name
    )
    assert sorted(p.name for p in staged.iterdir()) == ["img.json", "img_mask0.png"]
    assert doc["overlay"] is None and not (tmp_path / "img.json").exists()
