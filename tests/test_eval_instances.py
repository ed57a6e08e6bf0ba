"""The paper's zero-shot instance segmentation protocol (§7.3, issue 39): a detector's boxes
prompt the model and COCO mask AP scores the masks. With the ground truth made from the model's
own masks for the same boxes, AP is 1; shuffled categories or a missing image say so."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segany import Predictor, load_model
from segany.errors import InputError
from segany.evaluate.instances import evaluate_instances
from segany.masks import decode_rle
from segany.tasks import Detections, segment_detections


def _scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (96, 128, 3), dtype=np.uint8)
    img[10:50, 20:70] = (220, 30, 30)
    img[55:90, 80:120] = (30, 200, 60)
    return img


BOXES = [[20, 10, 70, 50], [80, 55, 120, 90]]


@pytest.fixture(scope="module")
def predictor():
    return Predictor(load_model(), cache=False)  # the bundled model: distinct masks per box


def _dataset(tmp_path, predictor):
    """Two images whose ground truth is the model's own box masks; COCO ids 11 and 12."""
    (tmp_path / "images").mkdir()
    gt = {
        "images": [],
        "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}],
        "annotations": [],
    }
    dets = []
    for k, image_id in enumerate((11, 12)):
        image = _scene(k)
        Image.fromarray(image).save(tmp_path / "images" / f"im{k}.png")
        gt["images"].append({"id": image_id, "file_name": f"im{k}.png", "height": 96, "width": 128})
        out = segment_detections(predictor, image, Detections.from_arrays(BOXES))
        for c, (rle, box) in enumerate(zip(out.rles, BOXES, strict=True), 1):
            area = int(decode_rle(rle).sum())
            if area == 0:
                continue
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": c,
                    "segmentation": rle,
                    "area": area,
                    "bbox": [0, 0, 1, 1],
                    "iscrowd": 0,
                }
            )
            x0, y0, x1, y1 = box
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": c,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": 0.9,
                }
            )
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return dets


def test_ap_is_one_when_the_ground_truth_is_the_models_own_masks(tmp_path, predictor):
    dets = _dataset(tmp_path, predictor)
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    result = evaluate_instances(predictor, tmp_path / "gt.json", tmp_path / "dets.json")
    assert result.metrics["ap"].value == pytest.approx(1.0)
    assert result.metrics["ap50"].value == pytest.approx(1.0)
    assert [r["image_id"] for r in result.per_image] == [11, 12]
    assert result.to_dict()["protocol"] == "instances"

    # the detector's categories count: swapping them loses every match
    swapped = [dict(d, category_id=3 - d["category_id"]) for d in dets]
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    worse = evaluate_instances(predictor, tmp_path / "gt.json", tmp_path / "swapped.json")
    assert worse.metrics["ap"].value == pytest.approx(0.0)


def test_bad_inputs_are_named(tmp_path, predictor):
    dets = _dataset(tmp_path, predictor)
    (tmp_path / "dets.json").write_text(json.dumps([dict(dets[0], image_id=99)]))
    with pytest.raises(InputError, match="image_id 99 is none of the 2 images"):
        evaluate_instances(predictor, tmp_path / "gt.json", tmp_path / "dets.json")
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    (tmp_path / "images" / "im1.png").unlink()
    with pytest.raises(InputError, match=r"im1.png: image 12 of gt.json is not there"):
        evaluate_instances(predictor, tmp_path / "gt.json", tmp_path / "dets.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not a readable COCO annotation file"):
        evaluate_instances(predictor, tmp_path / "bad.json", tmp_path / "dets.json")
