"""Drop-in for SAM-HQ's ``segment_anything_hq`` package (``segment-anything-hq`` 0.3),
backed by segany.

Change one import and SAM-HQ code runs unchanged::

    # from segment_anything_hq import SamPredictor, sam_model_registry
    from segany.segment_anything_hq import SamPredictor, sam_model_registry

    sam = sam_model_registry["vit_b"](checkpoint="sam_hq_vit_b.pth")
    masks, scores, logits = SamPredictor(sam).predict(..., hq_token_only=True)

Its registry's ``vit_b/l/h`` and ``vit_tiny`` build the HQ models (segany's
``sam_hq_vit_b/l/h/tiny``), and ``sam_model_registry_baseline`` SAM's own models (its
``vit_tiny``: MobileSAM's ``vit_t``). ``SamPredictor``, ``SamAutomaticMaskGenerator`` and the
``utils`` are ``segany.segment_anything``'s, which take ``hq_token_only`` where SAM-HQ's do.
A checkpoint of another model than the key names raises ``CheckpointError`` naming both (the
package loads it non-strictly, leaving the missing parts random).
"""

from collections.abc import Callable

from segany.modeling import Sam
from segany.segment_anything import utils
from segany.segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator
from segany.segment_anything.build_sam import (
    build_sam_vit_t,
    hq_builder,
)
from segany.segment_anything.build_sam import (
    sam_model_registry as _sam_registry,
)
from segany.segment_anything.predictor import SamPredictor

__all__ = [
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "sam_model_registry",
    "sam_model_registry_baseline",
    "utils",
]

build_sam_vit_h = hq_builder("vit_h")
build_sam_vit_l = hq_builder("vit_l")
build_sam_vit_b = hq_builder("vit_b")
build_sam = build_sam_vit_h  # the package's default

sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_tiny": hq_builder("vit_tiny"),
}

sam_model_registry_baseline: dict[str, Callable[..., Sam]] = {
    **{key: _sam_registry[key] for key in ("default", "vit_h", "vit_l", "vit_b")},
    "vit_tiny": build_sam_vit_t,
}
