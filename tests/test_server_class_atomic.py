# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments
"""A mask edit that names a new class makes the class in the same transaction as the edit
(issue 37): when the database dies between the two writes, or the edit is refused, no class is
left behind without the edit that named it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from segany.masks import encode_rle  # noqa: E402
from tests.server_fixtures import PostgresServer, make_client, tiny, upload  # noqa: E402, F401

UNAVAILABLE = "the database is unavailable"


def _mask(client) -> tuple[dict, str]:
    image = upload(client)
    mask = np.zeros((image["height"], image["width"]), bool)
    mask[10:20, 20:60] = True
    body = {"rle": encode_rle(mask), "origin": "clicks"}
    r = client.post(f"/api/images/{image['id']}/masks", json=body)
    assert r.status_code == 201, r.text
    return r.json(), f"/api/masks/{r.json()['id']}"


def _unchanged(client, mask: dict, url: str) -> None:
    assert client.get("/api/classes").json() == []  # no class without its edit
    now = client.get(url).json()
    assert (now["version"], now["label"], now["class_id"]) == (mask["version"], "", None)


@contextlib.contextmanager
def _before_mask_update(client, action) -> Iterator[None]:
    """``action(statement, parameters)`` runs just before the app sends a mask's UPDATE: after
    the edit's class was written (its INSERT sent, and committed where the two are apart)."""
    from sqlalchemy import event

    engine = client.app.state.segany.engine

    def hook(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE MASKS"):
            action(statement, parameters)

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def test_postgres_stopped_between_the_class_and_the_edit(tmp_path, tiny):
    postgres = PostgresServer()
    try:
        client = make_client(tmp_path / "p", tiny, postgres.url, db_timeout=3)
        mask, url = _mask(client)
        with _before_mask_update(client, lambda *_: postgres.stop()):
            r = client.patch(url, json={"version": 1, "label": "coin"})
        assert r.status_code == 503 and UNAVAILABLE in r.json()["detail"], r.text
        postgres.start()  # the same app, not restarted
        _unchanged(client, mask, url)
        # Once it is back, the same edit makes the class and the edit together.
        r = client.patch(url, json={"version": 1, "label": "coin"})
        assert r.status_code == 200, r.text
        assert [c["name"] for c in client.get("/api/classes").json()] == ["coin"]
        assert client.get(url).json()["label"] == "coin"
    finally:
        postgres.remove()


def test_sqlite_lost_between_the_class_and_the_edit(tmp_path, tiny):
    # SQLite cannot be stopped under the app: the mask's UPDATE fails as a lost or locked
    # database makes it fail, after the class row was written.
    from sqlalchemy import exc

    def fail(statement, parameters):
        raise exc.OperationalError(statement, parameters, Exception("database is locked"))

    client = make_client(tmp_path / "p", tiny, db_timeout=0.5)
    mask, url = _mask(client)
    with _before_mask_update(client, fail):
        r = client.patch(url, json={"version": 1, "label": "coin"})
    assert r.status_code == 503 and UNAVAILABLE in r.json()["detail"], r.text
    _unchanged(client, mask, url)


def test_a_refused_edit_leaves_no_class(tmp_path, tiny):
    client = make_client(tmp_path / "p", tiny)
    mask, url = _mask(client)
    # A review without its reviewer is refused after the label was read: no class 'coin'.
    r = client.patch(url, json={"version": 1, "label": "coin", "review": "accepted"})
    assert r.status_code in (400, 422) and "reviewer" in r.text, r.text
    _unchanged(client, mask, url)
