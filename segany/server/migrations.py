"""The annotation database's schema steps, each frozen as it was written.

A step creates tables from its own copy of their definition (``_V1`` ...), never from the ORM
classes in ``segany.server.db``: those describe the newest schema, so a first step built from
them would create columns a later step adds again (and, on PostgreSQL, a foreign key to a
table that does not exist yet). ``migrate`` applies the steps a database has not seen, each in
its own transaction, and records each in ``schema_migrations``: an old project is upgraded
when opened, a current one is left alone. A new step is appended, never edited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# ----- step 1 and 2: the tables as they were first written -----------------------------------
_V1 = MetaData()
Table(
    "model_versions",
    _V1,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("source", Text, nullable=False),
    Column("parent", Integer, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("note", Text, nullable=False),
    Column("metrics", JSON, nullable=False),
)
Table(
    "images",
    _V1,
    Column("id", Integer, primary_key=True),
    Column("path", String(512), nullable=False, unique=True),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("added_at", DateTime, nullable=False),
)
Table(
    "masks",
    _V1,
    Column("id", Integer, primary_key=True),
    Column(
        "image_id",
        Integer,
        ForeignKey("images.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("rle", Text, nullable=False),
    Column("bbox", JSON, nullable=False),
    Column("area", Integer, nullable=False),
    Column("label", String(256), nullable=False),
    Column("author", String(128), nullable=False),
    Column("origin", String(16), nullable=False),
    Column("prompts", JSON, nullable=False),
    Column("model_version", Integer, nullable=True),
    Column("predicted_iou", Float, nullable=True),
    Column("seconds", Float, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)
_V2 = MetaData()
Table(
    "train_jobs",
    _V2,
    Column("id", Integer, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("base_version", Integer, nullable=False),
    Column("result_version", Integer, nullable=True),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=True),
)


def _v1_initial(conn: Connection) -> None:
    _V1.create_all(conn)


def _v2_train_jobs(conn: Connection) -> None:
    _V2.create_all(conn)


# ----- step 3: the label set, review, edits kept apart from the origin ------------------------
_V3 = MetaData()
_classes_v3 = Table(
    "classes",
    _V3,
    Column("id", Integer, primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("color", String(7), nullable=False),
    Column("created_at", DateTime, nullable=False),
)
#: Colours given to classes made from an old project's labels (and to new classes without one).
PALETTE = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
)  # fmt: skip

_V3_MASK_COLUMNS = (
    "class_id INTEGER REFERENCES classes(id) ON DELETE SET NULL",
    "review VARCHAR(16) NOT NULL DEFAULT 'unreviewed'",
    "reviewer VARCHAR(128) NOT NULL DEFAULT ''",
    "reviewed_at TIMESTAMP",
    "editor VARCHAR(128) NOT NULL DEFAULT ''",
    "edits INTEGER NOT NULL DEFAULT 0",
    "relabels INTEGER NOT NULL DEFAULT 0",
)


def _v3_classes_review(conn: Connection) -> None:
    """Classes (one per distinct label an old project used, in name order), and per mask its
    class, review state, reviewer, last editor and how often its shape and class changed."""
    _V3.create_all(conn)
    for column in _V3_MASK_COLUMNS:
        conn.execute(text(f"ALTER TABLE masks ADD COLUMN {column}"))
    labels = conn.execute(
        text("SELECT DISTINCT label FROM masks WHERE label IS NOT NULL AND label <> ''")
    ).scalars()
    names = sorted({str(v).strip() for v in labels if str(v).strip()})
    for n, name in enumerate(names):
        conn.execute(
            _classes_v3.insert().values(
                name=name, color=PALETTE[n % len(PALETTE)], created_at=now()
            )
        )
    rows = conn.execute(select(_classes_v3.c.name, _classes_v3.c.id))
    ids = {str(name): int(class_id) for name, class_id in rows}
    for label in conn.execute(text("SELECT DISTINCT label FROM masks")).scalars():
        name = str(label or "").strip()
        if name in ids:
            conn.execute(
                text("UPDATE masks SET class_id = :c, label = :n WHERE label = :l"),
                {"c": ids[name], "n": name, "l": label},
            )


# ----- step 4: a team's users, their sign-in sessions, images assigned to them ---------------
_V4 = MetaData()
Table(
    "users",
    _V4,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
)
Table(
    "login_sessions",
    _V4,
    Column("id", Integer, primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column(
        "user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)


def _v4_users(conn: Connection) -> None:
    """Users and sessions (none: the project stays single-user), and per image its assignee."""
    _V4.create_all(conn)
    conn.execute(
        text(
            "ALTER TABLE images ADD COLUMN assignee_id INTEGER REFERENCES users(id) "
            "ON DELETE SET NULL"
        )
    )


# ----- step 5: which model version is current, kept across restarts ---------------------------
def _v5_current_model(conn: Connection) -> None:
    """``active_at``: when a version was last made current (switch, roll back, retraining);
    the current version is the one made current last (none yet: the newest)."""
    conn.execute(text("ALTER TABLE model_versions ADD COLUMN active_at TIMESTAMP"))


# ----- step 6: a reviewer's note with a decision ---------------------------------------------
def _v6_review_note(conn: Connection) -> None:
    """``review_note``: what the reviewer wrote with the last decision (why a mask was
    rejected), '' for none."""
    conn.execute(text("ALTER TABLE masks ADD COLUMN review_note TEXT NOT NULL DEFAULT ''"))


#: (version, description, step). Append only.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "images, masks, model versions", _v1_initial),
    (2, "retraining jobs", _v2_train_jobs),
    (3, "classes, review state, edits recorded apart from the origin", _v3_classes_review),
    (4, "users, sign-in sessions, images assigned to users", _v4_users),
    (5, "the current model version, kept across restarts", _v5_current_model),
    (6, "a reviewer's note with a decision", _v6_review_note),
]


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
