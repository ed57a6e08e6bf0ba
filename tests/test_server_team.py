# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments
"""A team on one project (issue 36): users with roles, sign-in by cookie, images assigned to
annotators, the reviewer's queue, per-user figures; a project without users stays the
single-user tool it was."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from segany.masks import encode_rle  # noqa: E402
from tests.server_fixtures import (  # noqa: E402, F401
    coins_png,
    db_url,
    make_client,
    postgres_url,
    tiny,
    upload,
)

PASSWORDS = {"ada": "admin-pass-1", "ann": "annotator-1", "rev": "reviewer-1", "bob": "bob-pass-1"}


def _rle(n: int = 0, image: dict | None = None) -> dict:
    """A small rectangle (row band ``n``) on a coins-sized image."""
    size = (image["height"], image["width"]) if image else (303, 384)
    mask = np.zeros(size, bool)
    mask[10 + 20 * n : 25 + 20 * n, 20:60] = True
    return encode_rle(mask)


def _as(client, name: str):
    """Another client on the same app, signed in as ``name``."""
    from fastapi.testclient import TestClient

    other = TestClient(client.app)
    r = other.post("/api/login", json={"name": name, "password": PASSWORDS[name]})
    assert r.status_code == 200, r.text
    return other


def _team(client) -> dict[str, int]:
    """The first admin (made while the project is single-user), then the team by the admin."""
    r = client.post("/api/users", json={"name": "ada", "role": "admin", "password": "admin-pass-1"})
    assert r.status_code == 201, r.text
    ids = {"ada": r.json()["id"]}
    admin = _as(client, "ada")
    for name, role in (("ann", "annotator"), ("rev", "reviewer"), ("bob", "annotator")):
        body = {"name": name, "role": role, "password": PASSWORDS[name]}
        r = admin.post("/api/users", json=body)
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    return ids


def test_a_project_without_users_needs_no_sign_in(tmp_path, tiny):
    client = make_client(tmp_path / "p", tiny)
    assert client.get("/api/me").json() == {"team": False, "user": None}
    image = upload(client)
    r = client.post(
        f"/api/images/{image['id']}/masks",
        json={"rle": _rle(), "origin": "clicks", "author": "typed name"},
    )
    assert r.status_code == 201 and r.json()["author"] == "typed name"
    assert client.post("/api/export", json={"format": "coco"}).status_code == 200
    assert client.post("/api/login", json={"name": "x", "password": "y"}).status_code == 401
    # The first user must be an admin (someone must be able to add the others).
    body = {"name": "ann", "role": "annotator", "password": "annotator-1"}
    r = client.post("/api/users", json=body)
    assert r.status_code == 400 and "admin" in r.json()["detail"]
    assert client.get("/api/me").json()["team"] is False


def test_sign_in_roles_and_assignment(tmp_path, tiny, db_url):
    client = make_client(tmp_path / "p", tiny, db_url)
    image = upload(client)
    other = upload(client, coins_png()[:-1] + b"\x00", name="other.png")
    ids = _team(client)

    # Once a user exists, every API call needs a sign-in; the page itself still loads.
    r = client.get("/api/images")
    assert r.status_code == 401 and "sign in" in r.json()["detail"]
    assert client.get("/").status_code == 200
    assert client.get("/api/me").json() == {"team": True, "user": None}
    r = client.post("/api/login", json={"name": "ann", "password": "wrong-password"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong name or password"
    r = client.post("/api/login", json={"name": "nobody", "password": "wrong-password"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong name or password"
    ann, rev, bob, ada = (_as(client, n) for n in ("ann", "rev", "bob", "ada"))
    assert ann.get("/api/me").json()["user"] == {
        "id": ids["ann"],
        "name": "ann",
        "role": "annotator",
        "images": 0,
    }
    cookie = ann.cookies.get("segany_session")
    assert cookie and len(cookie) >= 40

    # Assignment: reviewers and admins assign; annotators cannot.
    r = ann.put(f"/api/images/{image['id']}/assignee", json={"user_id": ids["ann"]})
    assert r.status_code == 403 and "reviewer or admin" in r.json()["detail"]
    r = rev.put(f"/api/images/{image['id']}/assignee", json={"user_id": ids["ann"]})
    assert r.status_code == 200 and r.json()["assignee"] == "ann", r.text
    r = rev.put(f"/api/images/{image['id']}/assignee", json={"user_id": 999})
    assert r.status_code == 404
    # ann's list: hers first; bob is sent to the unassigned image, never to ann's.
    assert ann.get("/api/images?mine=true").json()["images"][0]["id"] == image["id"]
    assert len(ann.get("/api/images?mine=true").json()["images"]) == 1
    assert ann.get("/api/images").json()["next_id"] == image["id"]
    assert bob.get("/api/images").json()["next_id"] == other["id"]
    assert {u["name"]: u["images"] for u in ada.get("/api/users").json()}["ann"] == 1

    # An annotator's mask is signed with her name, whatever the body says.
    r = ann.post(
        f"/api/images/{image['id']}/masks",
        json={"rle": _rle(), "origin": "clicks", "author": "someone else", "seconds": 3.0},
    )
    assert r.status_code == 201 and r.json()["author"] == "ann"
    mask = r.json()
    # bob may not touch ann's image (nor its masks), but may work on the unassigned one.
    r = bob.post(f"/api/images/{image['id']}/masks", json={"rle": _rle(1), "origin": "clicks"})
    assert r.status_code == 403 and "assigned to someone else" in r.json()["detail"]
    patch = {"version": mask["version"], "label": "coin"}
    assert bob.patch(f"/api/masks/{mask['id']}", json=patch).status_code == 403
    r = bob.delete(f"/api/masks/{mask['id']}?version={mask['version']}")
    assert r.status_code == 403
    r = bob.put(f"/api/images/{image['id']}/status", json={"status": "skipped"})
    assert r.status_code == 403
    r = bob.post(f"/api/images/{other['id']}/masks", json={"rle": _rle(1), "origin": "brush"})
    assert r.status_code == 201 and r.json()["author"] == "bob"

    # Reviews: an annotator cannot decide; a reviewer can, and is recorded by sign-in.
    review = {"version": mask["version"], "review": "accepted", "reviewer": "ann"}
    r = ann.patch(f"/api/masks/{mask['id']}", json=review)
    assert r.status_code == 403 and "review decision" in r.json()["detail"]
    r = ann.patch(f"/api/masks/{mask['id']}", json={"version": mask["version"], "label": "coin"})
    assert r.status_code == 200 and r.json()["editor"] == "ann"
    mask = r.json()
    queue = rev.get("/api/review").json()
    assert [i["id"] for i in queue["images"]] == [image["id"], other["id"]]
    assert queue["next_id"] == image["id"]
    review = {"version": mask["version"], "review": "accepted", "reviewer": "forged"}
    r = rev.patch(f"/api/masks/{mask['id']}", json=review)
    assert r.status_code == 200, r.text
    assert (r.json()["review"], r.json()["reviewer"]) == ("accepted", "rev")
    assert [i["id"] for i in rev.get("/api/review").json()["images"]] == [other["id"]]

    # Admin-only and reviewer-only operations.
    assert ann.post("/api/export", json={"format": "coco"}).status_code == 403
    assert rev.post("/api/export", json={"format": "coco"}).status_code == 200
    assert rev.post("/api/train", json={"steps": 1}).status_code == 403
    assert ann.patch("/api/classes/1", json={"name": "penny"}).status_code == 403
    body = {"name": "eve", "role": "admin", "password": "eve-pass-1"}
    assert rev.post("/api/users", json=body).status_code == 403

    # Per-user figures.
    people = rev.get("/api/stats").json()["users"]
    assert people["ann"]["masks"] == 1 and people["ann"]["seconds_per_mask"] == 3.0
    assert people["ann"]["edited"] == 1
    assert people["bob"]["masks"] == 1 and people["rev"]["accepted"] == 1

    # Sign-out ends the session; its cookie no longer works elsewhere either.
    assert ann.post("/api/logout").status_code == 204
    assert ann.get("/api/images").status_code == 401
    from fastapi.testclient import TestClient

    stolen = TestClient(client.app, cookies={"segany_session": cookie})
    assert stolen.get("/api/images").status_code == 401


def test_passwords_sessions_and_admins(tmp_path, tiny):
    from sqlalchemy import select

    from segany.server.db import LoginSession, UserRow
    from segany.server.users import verify_password

    client = make_client(tmp_path / "p", tiny)
    ids = _team(client)
    ada, ann = _as(client, "ada"), _as(client, "ann")
    with client.app.state.segany.sessions() as s:
        stored = {u.name: u.password_hash for u in s.scalars(select(UserRow))}
        tokens = list(s.scalars(select(LoginSession.token_sha256)))
    assert stored["ann"].startswith("scrypt$") and "annotator-1" not in stored["ann"]
    assert verify_password("annotator-1", stored["ann"])
    assert not verify_password("annotator-2", stored["ann"])
    assert ann.cookies["segany_session"] not in tokens  # only the token's hash is stored

    # A user changes their own password (not another's, not their role); the old sessions end.
    r = ann.patch(f"/api/users/{ids['bob']}", json={"password": "new-password"})
    assert r.status_code == 403
    assert ann.patch(f"/api/users/{ids['ann']}", json={"role": "admin"}).status_code == 403
    assert ann.patch(f"/api/users/{ids['ann']}", json={"password": "short"}).status_code == 422
    r = ann.patch(f"/api/users/{ids['ann']}", json={"password": "annotator-2"})
    assert r.status_code == 200
    assert ann.get("/api/images").status_code == 401
    r = ann.post("/api/login", json={"name": "ann", "password": "annotator-2"})
    assert r.status_code == 200

    # The last admin can be neither demoted nor removed; a removed user's images go free.
    r = ada.patch(f"/api/users/{ids['ada']}", json={"role": "reviewer"})
    assert r.status_code == 400 and "last admin" in r.json()["detail"]
    assert ada.delete(f"/api/users/{ids['ada']}").status_code == 400
    image = upload(ada)
    ada.put(f"/api/images/{image['id']}/assignee", json={"user_id": ids["bob"]})
    assert ada.delete(f"/api/users/{ids['bob']}").status_code == 204
    assert ada.get(f"/api/images/{image['id']}").json()["assignee_id"] is None
    assert (
        ada.post(
            "/api/users", json={"name": "ANN", "role": "admin", "password": "x" * 8}
        ).status_code
        == 409
    )


def test_repeated_wrong_passwords_lock_the_name(tmp_path, tiny):
    client = make_client(tmp_path / "p", tiny)
    _team(client)
    for _ in range(5):
        r = client.post("/api/login", json={"name": "rev", "password": "guess-guess"})
        assert r.status_code == 401
    r = client.post("/api/login", json={"name": "rev", "password": PASSWORDS["rev"]})
    assert r.status_code == 429 and "too many failed sign-ins" in r.json()["detail"]
    # other names are not locked
    assert (
        client.post("/api/login", json={"name": "ann", "password": "annotator-1"}).status_code
        == 200
    )


def test_users_file(tmp_path, tiny):
    from segany.errors import InputError
    from segany.server.users import read_users_file

    team = [
        {"name": "ada", "role": "admin", "password": "admin-pass-1"},
        {"name": "ann", "role": "annotator", "password": "annotator-1"},
    ]
    path = tmp_path / "users.json"
    path.write_text(json.dumps(team))
    client = make_client(tmp_path / "p", tiny, users_file=path)
    assert client.get("/api/me").json()["team"] is True
    assert _as(client, "ann").get("/api/me").json()["user"]["role"] == "annotator"
    # Opening again with a new role for ann keeps her password (changed since) and adds rev.
    _as(client, "ann").patch("/api/users/2", json={"password": "changed-pw"})
    team[1]["role"] = "reviewer"
    team.append({"name": "rev", "role": "reviewer", "password": "reviewer-1"})
    path.write_text(json.dumps(team))
    client.app.state.segany.engine.dispose()
    again = make_client(tmp_path / "p", tiny, users_file=path)
    r = again.post("/api/login", json={"name": "ann", "password": "changed-pw"})
    assert r.status_code == 200 and r.json()["role"] == "reviewer"
    assert _as(again, "rev").get("/api/me").json()["user"]["name"] == "rev"

    for bad, message in [
        ("{}", "a JSON list"),
        ('[{"name": "a", "role": "boss", "password": "12345678"}]', "a role is one of"),
        ('[{"name": "a", "role": "admin", "password": "1234"}]', "at least 8"),
        ('[{"name": "a", "role": "admin"}]', "must be {"),
        (
            '[{"name": "a", "role": "admin", "password": "12345678"},'
            ' {"name": "A", "role": "admin", "password": "12345678"}]',
            "listed twice",
        ),
        ("not json", "cannot read"),
    ]:
        path.write_text(bad)
        with pytest.raises(InputError, match=message):
            read_users_file(path)


def test_schema_step_4_upgrades_a_step_3_project(tmp_path, tiny):
    """A project made before users (schema step 3) opens single-user, its images unassigned."""
    from sqlalchemy import create_engine, inspect

    from segany.server import db

    (tmp_path / "p").mkdir()
    engine = create_engine(f"sqlite:///{tmp_path / 'p' / 'annotations.db'}")
    original = db.MIGRATIONS[:]
    db.MIGRATIONS[:] = original[:3]
    try:
        assert db.migrate(engine) == [1, 2, 3]
    finally:
        db.MIGRATIONS[:] = original
    assert not inspect(engine).has_table("users")
    engine.dispose()
    client = make_client(tmp_path / "p", tiny)
    image = upload(client)
    assert image["assignee_id"] is None
    assert client.get("/api/me").json()["team"] is False
    assert db.schema_version(client.app.state.segany.engine) == db.SCHEMA_VERSION
