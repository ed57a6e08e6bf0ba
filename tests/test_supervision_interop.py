"""``supervision.Detections.from_sam`` takes segany's generator output as it takes the official
one (native ``MaskRecord``s and the compat layer's dicts), in both mask output modes."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv  # a dev dependency, as segment-anything is
import torch
from helpers import reference_model
from PIL import Image
from skimage import data

import segany.segment_anything as compat
from segany.automatic import MaskGenerator
from segany.checkpoints import load_model

# predicted IoU 0.4: the bundled model keeps several masks on the photo (v8 at 0.5 kept 2)
OPTS = dict(points_per_side=8, pred_iou_thresh=0.4, stability_score_thresh=0.5)


@pytest.mark.parametrize("mode", ["binary_mask", "coco_rle"])
def test_detections_from_sam(mode):
    from segment_anything import SamAutomaticMaskGenerator

    torch.set_num_threads(1)
    image = np.asarray(Image.fromarray(data.astronaut()).resize((160, 120), Image.BILINEAR))
    model = load_model()
    ref = reference_model(model.config, model.state_dict())
    theirs = sv.Detections.from_sam(
        SamAutomaticMaskGenerator(ref, output_mode=mode, **OPTS).generate(image)
    )
    native = MaskGenerator(model, output_mode=mode, **OPTS).generate(image)
    assert len(theirs) >= 3
    for result in (
        native,
        compat.SamAutomaticMaskGenerator(model, output_mode=mode, **OPTS).generate(image),
    ):
        ours = sv.Detections.from_sam(sam_result=result)
        np.testing.assert_array_equal(ours.xyxy, theirs.xyxy)
        np.testing.assert_array_equal(ours.mask, theirs.mask)
        assert ours.mask.shape == (len(theirs), 120, 160)
