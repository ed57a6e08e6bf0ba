"""How the API shows a database row: shared by the routes' modules."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from segany.server import schemas
from segany.server.state import state_of


def image_out(
    row: Any,
    tally: dict[str, int],
    warning: str | None = None,
    names: dict[int, str] | None = None,
    request: Request | None = None,
) -> schemas.ImageOut:
    """``names``: users' names by id (else read through ``request`` when the image has an
    assignee)."""
    from segany.server.annotations import is_reviewed

    assignee = None
    if row.assignee_id is not None:
        if names is None and request is not None:
            names = state_of(request).users.names()
        assignee = (names or {}).get(row.assignee_id)
    return schemas.ImageOut(
        id=row.id,
        path=row.path,
        width=row.width,
        height=row.height,
        status=row.status,
        **tally,
        reviewed=is_reviewed(tally),
        url=f"/api/images/{row.id}/file",
        warning=warning,
        assignee_id=row.assignee_id,
        assignee=assignee,
    )
