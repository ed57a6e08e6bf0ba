"""The annotation database: SQLAlchemy tables (the newest schema) and how a database is opened.

Any SQLAlchemy URL works (SQLite in the project folder by default, PostgreSQL for a team).
The schema steps live in ``segany.server.migrations`` (``MIGRATIONS``), each frozen as it was
written; ``open_database`` applies the ones a database has not seen, so opening an old project
upgrades it and opening a current one changes nothing. A change to a table here needs a new
step there.

Masks: ``origin`` is how a mask was first made and never changes; later changes are counted
apart (``edits``: its shape, ``relabels``: its class; ``editor``: who made the last one).
``review`` is ``proposed`` (a model's proposal, not yet a mask: left out of exports),
``unreviewed``, ``accepted`` or ``rejected`` (kept, so the same proposal is not made again,
and left out of exports), with the ``reviewer`` who decided.

Masks carry a ``version`` for optimistic concurrency: an update names the version it read and
succeeds only if the row still has it (one conditional UPDATE, so two servers on the same
database cannot both win).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from segany.server import migrations
from segany.server.migrations import MIGRATIONS, PALETTE, now

IMAGE_STATUSES = ("todo", "annotated", "skipped")
# "accepted" and "edited" were origins before edits were recorded apart; old rows keep them.
MASK_ORIGINS = ("clicks", "box", "brush", "prefill", "imported", "accepted", "edited")
REVIEW_STATES = ("proposed", "unreviewed", "accepted", "rejected")
#: Review states of the masks an export holds (proposals and rejected masks are not masks).
EXPORTED = ("unreviewed", "accepted")


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    """A model the project has used: version 0 is the one it started with."""

    __tablename__ = "model_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(Text)  # what load_model was given (name or path)
    parent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    note: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # When it was last made current (switch, roll back, retraining); None: never chosen.
    active_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class ImageRow(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(512), unique=True)  # POSIX, relative to project
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="todo")
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )


class UserRow(Base):
    """A member of the team (``segany.server.users``): a name, a role, a password hash."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # annotator, reviewer, admin
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class LoginSession(Base):
    """A sign-in: the SHA-256 of the cookie's token, whose it is, until when."""

    __tablename__ = "login_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ClassRow(Base):
    """A class of the project's label set; masks name it by id and carry its name as label."""

    __tablename__ = "classes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    color: Mapped[str] = mapped_column(String(7))  # #rrggbb
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class MaskRow(Base):
    __tablename__ = "masks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    rle: Mapped[str] = mapped_column(Text)  # COCO compressed counts; size is the image's
    bbox: Mapped[list[int]] = mapped_column(JSON)  # XYWH pixels
    area: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(256), default="")
    author: Mapped[str] = mapped_column(String(128), default="")
    origin: Mapped[str] = mapped_column(String(16))
    prompts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    predicted_iou: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    class_id: Mapped[int | None] = mapped_column(
        ForeignKey("classes.id", ondelete="SET NULL"), nullable=True
    )
    review: Mapped[str] = mapped_column(String(16), default="unreviewed")
    reviewer: Mapped[str] = mapped_column(String(128), default="")
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    review_note: Mapped[str] = mapped_column(Text, default="")  # the reviewer's, with review
    editor: Mapped[str] = mapped_column(String(128), default="")
    edits: Mapped[int] = mapped_column(Integer, default=0)
    relabels: Mapped[int] = mapped_column(Integer, default=0)


class TrainJob(Base):
    __tablename__ = "train_jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # running/done/failed
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer)
    base_version: Mapped[int] = mapped_column(Integer)
    result_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


def current_version(versions: list[ModelVersion]) -> int:
    """The version made current last (``active_at``), else the newest."""
    chosen = [v for v in versions if v.active_at is not None]
    if chosen:
        return max(chosen, key=lambda v: v.active_at).version  # type: ignore[arg-type,return-value]
    return max(v.version for v in versions)


def schema_version(engine: Engine) -> int:
    """The newest migration applied to the database (0 for an empty one)."""
    return migrations.schema_version(engine)


def migrate(engine: Engine) -> list[int]:
    """Apply the migrations the database lacks (``segany.server.migrations``); return them."""
    return migrations.migrate(engine)


def open_database(url: str, timeout: float = 30.0) -> tuple[Engine, sessionmaker]:
    """An engine (migrated to the current schema) and its session factory.

    ``timeout``: seconds a write waits for SQLite's lock, or a connection for PostgreSQL,
    before the request fails (``database_unavailable``: HTTP 503). Pooled PostgreSQL
    connections are checked before use, so after a database restart the next request gets a
    fresh connection instead of the dead one."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Request handlers run in a thread pool; SQLite needs this to share connections.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": timeout}
    else:
        kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": max(1, round(timeout))}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


#: SQLite's OperationalErrors that are the request's or the schema's fault, not the database
#: being away.
_NOT_AWAY = ("no such table", "no such column", "syntax error", "has no column")


def database_unavailable(error: BaseException | None) -> bool:
    """Whether ``error`` (or what it wraps) says the database cannot be reached or used now:
    a lost or refused connection, a server shutting down or starting up, a lock held past the
    timeout, a pool with no connection to give. Such a request saved nothing: its transaction
    never committed."""
    from sqlalchemy import exc

    while error is not None:
        if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, (exc.TimeoutError, exc.DisconnectionError)):
            return True
        if isinstance(error, (exc.OperationalError, exc.InterfaceError)):
            return not any(m in str(error) for m in _NOT_AWAY)
        error = error.__cause__
    return False


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA synchronous=FULL")  # an accepted mask survives a power cut
    cur.close()


SCHEMA_VERSION = MIGRATIONS[-1][0]
__all__ = [
    "EXPORTED",
    "IMAGE_STATUSES",
    "MASK_ORIGINS",
    "MIGRATIONS",
    "PALETTE",
    "REVIEW_STATES",
    "SCHEMA_VERSION",
    "Base",
    "ClassRow",
    "ImageRow",
    "LoginSession",
    "MaskRow",
    "ModelVersion",
    "TrainJob",
    "UserRow",
    "current_version",
    "database_unavailable",
    "migrate",
    "now",
    "open_database",
    "schema_version",
]
