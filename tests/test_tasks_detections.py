"""Detections in, masks out (issue 39): the batched call equals a per-box loop of
``Predictor.predict``; COCO results, YOLO txt and supervision detections are read with every
bad input refused by name; the COCO results written read back with pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import seeded_model

from segany import Predictor, load_model
from segany.errors import InputError
from segany.masks import decode_rle
from segany.tasks import (
    Detections,
    coco_instance_results,
    from_supervision,
    read_coco_detections,
    read_yolo_detections,
    segment_detections,
)


def _scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 40, (120, 160, 3), dtype=np.uint8)
    img[20:60, 30:90] = (220, 30, 30)
    img[70:110, 100:150] = (30, 200, 60)
    return img


def _boxes(n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    x0 = rng.uniform(0, 120, n)
    y0 = rng.uniform(0, 80, n)
    return np.stack([x0, y0, x0 + rng.uniform(8, 40, n), y0 + rng.uniform(8, 40, n)], 1)


@pytest.fixture(scope="module")
def predictor():
    return Predictor(seeded_model(), cache=False)


def test_batched_detections_equal_a_per_box_loop(predictor):
    image, boxes = _scene(), _boxes(13)
    dets = Detections.from_arrays(boxes, np.linspace(0.9, 0.3, 13), np.arange(13) % 3 + 1)
    out = segment_detections(predictor, image, dets, batch_size=5)  # 3 decoder calls
    assert out.clipped == 0 and len(out.rles) == 13
    for i, box in enumerate(boxes):
        one = predictor.predict(box=box, multimask_output=False)
        assert np.array_equal(decode_rle(out.rles[i]), one.masks[0]), i
        assert out.iou_predictions[i] == pytest.approx(float(one.scores[0]), abs=1e-5)
    # the detector's categories and scores travel to the results, in detection order
    rows = coco_instance_results(7, out)
    assert [r["category_id"] for r in rows] == (np.arange(13) % 3 + 1).tolist()
    assert rows[0]["score"] == pytest.approx(0.9) and rows[0]["image_id"] == 7
    assert rows[0]["bbox"] == pytest.approx([*boxes[0, :2], *(boxes[0, 2:] - boxes[0, :2])])


def test_boxes_outside_are_clipped_and_a_box_with_no_area_inside_is_refused(predictor):
    image = _scene()
    dets = Detections.from_arrays([[-10, -5, 30, 30], [150, 100, 200, 200]])
    out = segment_detections(predictor, image, dets)
    assert out.clipped == 2
    assert out.detections.boxes.tolist() == [[0, 0, 30, 30], [150, 100, 160, 120]]
    outside = Detections.from_arrays([[10, 10, 20, 20], [170, 10, 200, 30]])
    with pytest.raises(InputError, match=r"detection 1 box .* no area inside the 160×120 image"):
        segment_detections(predictor, image, outside, what="photo.jpg")
    with pytest.raises(InputError, match="finite"):
        Detections.from_arrays([[0, 0, np.nan, 4]])
    # an image without detections is not even encoded
    empty = segment_detections(predictor, image, Detections.from_arrays([]))
    assert empty.rles == [] and empty.iou_predictions.shape == (0,)


def test_coco_results_match_images_by_id_name_or_numeric_stem(tmp_path):
    images = [tmp_path / "000000000042.jpg", tmp_path / "street.png"]
    rows = [
        {"image_id": 42, "bbox": [1, 2, 10, 20], "score": 0.9, "category_id": 3},
        {"image_id": "street", "bbox": [0, 0, 5, 5], "score": 0.2, "category_id": 1},
        {"image_id": "street.png", "bbox": [5, 5, 5, 5], "score": 0.8, "category_id": 2},
    ]
    (tmp_path / "dets.json").write_text(json.dumps(rows))
    got = read_coco_detections(tmp_path / "dets.json", images)
    assert got[images[0]].boxes.tolist() == [[1, 2, 11, 22]]
    assert got[images[0]].categories.tolist() == [3]
    assert got[images[1]].scores.tolist() == [0.2, 0.8]
    # min_score drops low-confidence rows; a COCO images list maps ids to file names
    assert read_coco_detections(tmp_path / "dets.json", images, min_score=0.5)[
        images[1]
    ].scores.tolist() == [0.8]
    listed = [{"id": 7, "file_name": "train/street.png"}]
    (tmp_path / "ids.json").write_text(json.dumps([{"image_id": 7, "bbox": [0, 0, 4, 4]}]))
    assert list(read_coco_detections(tmp_path / "ids.json", images, coco_images=listed)) == [
        images[1]
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"image_id": 99, "bbox": [0, 0, 1, 1]}], r"image_id 99 is none of the 2 images"),
        ([{"image_id": 42, "bbox": [0, 0, 1]}], r"'bbox' must be \[x, y, w, h\]"),
        ([{"image_id": 42, "bbox": [0, 0, "a", 1]}], "bbox must be a number"),
        ([{"image_id": 42, "bbox": [0, 0, 1, 1], "category_id": "cat"}], "must be an integer"),
        ([{"bbox": [0, 0, 1, 1]}], "needs 'image_id' and 'bbox'"),
        ({"x": 1}, "a JSON list of detections"),
    ],
)
def test_bad_coco_results_are_refused_by_name(tmp_path, rows, message):
    images = [tmp_path / "000000000042.jpg", tmp_path / "street.png"]
    (tmp_path / "dets.json").write_text(json.dumps(rows))
    with pytest.raises(InputError, match=message):
        read_coco_detections(tmp_path / "dets.json", images)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(InputError, match="not a readable COCO results JSON"):
        read_coco_detections(tmp_path / "broken.json", images)


def test_yolo_labels_are_denormalised_and_bad_files_refused(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("2 0.5 0.5 0.5 0.25 0.7\n\n0 0.25 0.25 0.1 0.1\n")
    sizes = {tmp_path / "a.jpg": (100, 200), tmp_path / "b.jpg": (50, 50)}
    got = read_yolo_detections(labels, sizes)
    assert list(got) == [tmp_path / "a.jpg"]  # b has no label file: no detections
    assert got[tmp_path / "a.jpg"].boxes.tolist() == [[50, 37.5, 150, 62.5], [40, 20, 60, 30]]
    assert got[tmp_path / "a.jpg"].scores.tolist() == [0.7, 1.0]
    assert got[tmp_path / "a.jpg"].categories.tolist() == [2, 0]
    (labels / "a.txt").write_text("0 0.1 0.1 0.2 0.1 0.3 0.2 0.4\n")
    with pytest.raises(InputError, match=r"a.txt:1: .* \(a segmentation polygon\)"):
        read_yolo_detections(labels, sizes)
    (labels / "a.txt").write_text("0 0.1 zero 0.2 0.1\n")
    with pytest.raises(InputError, match="a.txt:1: not numbers"):
        read_yolo_detections(labels, sizes)
    (labels / "a.txt").unlink()
    (labels / "c.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(InputError, match=r"no image named c\.\*"):
        read_yolo_detections(labels, sizes)
    with pytest.raises(InputError, match="expected a folder of YOLO"):
        read_yolo_detections(tmp_path / "missing", sizes)


def test_supervision_detections_are_read():
    sv = pytest.importorskip("supervision")
    det = sv.Detections(
        xyxy=np.array([[1.0, 2.0, 30.0, 40.0]]),
        confidence=np.array([0.5]),
        class_id=np.array([4]),
    )
    got = from_supervision(det)
    assert got.boxes.tolist() == [[1, 2, 30, 40]] and got.categories.tolist() == [4]
    assert from_supervision(sv.Detections(xyxy=np.zeros((0, 4)))).boxes.shape == (0, 4)
    with pytest.raises(InputError, match="expected a supervision Detections"):
        from_supervision([[1, 2, 3, 4]])


def test_results_read_back_with_pycocotools(predictor, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image = _scene()
    dets = Detections.from_arrays([[30, 20, 90, 60], [100, 70, 150, 110]], [0.9, 0.8], [1, 2])
    out = segment_detections(predictor, image, dets)
    gt = {
        "images": [{"id": 1, "width": 160, "height": 120, "file_name": "scene.png"}],
        "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}],
        "annotations": [],
    }
    for i, rle in enumerate(out.rles):
        area = int(decode_rle(rle).sum())
        gt["annotations"].append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": i + 1,
                "segmentation": rle,
                "area": area,
                "bbox": [0, 0, 1, 1],
                "iscrowd": 0,
            }
        )
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = COCO(str(tmp_path / "gt.json"))
    res = coco.loadRes(coco_instance_results(1, out))
    ev = COCOeval(coco, res, "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # the masks themselves as ground truth: AP 1


def test_segment_command_takes_a_detectors_boxes(tmp_path, capsys):
    from PIL import Image

    from segany.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for name in ("000000000001.png", "000000000002.png", "street.png"):
        Image.fromarray(_scene()).save(images / name)
    rows = [
        {"image_id": 1, "bbox": [30, 20, 60, 40], "score": 0.9, "category_id": 5},
        {"image_id": 1, "bbox": [100, 70, 50, 40], "score": 0.7, "category_id": 6},
        {"image_id": 2, "bbox": [-5, -5, 40, 40], "score": 0.8, "category_id": 5},
    ]
    (tmp_path / "dets.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(images),
            "--detections",
            str(tmp_path / "dets.json"),
            "-o",
            str(out),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 2  # street.png has no detections: skipped
    results = json.loads((out / "results.json").read_text())
    assert [(r["image_id"], r["category_id"], r["score"]) for r in results] == [
        (1, 5, 0.9),
        (1, 6, 0.7),
        (2, 5, 0.8),
    ]
    assert results[2]["bbox"] == [0.0, 0.0, 35.0, 35.0]  # clipped to the image
    assert len(list(out.glob("000000000001_mask*.png"))) == 2
    # the masks equal the library call's
    predictor = Predictor(load_model(), cache=False)
    dets = read_coco_detections(tmp_path / "dets.json", sorted(images.iterdir()))
    first = segment_detections(predictor, _scene(), dets[images / "000000000001.png"])
    assert [r["segmentation"]["counts"] for r in results[:2]] == [r["counts"] for r in first.rles]

    # YOLO labels: image ids are the stems
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "street.txt").write_text("3 0.5 0.5 0.25 0.25 0.6\n")
    code = main(["segment", str(images), "--detections", str(labels), "-o", str(out), "-q"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in results] == [("street", 3)]
    assert results[0]["bbox"] == [60.0, 45.0, 40.0, 30.0]

    # --detections gives the boxes: prompts beside it are a usage error; bad files are named
    assert (
        main(
            [
                "segment",
                str(images),
                "--detections",
                str(labels),
                "--box",
                "1,1,9,9",
                "-o",
                str(out),
                "-q",
            ]
        )
        == 2
    )
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 77, "bbox": [0, 0, 4, 4]}]))
    assert (
        main(
            [
                "segment",
                str(images),
                "--detections",
                str(tmp_path / "bad.json"),
                "-o",
                str(out),
                "-q",
            ]
        )
        == 3
    )
    assert "image_id 77 is none of the 3 images" in capsys.readouterr().err


def test_segment_command_decodes_many_boxes_a_few_at_a_time(tmp_path, monkeypatch):
    """Boxes whose masks together pass what one predict call may make (a detector's hundreds
    of boxes on a large photo): the command decodes them a few a call, within
    ``MASK_PIXELS_PER_BATCH``, and writes what one call would have: the same PNGs and overlay,
    the same JSON and results but for the scores' last float bits."""
    from PIL import Image

    import segany.limits as limits
    from segany.cli import main

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_scene()).save(images / "1.png")
    rng = np.random.default_rng(2)
    rows = [
        {"image_id": 1, "bbox": [float(x), float(y), 40.0, 30.0], "score": 0.5, "category_id": 1}
        for x, y in zip(rng.uniform(0, 150, 7), rng.uniform(0, 100, 7), strict=True)
    ]
    (tmp_path / "dets.json").write_text(json.dumps(rows))

    def run(out):
        argv = ["segment", str(images), "--detections", str(tmp_path / "dets.json")]
        assert main([*argv, "-o", str(out), "-q", "--multimask"]) == 0
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    whole = run(tmp_path / "whole")  # one call: 7 boxes × 3 masks
    h, w = _scene().shape[:2]
    calls = []
    monkeypatch.setattr(limits, "MASK_PIXELS_PER_BATCH", 2 * 3 * h * w)  # two boxes a call
    monkeypatch.setattr(limits, "MAX_MASK_PIXELS_PER_CALL", 3 * 3 * h * w)  # one call: refused
    real = Predictor.predict
    monkeypatch.setattr(
        Predictor,
        "predict",
        lambda self, *a, **k: calls.append(k["box"].shape) or real(self, *a, **k),
    )
    few = run(tmp_path / "few")
    assert calls == [(2, 4), (2, 4), (2, 4), (1, 4)]
    assert few.keys() == whole.keys() and len([n for n in few if "_mask" in n]) == 21
    for name in few:  # the PNGs (masks, overlay) byte for byte
        if not name.endswith(".json"):
            assert few[name] == whole[name], name
    # the JSON files too, but for the IoU scores' last float bits, which depend on how many
    # prompts share a decoder call
    for name in ("1.json", "results.json"):
        got, want = json.loads(few[name]), json.loads(whole[name])
        records = (got["masks"], want["masks"]) if name == "1.json" else (got, want)
        if name == "1.json":
            for a, b in zip(*records, strict=True):
                assert a.pop("score") == pytest.approx(b.pop("score"), rel=1e-6)
        assert got == want
