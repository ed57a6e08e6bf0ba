"""Segment everything: the official automatic mask generator and its parts.

- ``generator``: ``MaskGenerator`` (grid prompts over the image and its crops, presets);
- ``point_decoder``: the mask decoder run for a whole grid of single-point prompts at once;
- ``select``: the model-free stage (quality cuts, NMS, small-region cleanup, output records).
"""

from segany.automatic.generator import PRESETS, MaskGenerator
from segany.automatic.select import OUTPUT_MODES, MaskCandidates, MaskRecord

__all__ = ["OUTPUT_MODES", "PRESETS", "MaskCandidates", "MaskGenerator", "MaskRecord"]
