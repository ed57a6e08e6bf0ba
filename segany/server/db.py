"""The annotation database: SQLAlchemy tables and versioned migrations kept in code.

Any SQLAlchemy URL works (SQLite in the project folder by default, PostgreSQL for a team).
``MIGRATIONS`` lists schema steps in order; ``migrate`` applies the ones a database has not
seen yet and records each in ``schema_migrations``, so opening an old project upgrades it and
opening a current one changes nothing. A new step is appended, never edited.

Masks carry a ``version`` for optimistic concurrency: an update names the version it read and
succeeds only if the row still has it (one conditional UPDATE, so two servers on the same
database cannot both win).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
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
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

IMAGE_STATUSES = ("todo", "annotated", "skipped")
MASK_ORIGINS = ("clicks", "box", "brush", "prefill", "accepted", "edited")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


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


class ImageRow(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(512), unique=True)  # POSIX, relative to project
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="todo")
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


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


# ----- migrations -----------------------------------------------------------------------------
def _v1_initial(conn: Connection) -> None:
    tables = [Base.metadata.tables[n] for n in ("model_versions", "images", "masks")]
    Base.metadata.create_all(conn, tables=tables)


def _v2_train_jobs(conn: Connection) -> None:
    Base.metadata.create_all(conn, tables=[Base.metadata.tables["train_jobs"]])


#: (version, description, step). Append only.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "images, masks, model versions", _v1_initial),
    (2, "retraining jobs", _v2_train_jobs),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(engine: Engine) -> int:
    """The newest migration applied to the database (0 for an empty one)."""
    if not inspect(engine).has_table("schema_migrations"):
        return 0
    with engine.connect() as conn:
        value = conn.execute(text("SELECT MAX(version) FROM schema_migrations")).scalar()
    return int(value or 0)


def migrate(engine: Engine) -> list[int]:
    """Apply the migrations the database lacks, each in its own transaction; return them."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
        )
    done = schema_version(engine)
    applied = []
    for version, description, step in MIGRATIONS:
        if version <= done:
            continue
        with engine.begin() as conn:
            step(conn)
            conn.execute(
                text("INSERT INTO schema_migrations VALUES (:v, :d, :t)"),
                {"v": version, "d": description, "t": now()},
            )
        applied.append(version)
    return applied


def open_database(url: str) -> tuple[Engine, sessionmaker]:
    """An engine (migrated to the current schema) and its session factory."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Request handlers run in a thread pool; SQLite needs this to share connections.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA synchronous=FULL")  # an accepted mask survives a power cut
    cur.close()
