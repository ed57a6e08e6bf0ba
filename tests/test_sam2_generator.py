"""The automatic generator on SAM 2.1 tiny against ``SAM2AutomaticMaskGenerator`` (sam2 1.1.0)
on the same seeded weights: the same records in the same order, masks identical but for
pixels whose official logit lies within 3e-6 of the largest of 0.

The seeded weights' masks are faint (logits within about ±2, covering most of the image), so
the thresholds are set where their scores lie (predicted IoU 0.48-0.64, stability at offset
0.2 up to ~0.5; after m2m refinement IoU 0.62-0.65, stability 0.02-0.14) and box NMS is off
(1.0: every box is the whole image); both generators get the same options. A 4×4 grid keeps
each case to ~20 s per package on 2 cores (m2m ~45 s).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import perturb_

from segany.automatic.generator import MaskGenerator
from segany.checkpoints import load_model
from segany.errors import InputError

pytest.importorskip("hydra")
pytest.importorskip("sam2")

BASE = dict(
    points_per_side=4,
    pred_iou_thresh=0.55,
    stability_score_thresh=0.3,
    stability_score_offset=0.2,
    box_nms_thresh=1.0,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from sam2.build_sam import build_sam2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        official = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
    perturb_(official, 0).eval()
    path = tmp_path_factory.mktemp("sam2gen") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": official.state_dict()}, path)
    return official, load_model(path)


@pytest.fixture(scope="module")
def image():
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((420, 300), Image.BILINEAR))


def _compare(theirs: list[dict], ours: list) -> None:
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        assert b["predicted_iou"] == pytest.approx(a["predicted_iou"], abs=3e-6), i
        assert b["stability_score"] == pytest.approx(a["stability_score"], abs=1e-3), i
        np.testing.assert_allclose(b["point_coords"], a["point_coords"], atol=1e-4)
        assert b["crop_box"] == a["crop_box"]
        differ = int((a["segmentation"] != b["segmentation"]).sum())
        # a pixel may flip where the logit is within float noise of 0 (none did here)
        assert differ <= 2, f"record {i}: {differ} pixels differ"
        assert abs(b["area"] - a["area"]) <= 2


@pytest.mark.parametrize(
    "opts",
    [
        pytest.param({}, id="defaults-multimask"),
        pytest.param(dict(multimask_output=False, pred_iou_thresh=0.45), id="single-mask"),
        pytest.param(  # every mask decoded twice: ~75 s for both packages at load 10
            dict(use_m2m=True, pred_iou_thresh=0.63, stability_score_thresh=0.04),
            id="m2m",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_same_masks_same_order(models, image, opts):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    official, ours = models
    options = {**BASE, **opts}
    theirs = SAM2AutomaticMaskGenerator(official, **options).generate(image)
    got = MaskGenerator(ours, **options).generate(image)
    # the thresholds keep some masks and drop others (48 candidates for 16 points × 3)
    assert 2 <= len(theirs) < 16 * 3
    _compare(theirs, got)


def test_sam2_defaults_and_options_refused_elsewhere(models):
    _, ours = models
    gen = MaskGenerator(ours)
    assert gen.pred_iou_thresh == 0.8 and not gen.use_m2m and gen.multimask_output
    from helpers import seeded_model

    sam1 = seeded_model()
    assert MaskGenerator(sam1).pred_iou_thresh == 0.88
    with pytest.raises(InputError, match="SAM 2's generator options"):
        MaskGenerator(sam1, use_m2m=True)
