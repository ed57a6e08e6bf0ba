"""Segment everything: the official automatic mask generator and its parts.

- ``generator``: ``MaskGenerator`` (grid prompts over the image and its crops, presets);
- the decoder for a whole grid of single-point prompts at once is
  ``segany.modeling.mask_decoder_shared.PointDecoder`` (beside the decoder it mirrors);
- ``select``: the model-free stage (quality cuts, NMS, small-region cleanup, output records).
"""

from segany.automatic.generator import PRESETS, MaskGenerator
from segany.automatic.select import OUTPUT_MODES, MaskCandidates, MaskRecord

__all__ = ["OUTPUT_MODES", "PRESETS", "MaskCandidates", "MaskGenerator", "MaskRecord"]
