# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments
"""Model versions in the app (issue 36): the list of retraining jobs, switching to a version
and rolling back, kept across restarts; in a team project only admins switch."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from tests.server_fixtures import click, make_client, tiny, upload  # noqa: E402, F401


def _current(client) -> int:
    (current,) = [m["version"] for m in client.get("/api/models").json() if m["current"]]
    assert client.get("/api/project").json()["model_version"] == current
    return current


def test_switch_roll_back_and_jobs(tmp_path, tiny):
    from segany.server.db import ModelVersion, TrainJob

    client = make_client(tmp_path / "p", tiny)
    image = upload(client)
    assert client.get("/api/train").json() == []
    # A second version, as a retraining job leaves it (the bundled model's file again).
    with client.app.state.segany.sessions.begin() as s:
        s.add(ModelVersion(version=1, source="", parent=0, note="retrained", metrics={}))
        s.add(TrainJob(status="done", steps=2, base_version=0, result_version=1, message="ok"))
    client.app.state.segany.engine.dispose()
    client = make_client(tmp_path / "p", tiny)
    assert _current(client) == 1  # the newest, none chosen yet
    (job,) = client.get("/api/train").json()
    assert (job["status"], job["result_version"]) == ("done", 1)

    events = client.app.state.segany.events
    published = events.published
    r = client.put("/api/models/current", json={"version": 0})  # roll back
    assert r.status_code == 200, r.text
    assert [m["current"] for m in r.json()] == [True, False]
    assert _current(client) == 0 and events.published == published + 1
    assert click(client, image["id"])["model_version"] == 0
    client.app.state.segany.engine.dispose()
    client = make_client(tmp_path / "p", tiny)
    assert _current(client) == 0  # kept across a restart
    assert client.put("/api/models/current", json={"version": 1}).status_code == 200
    client.app.state.segany.engine.dispose()
    client = make_client(tmp_path / "p", tiny)
    assert _current(client) == 1
    r = client.put("/api/models/current", json={"version": 7})
    assert r.status_code == 404 and "no model version 7" in r.json()["detail"]

    # In a team project only an admin switches.
    from fastapi.testclient import TestClient

    body = {"name": "ada", "role": "admin", "password": "admin-pass-1"}
    client.post("/api/users", json=body)
    admin = TestClient(client.app)
    admin.post("/api/login", json={"name": "ada", "password": "admin-pass-1"})
    body = {"name": "rev", "role": "reviewer", "password": "reviewer-1"}
    assert admin.post("/api/users", json=body).status_code == 201
    rev = TestClient(client.app)
    rev.post("/api/login", json={"name": "rev", "password": "reviewer-1"})
    r = rev.put("/api/models/current", json={"version": 0})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert admin.put("/api/models/current", json={"version": 0}).status_code == 200
