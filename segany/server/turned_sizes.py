"""Images a project recorded before EXIF orientation was read at import: set to their turned
size, once.

Until 7ef6993 the app recorded a photo turned by its EXIF orientation (a phone's portrait
photo: orientation 6 or 8) at its stored size, while its embedding, its masks and the browser
turn it, so its masks did not fit the page or the exports. When a project opens, each image's
header is read once (a marker file in the project says it was done) and an image recorded
unturned gets its turned size, if it has no masks yet. One with masks keeps its size, and the
log names it: its masks were drawn on the wrong size (their counts cannot tell which), so it
is for a person to look at (delete them and annotate it again). Large images are left as they
are (they are read by region, as stored).
"""

from __future__ import annotations

import logging
from typing import Any

from PIL import Image, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from segany.errors import InputError
from segany.images import oriented_size
from segany.server.db import ImageRow, MaskRow

MARKER = ".turned-sizes-checked"
log = logging.getLogger("segany.server")


def fix_turned_sizes(project: Any, sessions: sessionmaker) -> list[str]:
    """Set the turned size of the project's images recorded unturned (see the module's
    notes); returns their paths. Done once per project (``MARKER``)."""
    marker = project.root / MARKER
    if marker.exists():
        return []
    fixed: list[str] = []
    with sessions.begin() as s:
        rows = list(s.scalars(select(ImageRow)))
        masked = set(s.scalars(select(MaskRow.image_id).group_by(MaskRow.image_id)))
        for row in rows:
            if project.large.is_large(row):
                continue
            try:
                with Image.open(project.inside(row.path)) as im:
                    width, height = oriented_size(im)
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError, InputError):
                continue  # (a missing or broken file: the app says so where it is read)
            if (width, height) == (row.width, row.height) or (height, width) != (
                row.width,
                row.height,
            ):
                continue
            if row.id in masked:
                log.warning(
                    "%s is a photo turned by its EXIF orientation, recorded at %d×%d instead "
                    "of %d×%d before this was read at import; its masks keep that size: "
                    "delete them and annotate it again",
                    row.path,
                    row.width,
                    row.height,
                    width,
                    height,
                )
                continue
            row.width, row.height = width, height
            fixed.append(row.path)
    if fixed:
        log.info("set the EXIF-turned size of %d images: %s", len(fixed), ", ".join(fixed[:5]))
    marker.touch()
    return fixed
