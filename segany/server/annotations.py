"""Images and masks in the database: the operations behind the API, free of HTTP.

Masks are checked here (RLE size must be the image's; area and box come from the mask, never
from the client). Updates and deletes are conditional on the version the client read: a stale
one raises ``Conflict`` carrying the current row. Review states and what they mean are in
``segany.server.db``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import sessionmaker

from segany.errors import InputError
from segany.masks import decode_rle
from segany.server.classes import resolve
from segany.server.db import EXPORTED, ImageRow, MaskRow, now
from segany.server.project import Conflict, ImageInfo, NotFound
from segany.server.proposals import novel


def mask_fields(rle: dict[str, Any], image: ImageRow) -> dict[str, Any]:
    """rle/area/bbox columns from a client RLE, checked against the image size. Read by its
    runs (``segany.rle_windows``), never decoded: a large image's mask is gigapixels."""
    from segany.masks import rle_from_runs
    from segany.rle_windows import rle_box_area, rle_runs

    size = [int(v) for v in rle["size"]]
    if size != [image.height, image.width]:
        raise InputError(
            f"the mask is {size[0]}×{size[1]} but image {image.id} is {image.height}×{image.width}"
        )
    try:
        start, end = rle_runs({"size": size, "counts": rle["counts"]})
    except InputError as e:
        raise InputError(f"the mask's RLE counts do not decode ({e})") from None
    if len(start) == 0:
        raise InputError("the mask is empty")
    # Normalise to our own encoding, so equal masks have equal counts.
    canonical = rle_from_runs(start, end, size)
    (x0, y0, w, h), area = rle_box_area(canonical, trusted=True)  # (checked: rle_runs)
    return {"rle": canonical["counts"], "area": area, "bbox": [x0, y0, w - 1, h - 1]}


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
        "class_id": row.class_id,
        "author": row.author,
        "origin": row.origin,
        "prompts": row.prompts or {},
        "model_version": row.model_version,
        "predicted_iou": row.predicted_iou,
        "seconds": row.seconds,
        "version": row.version,
        "review": row.review,
        "reviewer": row.reviewer,
        "review_note": row.review_note or "",
        "editor": row.editor,
        "edits": row.edits,
        "relabels": row.relabels,
    }


def _tally(by_state: dict[str, int]) -> dict[str, int]:
    """An image's counts: masks (what exports hold), proposals, unreviewed, rejected."""
    return {
        "masks": sum(by_state.get(k, 0) for k in EXPORTED),
        "proposals": by_state.get("proposed", 0),
        "unreviewed": by_state.get("unreviewed", 0),
        "rejected": by_state.get("rejected", 0),
    }


def is_reviewed(tally: dict[str, int]) -> bool:
    """An image is reviewed when it has masks or rejected proposals, and none is waiting for a
    decision (no proposal, no unreviewed mask)."""
    decided = tally["masks"] - tally["unreviewed"] + tally["rejected"]
    return decided > 0 and tally["proposals"] == 0 and tally["unreviewed"] == 0


class _StaleVersion(Exception):
    """Raised inside a transaction to roll it back when a mask's version moved on."""


class Annotations:
    """``events``: told of every change (``segany.server.events.Events``; None: nobody)."""

    def __init__(self, sessions: sessionmaker, events: Any = None) -> None:
        self.sessions = sessions
        self.events = events

    def _tell(self, kind: str, **data: Any) -> None:
        if self.events is not None:
            self.events.publish(kind, **data)

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
        self._tell("image", image_id=row.id, action="added")
        return row, True

    def image(self, image_id: int) -> ImageRow:
        with self.sessions() as s:
            row = s.get(ImageRow, image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        return row

    def tally(self, image_id: int) -> dict[str, int]:
        """One image's counts (``_tally``)."""
        with self.sessions() as s:
            rows = s.execute(
                select(MaskRow.review, func.count())
                .where(MaskRow.image_id == image_id)
                .group_by(MaskRow.review)
            )
            return _tally({str(review): int(count) for review, count in rows})

    def images(self) -> tuple[list[tuple[ImageRow, dict[str, int]]], dict[str, int]]:
        """Every image with its counts (``_tally``), and the project's: images to do,
        annotated, skipped and reviewed."""
        with self.sessions() as s:
            per: dict[int, dict[str, int]] = {}
            query = select(MaskRow.image_id, MaskRow.review, func.count()).group_by(
                MaskRow.image_id, MaskRow.review
            )
            for image_id, review, count in s.execute(query):
                per.setdefault(image_id, {})[review] = int(count)
            rows = list(s.scalars(select(ImageRow).order_by(ImageRow.id)))
        out = [(r, _tally(per.get(r.id, {}))) for r in rows]
        counts = {"todo": 0, "annotated": 0, "skipped": 0, "reviewed": 0}
        for r, t in out:
            counts[r.status] = counts.get(r.status, 0) + 1
            counts["reviewed"] += is_reviewed(t)
        return out, counts

    def set_status(self, image_id: int, status: str) -> ImageRow:
        with self.sessions.begin() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                raise NotFound(f"no image with id {image_id}")
            row.status = status
        self._tell("image", image_id=image_id, action=status)
        return row

    def assign(self, image_id: int, user_id: int | None) -> ImageRow:
        """Assign an image to a user (None: to nobody)."""
        with self.sessions.begin() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                raise NotFound(f"no image with id {image_id}")
            row.assignee_id = user_id
        self._tell("image", image_id=image_id, action="assigned")
        return row

    # ----- masks --------------------------------------------------------------------------
    def masks(self, image_id: int, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The image's masks in id order (``states``: only those review states)."""
        image = self.image(image_id)
        query = select(MaskRow).where(MaskRow.image_id == image_id).order_by(MaskRow.id)
        if states is not None:
            query = query.where(MaskRow.review.in_(states))
        with self.sessions() as s:
            return [mask_dict(r, image) for r in s.scalars(query)]

    def mask(self, mask_id: int) -> dict[str, Any]:
        with self.sessions() as s:
            row = s.get(MaskRow, mask_id)
            if row is None:
                raise NotFound(f"no mask with id {mask_id}")
            image = s.get(ImageRow, row.image_id)
            return mask_dict(row, image)

    def add_mask(self, image_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a mask: ``fields`` as ``MaskIn`` has them (its class by ``class_id`` or by
        ``label``, see ``segany.server.classes.resolve``)."""
        fields = dict(fields)
        with self.sessions.begin() as s:
            image = s.get(ImageRow, image_id)
            if image is None:
                raise NotFound(f"no image with id {image_id}")
            rle = fields.pop("rle")
            named = fields.pop("class_id", None), fields.pop("label", None)
            class_id, label, made = resolve(s, *named)
            row = MaskRow(
                image_id=image_id,
                class_id=class_id,
                label=label,
                **mask_fields(rle, image),
                **fields,
            )
            s.add(row)
            s.flush()
            out = mask_dict(row, image)
        if made:
            self._tell("classes", class_id=class_id, action="added")
        self._tell("mask", image_id=image_id, mask_id=out["id"], action="added")
        return out

    def novel(
        self, image_id: int, candidates: list[np.ndarray], window: Sequence[int] | None = None
    ) -> list[bool]:
        """Which candidate masks (H×W bool; h×w of ``window``, x0, y0, x1, y1, when given)
        are not duplicates of the image's stored masks (``segany.server.proposals``: every
        review state counts; with a window, their parts inside it)."""
        from segany.rle_windows import crop_rle
        from segany.server.windows import meets

        masks = self.masks(image_id)
        if window is None:
            existing = [decode_rle(m["rle"], trusted=True) for m in masks]
        else:  # (a mask whose box misses the window has no part in it)
            existing = [
                decode_rle(crop_rle(m["rle"], window), trusted=True)
                for m in masks
                if meets(m["bbox"], window)
            ]
        return novel(candidates, existing)

    def update_mask(self, mask_id: int, version: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` (``MaskPatch``'s fields; None: unchanged) if the mask is still at
        ``version``. The origin stays; a new shape counts as an edit, a new class as a relabel
        (``editor``: who made them); a review state needs its ``reviewer`` (``note``: theirs,
        kept as ``review_note`` until the next decision). A rejected mask that is edited or
        relabelled without a decision is unreviewed again: back in the reviewer's queue."""
        current = self.mask(mask_id)
        if current["version"] != version:
            raise Conflict(self._stale(mask_id, version), current)
        values = {k: v for k, v in changes.items() if v is not None}
        editor = values.pop("editor", None)
        changed = False
        if "rle" in values:
            with self.sessions() as s:
                image = s.get(ImageRow, current["image_id"])
            assert image is not None  # the mask row references it (foreign key)
            shape = mask_fields(values.pop("rle"), image)
            if shape["rle"] != current["rle"]["counts"]:
                values.update(shape, edits=current["edits"] + 1)
                changed = True
        named = None
        if "class_id" in values or "label" in values:
            named = values.pop("class_id", None), values.pop("label", None)
        if "review" in values:
            reviewer = str(values.get("reviewer") or "").strip()
            if not reviewer:
                raise InputError("a review needs the reviewer's name (reviewer)")
            # a decision replaces the last one's note (none given: no note)
            values.update(reviewer=reviewer, reviewed_at=now(), review_note=values.get("note", ""))
        elif "reviewer" in values or "note" in values:
            raise InputError("reviewer and note are given with a review state (review)")
        values.pop("note", None)
        values["version"] = version + 1
        values["updated_at"] = now()
        made, class_id = False, None
        try:
            # One transaction: a class the edit names is made with the edit or not at all (a
            # database lost in between, or a stale version, leaves no class behind).
            with self.sessions.begin() as s:
                if named is not None:
                    class_id, label, made = resolve(s, *named)
                    if class_id != current["class_id"] or label != current["label"]:
                        values.update(
                            class_id=class_id, label=label, relabels=current["relabels"] + 1
                        )
                        changed = True
                if changed and editor is not None:
                    values["editor"] = editor
                if changed and "review" not in values and current["review"] == "rejected":
                    values["review"] = "unreviewed"  # fixed after a rejection: decided again
                done = s.execute(
                    update(MaskRow)
                    .where(MaskRow.id == mask_id, MaskRow.version == version)
                    .values(**values)
                ).rowcount
                if not done:
                    raise _StaleVersion
        except _StaleVersion:
            raise Conflict(self._stale(mask_id, version), self._current(mask_id)) from None
        if made:
            self._tell("classes", class_id=class_id, action="added")
        action = values.get("review") or "edited"
        self._tell("mask", image_id=current["image_id"], mask_id=mask_id, action=action)
        return self.mask(mask_id)

    def delete_mask(self, mask_id: int, version: int) -> None:
        image_id = self.mask(mask_id)["image_id"]  # 404 first
        with self.sessions.begin() as s:
            done = s.execute(
                delete(MaskRow).where(MaskRow.id == mask_id, MaskRow.version == version)
            ).rowcount
        if not done:
            raise Conflict(self._stale(mask_id, version), self._current(mask_id))
        self._tell("mask", image_id=image_id, mask_id=mask_id, action="deleted")

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
