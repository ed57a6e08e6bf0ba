"""Drop-in for the official ``segment_anything`` package, backed by segany.

Change one import and official code runs unchanged::

    import segany.segment_anything as segment_anything
    # or: from segany.segment_anything import SamPredictor, sam_model_registry

Same module layout and names (``sam_model_registry``, ``build_sam*``, ``SamPredictor``,
``SamAutomaticMaskGenerator``, ``modeling``, ``utils.amg``, ``utils.transforms``,
``utils.onnx``), same return types (tuples of numpy arrays, lists of plain dicts). The classes
are segany's own (``SamPredictor`` is a ``segany.Predictor``, the generator a
``segany.MaskGenerator``), so segany's extras stay available on them.
"""

# Submodules the official package has imported once it is imported.
from segany.segment_anything import modeling, utils
from segany.segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator
from segany.segment_anything.build_sam import (
    build_sam,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    build_sam_vit_t,
    sam_model_registry,
)
from segany.segment_anything.predictor import SamPredictor

__all__ = [
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "modeling",
    "sam_model_registry",
    "utils",
]
