"""The data engine's figures, per stage and model version, from the project's masks.

The paper reports them for its own engine (seconds per mask falling from 34 s to 14 s and masks
per image rising from 20 to 44 over the assisted-manual stage; how much of the semi-automatic
stage the model's masks carry); the app records what they are made of:

- assisted-manual: masks a person made (origin clicks, box, brush, or clicks and brush
  together: ``edited``, as older projects also called their edits; ``accepted`` likewise);
  per tool, masks per image, seconds per mask;
- semi-automatic: the model's proposals (origin ``prefill``): kept (accepted unchanged), edited
  (accepted with a new shape), rejected, waiting; relabelled ones are counted apart, since a
  new class is not a new shape;
- imported: masks that came from a COCO file.

Per model version (the version that made each mask), and per person (``users``: masks they
made by hand, their images and seconds per mask, masks whose last edit was theirs, proposals
they asked for, their review decisions), by the names masks carry: the signed-in users of a
team project, the names typed in the page otherwise. ``seconds per mask`` is the mean of the
seconds the page recorded, over the masks that have any (imports and proposals have none).
``share_from_model`` is the part of a version's masks (proposals waiting and rejected ones are
not masks) that came from the model's proposals.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from segany.server.db import EXPORTED, MaskRow

MANUAL = ("clicks", "box", "brush", "edited", "accepted")


def _stage(origin: str) -> str:
    if origin == "prefill":
        return "semi-automatic"
    if origin == "imported":
        return "imported"
    return "assisted-manual"


def figures(sessions: sessionmaker) -> dict[str, Any]:
    """``{"versions": [{"model_version", "stages": {...}, ...}], "total": {...}}``."""
    query = select(
        MaskRow.image_id,
        MaskRow.origin,
        MaskRow.review,
        MaskRow.edits,
        MaskRow.relabels,
        MaskRow.seconds,
        MaskRow.model_version,
        MaskRow.author,
        MaskRow.editor,
        MaskRow.reviewer,
    )
    with sessions() as s:
        rows = list(s.execute(query))
    by_version: dict[int | None, list[Any]] = defaultdict(list)
    for row in rows:
        by_version[row.model_version].append(row)
    versions = [
        {"model_version": v, **_summary(by_version[v])}
        for v in sorted(by_version, key=lambda v: (v is None, v or 0))
    ]
    return {"versions": versions, "total": _summary(rows), "users": _by_user(rows)}


def _by_user(rows: list[Any]) -> dict[str, dict[str, Any]]:
    names = {n for r in rows for n in (r.author, r.editor, r.reviewer) if n}
    out = {}
    for name in sorted(names):
        made = [r for r in rows if r.author == name and r.origin in MANUAL and r.review in EXPORTED]
        timed = [r.seconds for r in made if r.seconds > 0]
        out[name] = {
            "masks": len(made),
            "images": len({r.image_id for r in made}),
            "seconds_per_mask": sum(timed) / len(timed) if timed else None,
            "edited": sum(r.editor == name for r in rows),
            "proposals_asked": sum(r.author == name and r.origin == "prefill" for r in rows),
            "accepted": sum(r.reviewer == name and r.review == "accepted" for r in rows),
            "rejected": sum(r.reviewer == name and r.review == "rejected" for r in rows),
        }
    return out


def _summary(rows: list[Any]) -> dict[str, Any]:
    stages: dict[str, dict[str, Any]] = {}
    for name in ("assisted-manual", "semi-automatic", "imported"):
        mine = [r for r in rows if _stage(r.origin) == name]
        masks = [r for r in mine if r.review in EXPORTED]
        timed = [r.seconds for r in masks if r.seconds > 0]
        images = {r.image_id for r in masks}
        entry: dict[str, Any] = {
            "masks": len(masks),
            "images": len(images),
            "masks_per_image": len(masks) / len(images) if images else 0.0,
            "seconds_per_mask": sum(timed) / len(timed) if timed else None,
        }
        if name == "assisted-manual":
            entry["by_tool"] = {o: sum(r.origin == o for r in masks) for o in MANUAL}
        if name == "semi-automatic":
            accepted = [r for r in mine if r.review == "accepted"]
            entry.update(
                proposed=len(mine),
                kept=sum(r.edits == 0 for r in accepted),
                edited=sum(r.edits > 0 for r in accepted),
                rejected=sum(r.review == "rejected" for r in mine),
                waiting=sum(r.review == "proposed" for r in mine),
                relabelled=sum(r.relabels > 0 for r in accepted),
            )
        stages[name] = entry
    masks = [r for r in rows if r.review in EXPORTED]
    from_model = sum(r.origin == "prefill" for r in masks)
    images = {r.image_id for r in masks}
    return {
        "stages": stages,
        "masks": len(masks),
        "masks_per_image": len(masks) / len(images) if images else 0.0,
        "share_from_model": from_model / len(masks) if masks else 0.0,
    }
