"""Images and masks in the database: the operations behind the API, free of HTTP.

Masks are checked here (RLE size must be the image's; area and box come from the mask, never
from the client). Updates and deletes are conditional on the version the client read: a stale
one raises ``Conflict`` carrying the current row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import sessionmaker

from segany.errors import InputError
from segany.masks import decode_rle, encode_rle
from segany.server.db import ImageRow, MaskRow, now
from segany.server.project import Conflict, ImageInfo, NotFound


def mask_fields(rle: dict[str, Any], image: ImageRow) -> dict[str, Any]:
    """rle/area/bbox columns from a client RLE, checked against the image size."""
    size = [int(v) for v in rle["size"]]
    if size != [image.height, image.width]:
        raise InputError(
            f"the mask is {size[0]}×{size[1]} but image {image.id} is {image.height}×{image.width}"
        )
    try:
        mask = decode_rle({"size": size, "counts": rle["counts"]})
    except Exception as e:  # noqa: BLE001 - pycocotools raises bare exceptions on bad counts
        raise InputError(f"the mask's RLE counts do not decode ({e})") from None
    if mask.shape != (image.height, image.width):
        raise InputError("the mask's RLE counts do not match its size")
    area = int(mask.sum())
    if area == 0:
        raise InputError("the mask is empty")
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    # Normalise to our own encoding, so equal masks have equal counts.
    counts = encode_rle(mask)["counts"]
    return {
        "rle": counts,
        "area": area,
        "bbox": [x0, y0, int(xs.max()) - x0, int(ys.max()) - y0],
    }


def mask_dict(row: MaskRow, image: ImageRow | None = None, *, height: int = 0, width: int = 0):
    if image is not None:
        height, width = image.height, image.width
    return {
        "id": row.id,
        "image_id": row.image_id,
        "rle": {"size": [height, width], "counts": row.rle},
        "bbox": list(row.bbox),
        "area": row.area,
        "label": row.label,
        "author": row.author,
        "origin": row.origin,
        "prompts": row.prompts or {},
        "model_version": row.model_version,
        "predicted_iou": row.predicted_iou,
        "seconds": row.seconds,
        "version": row.version,
    }


class Annotations:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    # ----- images -------------------------------------------------------------------------
    def add_image(self, path: str, info: ImageInfo) -> tuple[ImageRow, bool]:
        """Register an image file (relative path); returns (row, created)."""
        with self.sessions.begin() as s:
            row = s.scalar(select(ImageRow).where(ImageRow.path == path))
            if row is not None:
                return row, False
            row = ImageRow(path=path, width=info.width, height=info.height, sha256=info.sha256)
            s.add(row)
            s.flush()
            return row, True

    def image(self, image_id: int) -> ImageRow:
        with self.sessions() as s:
            row = s.get(ImageRow, image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        return row

    def images(self) -> tuple[list[tuple[ImageRow, int]], dict[str, int]]:
        with self.sessions() as s:
            counts = dict(
                s.execute(select(MaskRow.image_id, func.count()).group_by(MaskRow.image_id)).all()
            )
            rows = list(s.scalars(select(ImageRow).order_by(ImageRow.id)))
        tally = {"todo": 0, "annotated": 0, "skipped": 0}
        for r in rows:
            tally[r.status] = tally.get(r.status, 0) + 1
        return [(r, int(counts.get(r.id, 0))) for r in rows], tally

    def set_status(self, image_id: int, status: str) -> ImageRow:
        with self.sessions.begin() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                raise NotFound(f"no image with id {image_id}")
            row.status = status
            return row

    # ----- masks --------------------------------------------------------------------------
    def masks(self, image_id: int) -> list[dict[str, Any]]:
        image = self.image(image_id)
        with self.sessions() as s:
            rows = s.scalars(select(MaskRow).where(MaskRow.image_id == image_id).order_by("id"))
            return [mask_dict(r, image) for r in rows]

    def mask(self, mask_id: int) -> dict[str, Any]:
        with self.sessions() as s:
            row = s.get(MaskRow, mask_id)
            if row is None:
                raise NotFound(f"no mask with id {mask_id}")
            image = s.get(ImageRow, row.image_id)
            return mask_dict(row, image)

    def add_mask(self, image_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        with self.sessions.begin() as s:
            image = s.get(ImageRow, image_id)
            if image is None:
                raise NotFound(f"no image with id {image_id}")
            rle = fields.pop("rle")
            row = MaskRow(image_id=image_id, **mask_fields(rle, image), **fields)
            s.add(row)
            s.flush()
            return mask_dict(row, image)

    def update_mask(self, mask_id: int, version: int, changes: dict[str, Any]) -> dict[str, Any]:
        current = self.mask(mask_id)
        values = {k: v for k, v in changes.items() if v is not None}
        if "rle" in values:
            with self.sessions() as s:
                image = s.get(ImageRow, current["image_id"])
            assert image is not None  # the mask row references it (foreign key)
            values.update(mask_fields(values.pop("rle"), image))
        values["version"] = version + 1
        values["updated_at"] = now()
        with self.sessions.begin() as s:
            done = s.execute(
                update(MaskRow)
                .where(MaskRow.id == mask_id, MaskRow.version == version)
                .values(**values)
            ).rowcount
        if not done:
            raise Conflict(self._stale(mask_id, version), self._current(mask_id))
        return self.mask(mask_id)

    def delete_mask(self, mask_id: int, version: int) -> None:
        self.mask(mask_id)  # 404 first
        with self.sessions.begin() as s:
            done = s.execute(
                delete(MaskRow).where(MaskRow.id == mask_id, MaskRow.version == version)
            ).rowcount
        if not done:
            raise Conflict(self._stale(mask_id, version), self._current(mask_id))

    def _current(self, mask_id: int) -> dict[str, Any] | None:
        try:
            return self.mask(mask_id)
        except NotFound:
            return None

    def _stale(self, mask_id: int, version: int) -> str:
        return (
            f"mask {mask_id} changed since version {version} was read (or was deleted); "
            "reload it and apply your edit to the current state"
        )
