"""A reviewer's note with a decision (issue 36): a rejection says what to fix, the annotator's
fix sends the mask back to the review queue, the next decision replaces the note; an old
project gains the column when opened."""

from __future__ import annotations

import numpy as np

from segany.masks import encode_rle
from tests.server_fixtures import add_mask, click, client, review, tiny, upload  # noqa: F401


def test_a_rejection_with_a_note_and_the_fix_that_follows(client):  # noqa: F811
    image = upload(client)
    out = click(client, image["id"])
    mask = add_mask(client, image["id"], out["masks"][1], label="coin")
    assert mask["review_note"] == ""
    rejected = review(client, mask, "rejected", note="the rim is cut off on the left")
    assert (rejected["review"], rejected["review_note"]) == (
        "rejected",
        "the rim is cut off on the left",
    )
    assert client.get(f"/api/images/{image['id']}/masks").json()[0]["review_note"] == (
        "the rim is cut off on the left"
    )

    # A note without a decision is refused, saying why.
    r = client.patch(f"/api/masks/{mask['id']}", json={"version": rejected["version"], "note": "x"})
    assert r.status_code == 400 and "review state" in r.json()["detail"]

    # The fix (a new shape, no decision): unreviewed again, the note still there to read.
    h, w = image["height"], image["width"]
    fixed_shape = np.zeros((h, w), bool)
    fixed_shape[10:60, 20:90] = True
    r = client.patch(
        f"/api/masks/{mask['id']}",
        json={"version": rejected["version"], "rle": encode_rle(fixed_shape), "editor": "ann"},
    )
    assert r.status_code == 200, r.text
    fixed = r.json()
    assert (fixed["review"], fixed["edits"], fixed["review_note"]) == (
        "unreviewed",
        1,
        "the rim is cut off on the left",
    )
    queue = client.get("/api/review").json()
    assert queue["next_id"] == image["id"]

    # The next decision replaces the note.
    accepted = review(client, fixed, "accepted")
    assert (accepted["review"], accepted["review_note"]) == ("accepted", "")


def test_an_accepted_mask_edited_stays_accepted(client):  # noqa: F811
    """Only a rejection is reopened by an edit: an accepted mask's edit is the reviewer's own
    (or an annotator's saved edit) and keeps its state, as before."""
    image = upload(client)
    out = click(client, image["id"])
    mask = review(client, add_mask(client, image["id"], out["masks"][1]), "accepted")
    r = client.patch(f"/api/masks/{mask['id']}", json={"version": mask["version"], "label": "x"})
    assert r.status_code == 200 and r.json()["review"] == "accepted"


def test_a_step_5_project_gains_the_note_column(tmp_path):
    from sqlalchemy import create_engine, inspect

    from segany.server import db

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    original = db.MIGRATIONS[:]
    db.MIGRATIONS[:] = original[:5]
    try:
        assert db.migrate(engine) == [1, 2, 3, 4, 5]
    finally:
        db.MIGRATIONS[:] = original
    assert "review_note" not in {c["name"] for c in inspect(engine).get_columns("masks")}
    assert db.migrate(engine) == [6]
    assert "review_note" in {c["name"] for c in inspect(engine).get_columns("masks")}
