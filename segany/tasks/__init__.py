"""The paper's zero-shot tasks composed from the promptable model, without training:
instance segmentation from a detector's boxes (``detections``)."""

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

__all__ = [
    "Detections",
    "InstanceMasks",
    "coco_instance_results",
    "from_supervision",
    "read_coco_detections",
    "read_yolo_detections",
    "segment_detections",
]
