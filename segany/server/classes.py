"""The project's label set: classes with a name and a colour, from a file or the page.

A mask names its class by id and carries the class's name as its ``label`` (what the SA-1B
and COCO files have always held); renaming a class renames its masks' labels in the same
transaction. Category ids in every export are the class ids, so they stay the same from one
export to the next. Names are trimmed, 1 to 256 characters, unique ignoring case; colours are
``#rrggbb`` (a new class without one gets the next colour of ``PALETTE``).

A classes file (``segany serve --classes FILE``) is JSON, a list of names or of
``{"name": ..., "color": ...}`` objects, or text with one class per line: a name, optionally
followed by a ``#rrggbb`` colour; blank lines are skipped. Classes already in the project keep
their ids (a colour in the file replaces theirs); none are removed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from segany.errors import InputError
from segany.server.db import PALETTE, ClassRow, MaskRow
from segany.server.project import Conflict, NotFound

COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_NAME = 256


@dataclass(frozen=True)
class ClassSpec:
    name: str
    color: str | None = None


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"a class needs a name (1 to {MAX_NAME} characters), got {name!r}")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise InputError(f"a class name has at most {MAX_NAME} characters, got {len(name)}")
    return name


def check_color(color: Any) -> str:
    if not isinstance(color, str) or not COLOR.match(color):
        raise InputError(f"a class colour is #rrggbb (six hex digits), got {color!r}")
    return color.lower()


def class_dict(row: ClassRow, masks: int = 0) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "color": row.color, "masks": masks}


def read_classes_file(path: str | Path) -> list[ClassSpec]:
    """The classes of a file (the module's layouts), or an ``InputError`` saying what is wrong."""
    path = Path(path)
    try:
        data = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the classes file ({e})") from None
    specs: list[ClassSpec] = []
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(data)
        except ValueError as e:
            raise InputError(f"{path}: not JSON ({e})") from None
        if not isinstance(items, list):
            raise InputError(f"{path}: a JSON classes file is a list of names or objects")
        for i, item in enumerate(items):
            if isinstance(item, str):
                specs.append(ClassSpec(check_name(item)))
            elif isinstance(item, dict) and set(item) <= {"name", "color"} and "name" in item:
                color = item.get("color")
                color = None if color is None else check_color(color)
                specs.append(ClassSpec(check_name(item["name"]), color))
            else:
                raise InputError(
                    f"{path}: class {i} must be a name or {{'name': ..., 'color': '#rrggbb'}}, "
                    f"got {item!r:.80}"
                )
    else:
        for n, line in enumerate(data.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            head, _, last = line.rpartition(" ")
            try:
                if head.strip() and COLOR.match(last):
                    specs.append(ClassSpec(check_name(head), check_color(last)))
                else:
                    specs.append(ClassSpec(check_name(line)))
            except InputError as e:
                raise InputError(f"{path}, line {n}: {e}") from None
    seen: set[str] = set()
    for spec in specs:
        if spec.name.lower() in seen:
            raise InputError(f"{path}: the class {spec.name!r} is listed twice")
        seen.add(spec.name.lower())
    return specs


class Classes:
    """``events``: told of every change (``segany.server.events.Events``; None: nobody)."""

    def __init__(self, sessions: sessionmaker, events: Any = None) -> None:
        self.sessions = sessions
        self.events = events

    def _tell(self, action: str, class_id: int) -> None:
        if self.events is not None:
            self.events.publish("classes", class_id=class_id, action=action)

    def all(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            query = (
                select(MaskRow.class_id, func.count())
                .where(MaskRow.class_id.is_not(None))
                .group_by(MaskRow.class_id)
            )
            counts = {int(c): int(n) for c, n in s.execute(query)}
            rows = list(s.scalars(select(ClassRow).order_by(ClassRow.id)))
        return [class_dict(r, int(counts.get(r.id, 0))) for r in rows]

    def get(self, class_id: int) -> dict[str, Any]:
        with self.sessions() as s:
            row = s.get(ClassRow, class_id)
            if row is None:
                raise NotFound(f"no class with id {class_id}")
            return class_dict(row)

    def add(self, name: str, color: str | None = None) -> dict[str, Any]:
        name = check_name(name)
        with self.sessions.begin() as s:
            if _by_name(s, name) is not None:
                raise Conflict(f"a class named {name!r} exists already", self.all())
            row = _new(s, name, None if color is None else check_color(color))
            out = class_dict(row)
        self._tell("added", out["id"])
        return out

    def update(self, class_id: int, name: str | None, color: str | None) -> dict[str, Any]:
        """Rename and/or recolour a class; a rename renames its masks' labels too."""
        with self.sessions.begin() as s:
            row = s.get(ClassRow, class_id)
            if row is None:
                raise NotFound(f"no class with id {class_id}")
            if name is not None:
                name = check_name(name)
                other = _by_name(s, name)
                if other is not None and other.id != class_id:
                    raise Conflict(f"a class named {name!r} exists already", class_dict(other))
                row.name = name
                s.execute(update(MaskRow).where(MaskRow.class_id == class_id).values(label=name))
            if color is not None:
                row.color = check_color(color)
            s.flush()
            out = class_dict(row)
        self._tell("changed", class_id)
        return out

    def delete(self, class_id: int) -> int:
        """Remove a class; its masks become unlabelled (returns how many)."""
        with self.sessions.begin() as s:
            row = s.get(ClassRow, class_id)
            if row is None:
                raise NotFound(f"no class with id {class_id}")
            count = s.execute(
                update(MaskRow).where(MaskRow.class_id == class_id).values(class_id=None, label="")
            ).rowcount
            s.delete(row)
        self._tell("deleted", class_id)
        return int(count or 0)

    def merge(self, specs: list[ClassSpec]) -> tuple[int, int]:
        """Add the classes of a file (``read_classes_file``): (added, recoloured)."""
        added = recoloured = 0
        with self.sessions.begin() as s:
            for spec in specs:
                row = _by_name(s, spec.name)
                if row is None:
                    _new(s, spec.name, spec.color)
                    added += 1
                elif spec.color is not None and row.color != spec.color:
                    row.color = spec.color
                    recoloured += 1
        return added, recoloured


def resolve(s: Session, class_id: int | None, label: str | None) -> tuple[int | None, str, bool]:
    """(class id, label, whether the class was made now) of a mask given either (a label
    names a class, made if new); both must agree; neither or an empty label: unlabelled."""
    if class_id is not None:
        row = s.get(ClassRow, class_id)
        if row is None:
            raise InputError(f"no class with id {class_id}")
        if label is not None and label.strip() and label.strip().lower() != row.name.lower():
            raise InputError(
                f"label {label.strip()!r} is not the name of class {class_id} ({row.name!r})"
            )
        return row.id, row.name, False
    if label is None or not label.strip():
        return None, "", False
    name = check_name(label)
    row = _by_name(s, name)
    if row is not None:
        return row.id, row.name, False
    row = _new(s, name, None)
    return row.id, row.name, True


def _by_name(s: Session, name: str) -> ClassRow | None:
    # Compared in Python: SQLite's lower() folds ASCII only, so a non-ASCII name given twice
    # was not found and hit the unique constraint (a 500), and 'Å'/'å' were two classes there
    # but one on PostgreSQL. A label set is small.
    key = name.lower()
    return next((r for r in s.scalars(select(ClassRow)) if r.name.lower() == key), None)


def _new(s: Session, name: str, color: str | None) -> ClassRow:
    if color is None:
        count = int(s.scalar(select(func.count()).select_from(ClassRow)) or 0)
        color = PALETTE[count % len(PALETTE)]
    row = ClassRow(name=name, color=color)
    s.add(row)
    s.flush()
    return row
