"""Drop-in for the official ``sam2`` package's image API, backed by segany.

Change one import and a script written for SAM 2's images runs unchanged::

    from segany.sam2.build_sam import build_sam2
    from segany.sam2.sam2_image_predictor import SAM2ImagePredictor
    from segany.sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

Same module layout and names (``build_sam2``, ``build_sam2_hf``, ``SAM2ImagePredictor`` with
``from_pretrained``, ``set_image``, ``set_image_batch``, ``predict``, ``predict_batch``,
``SAM2AutomaticMaskGenerator`` with its options and ``from_pretrained``), same return types
(tuples of float32 numpy arrays, lists of plain dicts). The hydra config names select the
variant (``configs/sam2.1/sam2.1_hiera_l.yaml`` is ``sam2.1_hiera_large``); the checkpoint is
the official ``.pt`` (or any file segany reads). Nothing is fetched from the Hugging Face hub:
``from_pretrained`` takes a local file, or says how to get one. Video (``build_sam2_video_
predictor``) is not part of this package.
"""

from segany.sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from segany.sam2.build_sam import build_sam2, build_sam2_hf
from segany.sam2.sam2_image_predictor import SAM2ImagePredictor

__all__ = ["SAM2AutomaticMaskGenerator", "SAM2ImagePredictor", "build_sam2", "build_sam2_hf"]
