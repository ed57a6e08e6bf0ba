# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments
"""The database going away under the app (issue 37): PostgreSQL stopped and started again
mid-session, SQLite locked by another writer. Requests answer 503 saying the database is
unavailable and nothing was saved (and nothing is); once it is back the app serves again with
no restart."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from segany.masks import encode_rle  # noqa: E402
from tests.server_fixtures import PostgresServer, make_client, tiny, upload  # noqa: E402, F401

UNAVAILABLE = "the database is unavailable"


def _rle(image: dict, row: int) -> dict:
    mask = np.zeros((image["height"], image["width"]), bool)
    mask[row : row + 10, 20:60] = True
    return encode_rle(mask)


def _is_503(r) -> None:
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert UNAVAILABLE in detail and "nothing was saved" in detail
    assert r.headers["retry-after"] == "5"


@pytest.fixture
def postgres():
    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()


def test_postgres_stopped_and_started_under_the_app(tmp_path, tiny, postgres):
    client = make_client(tmp_path / "p", tiny, postgres.url, db_timeout=3)
    image = upload(client)
    masks = f"/api/images/{image['id']}/masks"
    first = client.post(masks, json={"rle": _rle(image, 10), "origin": "clicks"}).json()

    postgres.stop()
    _is_503(client.get("/api/images"))
    _is_503(client.post(masks, json={"rle": _rle(image, 40), "origin": "clicks"}))
    _is_503(client.patch(f"/api/masks/{first['id']}", json={"version": 1, "label": "x"}))
    _is_503(client.delete(f"/api/masks/{first['id']}?version=1"))
    _is_503(client.post("/api/classes", json={"name": "coin"}))
    assert client.get("/").status_code == 200  # the page itself loads, and says what failed

    postgres.start()  # the same app, not restarted
    assert [m["id"] for m in client.get(masks).json()] == [first["id"]]  # nothing was saved
    assert client.get(f"/api/masks/{first['id']}").json()["version"] == 1
    assert client.get("/api/classes").json() == []
    r = client.post(masks, json={"rle": _rle(image, 40), "origin": "clicks"})
    assert r.status_code == 201, r.text

    # A restart between two requests costs none of them: pooled connections are checked.
    postgres.stop()
    postgres.start()
    assert client.get("/api/images").status_code == 200
    assert len(client.get(masks).json()) == 2

    # A team project: the sign-in check meets the outage first; the session survives it.
    body = {"name": "ada", "role": "admin", "password": "admin-pass-1"}
    assert client.post("/api/users", json=body).status_code == 201
    login = client.post("/api/login", json={"name": "ada", "password": "admin-pass-1"})
    assert login.status_code == 200
    postgres.stop()
    import time

    time.sleep(1.1)  # past the cached answer to 'does the project have users'
    _is_503(client.get("/api/images"))
    _is_503(client.post("/api/login", json={"name": "ada", "password": "admin-pass-1"}))
    postgres.start()
    assert client.get("/api/images").status_code == 200


def test_a_locked_sqlite_database(tmp_path, tiny):
    client = make_client(tmp_path / "p", tiny, db_timeout=0.5)
    image = upload(client)
    masks = f"/api/images/{image['id']}/masks"
    other = sqlite3.connect(tmp_path / "p" / "annotations.db", timeout=0)
    other.execute("BEGIN EXCLUSIVE")  # another process writing, and holding on
    try:
        _is_503(client.post(masks, json={"rle": _rle(image, 10), "origin": "clicks"}))
        _is_503(client.put(f"/api/images/{image['id']}/status", json={"status": "skipped"}))
        assert client.get(masks).status_code == 200  # readers go on (write-ahead log)
    finally:
        other.rollback()
        other.close()
    assert client.get(masks).json() == []
    assert client.get(f"/api/images/{image['id']}").json()["status"] == "todo"
    r = client.post(masks, json={"rle": _rle(image, 10), "origin": "clicks"})
    assert r.status_code == 201, r.text


def test_what_counts_as_unavailable():
    from sqlalchemy import exc

    from segany.server.db import database_unavailable

    def wrapped(message: str, kind=exc.OperationalError) -> Exception:
        return kind("SELECT 1", {}, Exception(message))

    assert database_unavailable(wrapped("database is locked"))
    assert database_unavailable(wrapped("connection to server at 127.0.0.1 refused"))
    assert database_unavailable(wrapped("server closed the connection", exc.InterfaceError))
    assert database_unavailable(exc.TimeoutError("QueuePool limit reached"))
    assert not database_unavailable(wrapped("no such table: masks"))
    assert not database_unavailable(wrapped("duplicate key", exc.IntegrityError))
    assert not database_unavailable(ValueError("database is locked"))
