"""Polygons with holes, as GeoJSON in pixel coordinates.

A mask becomes a list of polygons, each ``[outer_ring, hole_ring, ...]``, each ring
``[[x, y], ...]`` through the centres of the mask's boundary pixels (OpenCV contours, via
``segany.masks.mask_to_polygons``). ``polygons_to_mask`` fills outer rings including their
boundary pixels and clears hole interiors excluding theirs, which gives back exactly the mask
that was traced.

The file is a GeoJSON ``FeatureCollection`` (x right, y down, pixels, not geographic), one
``Feature`` per mask with a ``MultiPolygon`` geometry and the SAM fields as properties, plus the
SA-1B ``image`` info as a foreign member. Rings are closed (the first point repeated) and padded
to four positions as GeoJSON requires; readers here undo both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segany.atomic import write_json_atomic
from segany.errors import InputError
from segany.formats.records import stack_masks
from segany.formats.sa1b import SA1BImage
from segany.masks import decode_rle, mask_to_polygons

Ring = list[list[float]]
Polygon = list[Ring]  # [outer, hole, hole, ...]


def mask_polygons(mask: np.ndarray) -> list[Polygon]:
    """Polygons of an H×W bool mask: ``[[outer, hole, ...], ...]``."""
    polygons: list[Polygon] = []
    # Keep one- and two-pixel regions too (min_points=1) so the round trip is exact.
    for ring in mask_to_polygons(np.asarray(mask, dtype=bool), min_points=1):
        pts = np.asarray(ring, dtype=np.float32)
        # OpenCV traces outer rings with negative signed area in image coordinates, holes
        # positive; degenerate rings (a pixel, a line) have zero area and are always outer.
        area = cv2.contourArea(pts, oriented=True) if len(pts) >= 3 else 0.0
        if area <= 0 or not polygons:
            polygons.append([ring])
        else:
            polygons[-1].append(ring)
    return polygons


def polygons_to_mask(polygons: Iterable[Polygon], size: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons (as ``mask_polygons`` returns) to an H×W bool mask of ``size``."""
    out = np.zeros(size, dtype=np.uint8)
    for polygon in polygons:
        if not polygon:
            continue
        region = np.zeros(size, dtype=np.uint8)
        cv2.fillPoly(region, [_int_ring(polygon[0])], 1)
        for hole in polygon[1:]:
            ring = _int_ring(hole)
            inside = np.zeros(size, dtype=np.uint8)
            cv2.fillPoly(inside, [ring], 1)
            # The hole ring runs through set pixels around the hole: keep those.
            cv2.polylines(inside, [ring], True, 0)
            region[inside > 0] = 0
        out |= region
    return out.astype(bool)


def polygons_document(document: SA1BImage) -> dict[str, Any]:
    """A GeoJSON FeatureCollection for one SA-1B document's masks."""
    features: list[dict[str, Any]] = []
    for ann in document.annotations:
        polygons = mask_polygons(decode_rle(ann["segmentation"]))
        props = {k: v for k, v in ann.items() if k != "segmentation"}
        features.append(
            {
                "type": "Feature",
                "id": ann.get("id", len(features)),
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [[_closed(r) for r in poly] for poly in polygons],
                },
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "image": document.image, "features": features}


def write_polygons(path: str | os.PathLike[str], document: SA1BImage) -> None:
    write_json_atomic(path, polygons_document(document))


def read_polygons(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[list[Polygon]]]:
    """Read a polygons file: (image info, per feature its list of polygons, rings open)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise InputError(f"{path}: not a GeoJSON FeatureCollection")
    shapes = []
    for feature in data.get("features", []):
        geometry = feature.get("geometry") or {}
        coords = geometry.get("coordinates", [])
        if geometry.get("type") == "Polygon":
            coords = [coords]
        shapes.append([[_opened(r) for r in poly] for poly in coords])
    return data.get("image", {}), shapes


def read_polygon_masks(path: str | os.PathLike[str]) -> np.ndarray:
    """The masks of a polygons file, N×H×W bool (needs the image size in the file)."""
    image, shapes = read_polygons(path)
    try:
        size = (int(image["height"]), int(image["width"]))
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: no image width/height to rasterise the polygons") from None
    return stack_masks((polygons_to_mask(s, size) for s in shapes), size)


def _int_ring(ring: Ring) -> np.ndarray:
    return np.round(np.asarray(ring, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)


def _closed(ring: Ring) -> Ring:
    out = [list(p) for p in ring] + [list(ring[0])]
    while len(out) < 4:  # GeoJSON linear rings need four positions
        out.insert(0, list(ring[0]))
    return out


def _opened(ring: Ring) -> Ring:
    return ring[:-1] if len(ring) > 1 and ring[0] == ring[-1] else ring
