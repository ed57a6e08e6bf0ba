"""The native API reads like the official one where code expects it: records as mappings,
predictions as the 3-tuple, the predictor's official attributes, Sam.forward without autograd."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import SMALL, seeded_model

from segany.automatic import MaskGenerator, MaskRecord
from segany.errors import InputError
from segany.inference.predictor import Predictor

KEYS = ["segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score"]
KEYS.append("crop_box")


def _record(area: int = 5) -> MaskRecord:
    seg = {"size": [4, 5], "counts": "04;0"}
    return MaskRecord(seg, area, [0, 0, 1, 4], 0.9, [[0.5, 2.0]], 0.97, [0, 0, 5, 4])


def test_mask_record_is_a_read_only_mapping():
    rec = _record()
    assert list(rec) == KEYS and list(rec.keys()) == KEYS and len(rec) == 7
    assert rec["area"] == 5 and rec.get("nope") is None and "bbox" in rec
    assert dict(rec) == rec.to_dict() and rec == rec.to_dict()
    with pytest.raises(KeyError):
        rec["nope"]
    with pytest.raises(TypeError):
        rec["area"] = 3  # type: ignore[index]
    anns = sorted([_record(9), _record(2), _record(5)], key=lambda x: x["area"])
    assert [a["area"] for a in anns] == [2, 5, 9]
    assert json.loads(json.dumps([r.to_dict() for r in anns]))[0]["area"] == 2


def test_prediction_indexes_like_the_official_tuple():
    p = Predictor(seeded_model(SMALL))
    p.set_image(np.zeros((40, 60, 3), np.uint8))
    out = p.predict(point_coords=[[10, 20]], point_labels=[1])
    masks, scores, logits = out
    assert len(out) == 3 and out[0] is masks and out[1] is scores and out[-1] is logits
    assert out[:2] == (masks, scores)
    assert masks.shape == (3, 40, 60) and out[0][np.argmax(out[1])].dtype == bool


def test_predictor_official_attributes_and_embedding_assignment():
    model = seeded_model(SMALL)
    a, b = Predictor(model), Predictor(model)
    a.set_image(np.full((30, 50, 3), 90, np.uint8))
    assert a.model is model and a.device == torch.device("cpu")
    assert (a.orig_h, a.orig_w, a.input_h, a.input_w) == (30, 50, 154, 256)
    b.features = a.features  # original_size missing: not set yet
    assert not b.is_image_set
    b.original_size = (30, 50)  # input_size follows from the transform
    assert b.is_image_set and b.input_size == a.input_size
    prompt = dict(point_coords=[[5, 5]], point_labels=[1])
    np.testing.assert_array_equal(a.predict(**prompt).logits, b.predict(**prompt).logits)
    b.is_image_set = False
    assert b.features is None and b.original_size is None
    with pytest.raises(InputError, match="no image is set"):
        b.predict(**prompt)


def test_box_corner_labels_encode_as_a_box():
    """Labels 2/3 get the box-corner embeddings: the two tokens equal a box prompt's (the point
    prompt then has one more, the padding token); the predictor accepts them."""
    model = seeded_model(SMALL)
    pe = model.prompt_encoder
    box = torch.tensor([[5.0, 6.0, 40.0, 50.0]])
    with torch.no_grad():
        as_box, _ = pe(points=None, boxes=box, masks=None)
        as_points, _ = pe(
            points=(box.view(1, 2, 2), torch.tensor([[2, 3]])), boxes=None, masks=None
        )
    assert as_points.shape[1] == 3
    torch.testing.assert_close(as_points[:, :2], as_box, rtol=0, atol=0)
    p = Predictor(model)
    p.set_image(np.full((64, 64, 3), 120, np.uint8))
    corners = p.predict(point_coords=[[5, 6], [40, 50]], point_labels=[2, 3])
    assert corners.masks.shape == (3, 64, 64)


def test_sam_forward_runs_without_autograd():
    model = seeded_model(SMALL)
    batch = [{"image": torch.zeros(3, 256, 256), "original_size": (256, 256)}]
    out = model(batch, multimask_output=True)[0]
    assert not any(t.requires_grad for t in out.values())
    assert out["iou_predictions"].numpy().shape == (1, 3)


@pytest.mark.parametrize("thresh", [-1.0, -0.1, 0.0, 0.3, 1.5])
def test_pred_iou_thresh_any_finite_number(thresh):
    # No stability filter or NMS, so the IoU threshold alone decides. The seeded model predicts
    # IoUs from about -0.7 to 0.5 here: as officially, a threshold <= 0 filters nothing (the
    # negative predictions stay) and one above 0 keeps exactly the masks predicted above it.
    model, image = seeded_model(SMALL), np.full((32, 32, 3), 100, np.uint8)
    opts = dict(points_per_side=2, stability_score_thresh=0.0, box_nms_thresh=1.0)
    gen = MaskGenerator(model, pred_iou_thresh=thresh, **opts)
    assert gen.pred_iou_thresh == thresh
    everything = [
        r.predicted_iou for r in MaskGenerator(model, **opts, pred_iou_thresh=0.0).generate(image)
    ]
    assert min(everything) < -0.1 and max(everything) > 0.3  # both sides of every threshold
    want = everything if thresh <= 0 else [v for v in everything if v > thresh]
    assert sorted(r.predicted_iou for r in gen.generate(image)) == sorted(want)
