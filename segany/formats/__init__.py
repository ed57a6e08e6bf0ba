"""Writers and readers for segmentation results; every writer is atomic.

- ``sa1b``: per-image SA-1B JSON (image info + COCO RLE annotations).
- ``coco``: a COCO instances JSON for a whole run (``pycocotools`` ``COCO``/``loadRes``).
- ``png``: mask PNGs, the official per-mask folder, 16-bit label maps.
- ``metadata``: the official ``amg.py`` ``metadata.csv``.
- ``polygons``: polygons with holes as GeoJSON.
- ``overlay``: the image with masks, points and boxes drawn.
- ``images``: reading input images with one clear error per bad file.
"""

from segany.formats.coco import coco_dataset, coco_image_masks, coco_results, read_coco, write_coco
from segany.formats.images import find_images, read_image
from segany.formats.metadata import read_metadata_csv, write_metadata_csv
from segany.formats.overlay import render_overlay, write_overlay
from segany.formats.png import (
    label_map,
    label_map_to_masks,
    read_label_map,
    read_mask_folder,
    read_mask_png,
    write_label_map,
    write_mask_folder,
    write_mask_png,
)
from segany.formats.polygons import (
    mask_polygons,
    polygons_to_mask,
    read_polygon_masks,
    read_polygons,
    write_polygons,
)
from segany.formats.sa1b import SA1BImage, read_sa1b, sa1b_document, write_sa1b

__all__ = [
    "SA1BImage",
    "coco_dataset",
    "coco_image_masks",
    "coco_results",
    "find_images",
    "label_map",
    "label_map_to_masks",
    "mask_polygons",
    "polygons_to_mask",
    "read_coco",
    "read_image",
    "read_label_map",
    "read_mask_folder",
    "read_mask_png",
    "read_metadata_csv",
    "read_polygon_masks",
    "read_polygons",
    "read_sa1b",
    "render_overlay",
    "sa1b_document",
    "write_coco",
    "write_label_map",
    "write_mask_folder",
    "write_mask_png",
    "write_metadata_csv",
    "write_overlay",
    "write_polygons",
    "write_sa1b",
]
