"""The paper's zero-shot tasks composed from the promptable model, without training:
instance segmentation from a detector's boxes (``detections``), edge maps (``edges``), and
images larger than the model's frame answered tile by tile (``tiles``)."""

from __future__ import annotations

from segany.tasks.detections import (
    Detections,
    InstanceMasks,
    coco_instance_results,
    from_supervision,
    read_coco_detections,
    read_yolo_detections,
    segment_detections,
)
from segany.tasks.tiled_generate import clear_progress, generate_tiled
from segany.tasks.tiles import FramedPrediction, TiledPredictor, tile_frames

__all__ = [
    "Detections",
    "FramedPrediction",
    "InstanceMasks",
    "TiledPredictor",
    "clear_progress",
    "coco_instance_results",
    "from_supervision",
    "generate_tiled",
    "read_coco_detections",
    "read_yolo_detections",
    "segment_detections",
    "tile_frames",
]
