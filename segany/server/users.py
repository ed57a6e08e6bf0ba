"""A team's users: names, roles, passwords, sign-in sessions, who may do what.

With no user in the project the app is the single-user tool it always was: every request is
allowed, masks carry the name typed in the page. Once a user exists (``segany serve --users
FILE`` or ``POST /api/users`` by an admin) every ``/api`` call needs a sign-in: ``POST
/api/login`` answers with a ``segany_session`` cookie (HTTP-only, same-site strict), valid
``SESSION_DAYS`` days or until ``POST /api/logout``; masks, edits and reviews are then signed
with the user's name, whatever a request says.

Roles: ``annotator`` (makes and edits masks on images assigned to them or to nobody),
``reviewer`` (also decides: accepts and rejects masks and proposals, renames classes, assigns
images, exports), ``admin`` (everything: users, retraining, imports).

Passwords are stored as scrypt hashes (``hashlib.scrypt``, a random 16-byte salt, n=2**14,
r=8, p=1); session tokens are 32 random bytes, stored as their SHA-256. Five failed sign-ins
for one name within ``LOCKOUT_WINDOW`` seconds refuse that name for ``LOCKOUT_WINDOW`` seconds
(HTTP 429), which turns guessing into years on a LAN.

A users file is JSON: a list of ``{"name", "role", "password"}``. Users it names that the
project lacks are added with that password; users the project has keep their password (changed
with ``PATCH /api/users/{id}``) and take the file's role. None are removed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import sessionmaker

from segany.errors import InputError
from segany.server.db import ImageRow, LoginSession, UserRow, now
from segany.server.project import Conflict, NotFound

ROLES = ("annotator", "reviewer", "admin")
SESSION_COOKIE = "segany_session"
SESSION_DAYS = 14
MIN_PASSWORD = 8
MAX_NAME = 128
LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = 300.0
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class Unauthorized(InputError):
    """No valid sign-in (HTTP 401)."""


class Forbidden(InputError):
    """Signed in, but the role does not allow it (HTTP 403)."""


class LockedOut(InputError):
    """Too many failed sign-ins for a name (HTTP 429)."""


# ----- passwords ------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    b64 = base64.b64encode
    n, r, p = _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"]
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
        raise InputError(f"a user name is 1 to {MAX_NAME} characters, got {name!r:.80}")
    return name.strip()


def check_role(role: Any) -> str:
    if role not in ROLES:
        raise InputError(f"a role is one of {', '.join(ROLES)}, got {role!r:.80}")
    return str(role)


def check_password(password: Any) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InputError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise InputError("a password has at most 1024 characters")
    return password


def user_dict(row: UserRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "role": row.role}


@dataclass(frozen=True)
class UserSpec:
    name: str
    role: str
    password: str


def read_users_file(path: str | Path) -> list[UserSpec]:
    """The users of a file (the module's layout), or an ``InputError`` saying what is wrong."""
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: cannot read the users file ({e})") from None
    if not isinstance(items, list):
        raise InputError(f"{path}: a users file is a JSON list of {{name, role, password}}")
    specs, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"name", "role", "password"}:
            raise InputError(
                f"{path}: user {i} must be {{'name': ..., 'role': ..., 'password': ...}}, "
                f"got {item!r:.80}"
            )
        try:
            spec = UserSpec(
                check_name(item["name"]), check_role(item["role"]), check_password(item["password"])
            )
        except InputError as e:
            raise InputError(f"{path}, user {i}: {e}") from None
        if spec.name.lower() in seen:
            raise InputError(f"{path}: the user {spec.name!r} is listed twice")
        seen.add(spec.name.lower())
        specs.append(spec)
    return specs


class Users:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self._team: tuple[float, bool] | None = None
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    # ----- team mode ----------------------------------------------------------------------
    def team(self) -> bool:
        """Whether the project has users (then every API call needs a sign-in). Cached for a
        second, so a user added by another server process on the same database counts soon."""
        cached = self._team
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        with self.sessions() as s:
            found = s.scalar(select(UserRow.id).limit(1)) is not None
        self._team = (time.monotonic(), found)
        return found

    # ----- users --------------------------------------------------------------------------
    def all(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            counts = dict(
                s.execute(
                    select(ImageRow.assignee_id, func.count())
                    .where(ImageRow.assignee_id.is_not(None))
                    .group_by(ImageRow.assignee_id)
                ).all()
            )
            rows = list(s.scalars(select(UserRow).order_by(UserRow.id)))
        return [{**user_dict(r), "images": int(counts.get(r.id, 0))} for r in rows]

    def names(self) -> dict[int, str]:
        """Every user's name by id."""
        with self.sessions() as s:
            return {int(i): str(n) for i, n in s.execute(select(UserRow.id, UserRow.name))}

    def get(self, user_id: int) -> dict[str, Any]:
        with self.sessions() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            return user_dict(row)

    def add(self, name: str, role: str, password: str) -> dict[str, Any]:
        name, role = check_name(name), check_role(role)
        digest = hash_password(check_password(password))
        with self.sessions.begin() as s:
            if _by_name(s, name) is not None:
                raise Conflict(f"a user named {name!r} exists already", None)
            row = UserRow(name=name, role=role, password_hash=digest)
            s.add(row)
            s.flush()
            out = user_dict(row)
        self._team = None
        return out

    def update(self, user_id: int, role: str | None, password: str | None) -> dict[str, Any]:
        """A new role and/or password; a new password ends the user's sessions."""
        digest = None if password is None else hash_password(check_password(password))
        with self.sessions.begin() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            if role is not None:
                role = check_role(role)
                if row.role == "admin" and role != "admin":
                    self._keep_an_admin(s, user_id)
                row.role = role
            if digest is not None:
                row.password_hash = digest
                s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
            s.flush()
            return user_dict(row)

    def delete(self, user_id: int) -> None:
        """Remove a user (their images become unassigned; masks keep their name)."""
        with self.sessions.begin() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            if row.role == "admin":
                self._keep_an_admin(s, user_id)
            s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
            s.execute(
                update(ImageRow).where(ImageRow.assignee_id == user_id).values(assignee_id=None)
            )
            s.delete(row)
        self._team = None

    @staticmethod
    def _keep_an_admin(s: Any, user_id: int) -> None:
        others = s.scalar(
            select(func.count()).where(UserRow.role == "admin", UserRow.id != user_id)
        )
        if not others:
            raise InputError("the project's last admin cannot be removed or demoted")

    def merge(self, specs: list[UserSpec]) -> tuple[int, int]:
        """Add a file's users (``read_users_file``): (added, role changed)."""
        added = changed = 0
        for spec in specs:
            with self.sessions() as s:
                row = _by_name(s, spec.name)
            if row is None:
                self.add(spec.name, spec.role, spec.password)
                added += 1
            elif row.role != spec.role:
                self.update(row.id, spec.role, None)
                changed += 1
        return added, changed

    # ----- sign-in ------------------------------------------------------------------------
    def login(self, name: str, password: str) -> tuple[str, dict[str, Any]]:
        """(session token, user) for a right name and password, else ``Unauthorized``."""
        key = str(name).strip().lower()
        with self._lock:
            since = time.monotonic() - LOCKOUT_WINDOW
            recent = [t for t in self._failures.get(key, []) if t > since]
            self._failures[key] = recent
            if len(self._failures) > 10_000:  # many names tried: forget the stale ones
                self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > since}
        if len(recent) >= LOCKOUT_FAILURES:
            raise LockedOut(
                f"too many failed sign-ins for {name!r}: wait {int(LOCKOUT_WINDOW)} s, or ask "
                "an admin to set a new password"
            )
        with self.sessions() as s:
            row = _by_name(s, str(name).strip())
        # A missing name costs the same hash as a wrong password: no timing tells names apart.
        stored = row.password_hash if row is not None else _DUMMY
        if not verify_password(str(password), stored) or row is None:
            with self._lock:
                self._failures.setdefault(key, []).append(time.monotonic())
            raise Unauthorized("wrong name or password")
        with self._lock:
            self._failures.pop(key, None)
        token = secrets.token_urlsafe(32)
        expires = now() + dt.timedelta(days=SESSION_DAYS)
        with self.sessions.begin() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at < now()))
            s.add(LoginSession(token_sha256=_digest(token), user_id=row.id, expires_at=expires))
        return token, user_dict(row)

    def user_for(self, token: str | None) -> dict[str, Any] | None:
        """The signed-in user of a session token, or None (missing, unknown or expired)."""
        if not token or len(token) > 256:
            return None
        with self.sessions() as s:
            found = s.execute(
                select(UserRow, LoginSession.expires_at)
                .join(LoginSession, LoginSession.user_id == UserRow.id)
                .where(LoginSession.token_sha256 == _digest(token))
            ).first()
        if found is None or found[1] < now():
            return None
        return user_dict(found[0])

    def logout(self, token: str | None) -> None:
        if token:
            with self.sessions.begin() as s:
                s.execute(delete(LoginSession).where(LoginSession.token_sha256 == _digest(token)))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _by_name(s: Any, name: str) -> UserRow | None:
    key = name.lower()  # compared in Python, as class names are (SQLite's lower() is ASCII)
    return next((r for r in s.scalars(select(UserRow)) if r.name.lower() == key), None)


_DUMMY = hash_password(secrets.token_hex(8))


# ----- who may do what ------------------------------------------------------------------------
def user_of(request: Any) -> dict[str, Any] | None:
    """The signed-in user of a request (None: a single-user project, everything allowed)."""
    return getattr(request.state, "user", None)


def require(request: Any, *roles: str, doing: str) -> dict[str, Any] | None:
    """The request's user if their role is one of ``roles`` (admins always), else
    ``Forbidden`` saying what ``doing`` needs."""
    user = user_of(request)
    if user is None or user["role"] == "admin" or user["role"] in roles:
        return user
    allowed = " or ".join([*roles, "admin"])
    raise Forbidden(f"{doing} needs the {allowed} role; {user['name']} is {user['role']}")


def check_image_access(request: Any, image: ImageRow) -> None:
    """An annotator changes only images assigned to them or to nobody."""
    user = user_of(request)
    if user is None or user["role"] != "annotator":
        return
    if image.assignee_id is not None and image.assignee_id != user["id"]:
        raise Forbidden(
            f"image {image.id} is assigned to someone else; {user['name']} may change images "
            "assigned to them or to nobody"
        )
