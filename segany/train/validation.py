"""In-training validation: the evaluation protocol's single-point, 3-click and box mIoU.

Each validation image is read at its original resolution and measured by the protocols of
``segany.evaluate`` through a ``Predictor`` (``segany.train.quality.measure``): one click at the
protocol's center point (three masks, the top-scored one kept) and, separately, the tight box
(one mask), IoU against the ground truth at full resolution; and the clicks protocol
(corrective clicks in the error region, previous logits fed back) after 3 clicks. The figures
are the numbers ``segany eval`` reports for the model, on the first ``max_images`` images
with at most ``dataset.masks_per_image`` objects each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segany.train.datasets import MaskDataset

if TYPE_CHECKING:
    from segany.modeling import Sam


def prompt_miou(
    model: Sam, dataset: MaskDataset, max_images: int = 100, precision: str = "fp32"
) -> dict[str, float]:
    """``{"point_miou", "clicks3_miou", "box_miou", "masks"}`` over the first ``max_images``
    images.

    ``precision`` is the Predictor's ("fp32", "bf16" or "fp16").
    """
    from segany.formats.datasets import Sample
    from segany.train.quality import measure

    samples = []
    for i in range(min(max_images, len(dataset))):
        image, masks = dataset.load(i)
        samples.append(Sample.from_arrays(image, masks[: dataset.masks_per_image], image_id=i))
    found = measure(model, samples, precision, max_clicks=3)
    if found["objects"] == 0:
        return {"point_miou": 0.0, "clicks3_miou": 0.0, "box_miou": 0.0, "masks": 0}
    return {
        "point_miou": found["point_miou"],
        "clicks3_miou": found["clicks3_miou"],
        "box_miou": found["box_miou"],
        "masks": found["objects"],
    }
