"""The annotation app's label set, review and pre-fill rules (issue 36)."""

# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from segany.masks import decode_rle, encode_rle  # noqa: E402
from tests.server_fixtures import (  # noqa: E402, F401
    add_mask,
    client,
    coins_png,
    make_client,
    png_bytes,
    review,
    scene_png,
    tiny,
    upload,
)

ANY = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}  # keep whatever the model finds


def _square(y0: int, x0: int, side: int = 20, size: tuple[int, int] = (303, 384)) -> dict:
    mask = np.zeros(size, bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return encode_rle(mask)


@pytest.fixture
def scene(tmp_path, tiny):
    """A client whose pre-fill samples a 6×6 grid, with the synthetic scene uploaded."""
    client = make_client(tmp_path / "scene", tiny, prefill_points_per_side=6)
    return client, upload(client, scene_png(), "scene.png")


# ----- pre-fill ----------------------------------------------------------------------------------
def test_prefill_starts_from_the_models_own_thresholds(scene, tiny):
    """The page's pre-fill sent the official 0.88, over which the bundled model adds nothing;
    the server now says what a pre-fill without thresholds uses: the model's own."""
    client, image = scene
    project = client.get("/api/project").json()
    own = tiny.generator_defaults
    assert own and {k: project["prefill"][k] for k in own} == pytest.approx(own)
    assert project["prefill"]["points_per_side"] == 6
    url = f"/api/images/{image['id']}/prefill"
    official = client.post(url, json={"pred_iou_thresh": 0.88}).json()
    assert official["proposals"] == [] and official["thresholds"]["pred_iou_thresh"] == 0.88
    default = client.post(url, json={}).json()
    assert default["proposals"], "the model's own thresholds find masks on its kind of scene"
    assert default["thresholds"] == project["prefill"]


def test_prefill_twice_adds_nothing_and_its_proposals_wait_for_review(scene):
    client, image = scene
    url = f"/api/images/{image['id']}/prefill"
    first = client.post(url, json={"save": True}).json()
    saved = first["saved"]
    assert saved  # (the rule also holds between one run's own masks: first["duplicates"])
    assert {(m["origin"], m["review"], m["author"]) for m in saved} == {
        ("prefill", "proposed", "model v0")
    }
    # Run again, over the whole image as well: every proposal is a duplicate (mask IoU > 0.7).
    for body in ({"save": True}, {"save": True, "skip_annotated": False}):
        again = client.post(url, json=body).json()
        assert again["saved"] == [] and again["proposals"] == [], body
    assert again["duplicates"] == len(saved) + first["duplicates"]
    assert len(client.get(f"/api/images/{image['id']}/masks").json()) == len(saved)
    # Proposals are not masks yet: counted apart, left out of exports, with a warning.
    listed = client.get(f"/api/images/{image['id']}").json()
    assert (listed["masks"], listed["proposals"], listed["reviewed"]) == (0, len(saved), False)
    export = client.post("/api/export", json={"format": "sa1b"}).json()
    assert export["masks"] == 0
    assert any(f"{len(saved)} proposals waiting for review" in w for w in export["warnings"])
    # Asked by a person, the proposals carry that person's name.
    other = client.post(
        f"/api/images/{upload(client, coins_png())['id']}/prefill",
        json={"save": True, "author": "ann", "points_per_side": 2, **ANY},
    ).json()
    assert other["saved"] and {m["author"] for m in other["saved"]} == {"ann"}


def test_rejected_proposals_are_not_proposed_again(scene):
    client, image = scene
    url = f"/api/images/{image['id']}/prefill"
    saved = client.post(url, json={"save": True}).json()["saved"]
    for m in saved:
        client.delete(f"/api/masks/{m['id']}?version={m['version']}")
    kept = client.post(url, json={"save": True}).json()["saved"]
    assert len(kept) == len(saved)  # deleted: proposed again
    for m in kept:
        review(client, m, "rejected")
    again = client.post(url, json={"save": True, "skip_annotated": False}).json()
    assert again["saved"] == again["proposals"] == [] and again["duplicates"] >= len(kept)


def test_the_duplicate_rule_is_mask_iou_over_0_7():
    from segany.server.proposals import DUPLICATE_IOU, novel

    base = np.zeros((40, 40), bool)
    base[0:10, 0:10] = True  # area 100
    grown = [base.copy() for _ in range(3)]
    grown[0][0:10, 10:14] = True  # IoU 100/140 = 0.714: a duplicate
    grown[1][0:10, 10:15] = True  # IoU 100/150 = 0.667: a new mask
    grown[2][20:30, 20:30] = True  # far apart, IoU 0.5
    assert DUPLICATE_IOU == 0.7
    assert novel(grown, [base]) == [False, True, True]
    # candidates are compared with the ones kept before them, too
    assert novel([grown[1], grown[1]], []) == [True, False]
    assert novel([base], [np.zeros((40, 40), bool)]) == [True]


# ----- edits and review --------------------------------------------------------------------------
def test_a_label_only_edit_keeps_the_origin(scene):
    """Changing a pre-filled mask's class turned its origin into 'edited'; the origin now
    stays and the change is counted apart (relabels), as is a new shape (edits)."""
    client, image = scene
    url = f"/api/images/{image['id']}/prefill"
    mask = client.post(url, json={"save": True}).json()["saved"][0]
    body = {"version": mask["version"], "label": "disc", "editor": "ann"}
    relabelled = client.patch(f"/api/masks/{mask['id']}", json=body).json()
    assert relabelled["origin"] == "prefill" and relabelled["label"] == "disc"
    assert (relabelled["relabels"], relabelled["edits"], relabelled["editor"]) == (1, 0, "ann")
    same = client.patch(
        f"/api/masks/{mask['id']}", json={"version": 2, "rle": mask["rle"], "label": "Disc"}
    ).json()
    assert (same["relabels"], same["edits"]) == (1, 0)  # nothing changed: nothing counted
    grown = decode_rle(mask["rle"])
    grown[:5, :5] = True
    edited = client.patch(
        f"/api/masks/{mask['id']}", json={"version": 3, "rle": encode_rle(grown)}
    ).json()
    assert (edited["origin"], edited["edits"], edited["area"]) == ("prefill", 1, int(grown.sum()))


def test_review_states_reviewer_and_a_reviewed_image(client):
    image = upload(client)
    made = add_mask(client, image["id"], _square(10, 10), label="coin", author="ann")
    proposal = add_mask(client, image["id"], _square(100, 100), origin="prefill", review="proposed")
    third = add_mask(client, image["id"], _square(200, 200), origin="brush")
    assert made["review"] == "unreviewed" and proposal["review"] == "proposed"
    listed = client.get(f"/api/images/{image['id']}").json()
    assert (listed["masks"], listed["proposals"], listed["unreviewed"]) == (2, 1, 2)
    # a review needs who decided
    r = client.patch(f"/api/masks/{made['id']}", json={"version": 1, "review": "accepted"})
    assert r.status_code == 400 and "reviewer" in r.json()["detail"]
    r = client.patch(f"/api/masks/{made['id']}", json={"version": 1, "reviewer": "x"})
    assert r.status_code == 400
    r = client.patch(f"/api/masks/{made['id']}", json={"version": 1, "review": "maybe"})
    assert r.status_code == 422
    accepted = review(client, made, "accepted")
    assert (accepted["review"], accepted["reviewer"], accepted["author"]) == (
        "accepted",
        "rev",
        "ann",
    )
    review(client, proposal, "accepted", class_id=accepted["class_id"])  # a proposal becomes a mask
    assert not client.get(f"/api/images/{image['id']}").json()["reviewed"]
    review(client, third, "rejected")
    listed = client.get(f"/api/images/{image['id']}").json()
    assert (listed["masks"], listed["proposals"], listed["rejected"]) == (2, 0, 1)
    assert listed["reviewed"] and client.get("/api/images").json()["counts"]["reviewed"] == 1
    # a stale review is a 409 like any stale edit
    r = client.patch(
        f"/api/masks/{made['id']}", json={"version": 1, "review": "rejected", "reviewer": "b"}
    )
    assert r.status_code == 409 and r.json()["current"]["review"] == "accepted"
    # exports hold the masks: not the rejected one; accepted_only leaves unreviewed out
    add_mask(client, image["id"], _square(250, 300), origin="brush")
    assert not client.get(f"/api/images/{image['id']}").json()["reviewed"]
    assert client.post("/api/export", json={"format": "sa1b"}).json()["masks"] == 3
    only = client.post("/api/export", json={"format": "sa1b", "accepted_only": True}).json()
    assert only["masks"] == 2
    assert any("1 unreviewed masks are left out" in w for w in only["warnings"])


# ----- the label set -----------------------------------------------------------------------------
def test_classes_are_named_coloured_and_renaming_renames_masks(client):
    image = upload(client)
    coin = client.post("/api/classes", json={"name": "coin", "color": "#FF8800"}).json()
    assert coin["color"] == "#ff8800" and coin["masks"] == 0
    assert client.post("/api/classes", json={"name": "Coin"}).status_code == 409
    bad = client.post("/api/classes", json={"name": "x", "color": "orange"})
    assert bad.status_code == 400 and "#rrggbb" in bad.json()["detail"]
    by_id = add_mask(client, image["id"], _square(10, 10), class_id=coin["id"])
    by_name = add_mask(client, image["id"], _square(50, 50), label="COIN")
    new = add_mask(client, image["id"], _square(100, 100), label="washer")
    assert by_id["label"] == by_name["label"] == "coin"
    assert by_id["class_id"] == by_name["class_id"] == coin["id"]
    classes = client.get("/api/classes").json()
    assert [(c["name"], c["masks"]) for c in classes] == [("coin", 2), ("washer", 1)]
    assert classes[1]["color"].startswith("#") and new["class_id"] == classes[1]["id"]
    r = client.post(
        f"/api/images/{image['id']}/masks",
        json={"rle": _square(0, 0), "origin": "brush", "class_id": coin["id"], "label": "washer"},
    )
    assert r.status_code == 400 and "not the name of class" in r.json()["detail"]
    r = client.post(
        f"/api/images/{image['id']}/masks",
        json={"rle": _square(0, 0), "origin": "brush", "class_id": 999},
    )
    assert r.status_code == 400 and "no class with id 999" in r.json()["detail"]
    renamed = client.patch(f"/api/classes/{coin['id']}", json={"name": "penny"}).json()
    assert renamed["name"] == "penny"
    labels = [m["label"] for m in client.get(f"/api/images/{image['id']}/masks").json()]
    assert labels == ["penny", "penny", "washer"]
    r = client.patch(f"/api/classes/{coin['id']}", json={"name": "washer"})
    assert r.status_code == 409
    assert client.patch("/api/classes/999", json={"color": "#000000"}).status_code == 404
    assert client.delete(f"/api/classes/{classes[1]['id']}").status_code == 204
    after = client.get(f"/api/masks/{new['id']}").json()
    assert (after["label"], after["class_id"]) == ("", None)


def test_a_classes_file_fills_the_label_set(tmp_path, tiny):
    from segany.errors import InputError
    from segany.server.classes import read_classes_file

    text = tmp_path / "classes.txt"
    text.write_text("coin #ffd700\n\ntraffic light #FF0000\nitem #3\n")
    assert [(c.name, c.color) for c in read_classes_file(text)] == [
        ("coin", "#ffd700"),
        ("traffic light", "#ff0000"),
        ("item #3", None),
    ]
    js = tmp_path / "classes.json"
    js.write_text(json.dumps(["coin", {"name": "washer", "color": "#00ff00"}]))
    client = make_client(tmp_path / "p", tiny, classes_file=text)
    client.post("/api/classes", json={"name": "bolt"})
    del client
    again = make_client(tmp_path / "p", tiny, classes_file=js)  # merged: ids kept, none removed
    got = [(c["id"], c["name"], c["color"]) for c in again.get("/api/classes").json()]
    assert got[:4] == [
        (1, "coin", "#ffd700"),
        (2, "traffic light", "#ff0000"),
        (3, "item #3", got[2][2]),
        (4, "bolt", got[3][2]),
    ]
    assert got[4][1:] == ("washer", "#00ff00")
    for content, words in (
        ('{"a": 1}', "list"),
        ('[{"name": "a", "colour": "#000000"}]', "class 0"),
        ('["a", "A"]', "twice"),
        ("[1]", "class 0"),
    ):
        js.write_text(content)
        with pytest.raises(InputError, match=words):
            read_classes_file(js)
    with pytest.raises(InputError, match="cannot read"):
        read_classes_file(tmp_path / "missing.txt")


# ----- smaller defects ---------------------------------------------------------------------------
def test_skipping_an_image_with_masks_warns(client):
    image = upload(client)
    empty = upload(client, png_bytes(np.full((20, 30, 3), 9, np.uint8)), "empty.png")
    add_mask(client, image["id"], _square(10, 10))
    r = client.put(f"/api/images/{image['id']}/status", json={"status": "skipped"}).json()
    assert r["warning"] and "1 masks are left out of exports" in r["warning"]
    quiet = client.put(f"/api/images/{empty['id']}/status", json={"status": "skipped"}).json()
    assert quiet["warning"] is None
    export = client.post("/api/export", json={"format": "coco"}).json()
    assert export["masks"] == 0
    assert any("skipped" in w and image["path"] in w for w in export["warnings"])


def test_serve_images_says_what_it_copied(tmp_path, monkeypatch, capsys):
    """A restart with --images said 'copied 5 images' when it copied none."""
    import uvicorn

    from segany.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    photos = tmp_path / "photos"
    photos.mkdir()
    for v in range(2):
        (photos / f"{v}.png").write_bytes(png_bytes(np.full((20, 30, 3), 40 * v, np.uint8)))
    args = ["serve", str(tmp_path / "p"), "--images", str(photos)]
    assert main(args) == 0
    assert "copied 2 new images" in capsys.readouterr().err
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "copied 0 new images" in err and "2 were there already" in err
    # another file under a name the project has: copied beside it, not dropped
    (photos / "0.png").write_bytes(png_bytes(np.full((20, 30, 3), 200, np.uint8)))
    assert main(args) == 0
    assert "copied 1 new images" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "p" / "images").iterdir()) == [
        "0-1.png",
        "0.png",
        "1.png",
    ]
    assert main(["serve", str(tmp_path / "q"), "--classes", str(tmp_path / "none.txt")]) == 3
    assert "cannot read the classes file" in capsys.readouterr().err


# ----- figures ----------------------------------------------------------------------------------
def test_figures_per_stage_and_model_version(client):
    a = upload(client)
    b = upload(client, png_bytes(np.full((303, 384, 3), 7, np.uint8)), "b.png")
    add_mask(client, a["id"], _square(0, 0), seconds=10.0, model_version=0)
    add_mask(client, a["id"], _square(30, 0), origin="box", seconds=20.0, model_version=0)
    add_mask(client, b["id"], _square(0, 0), origin="brush", seconds=30.0, model_version=1)
    proposals = [
        add_mask(client, a["id"], _square(100, 30 * k), origin="prefill", review="proposed")
        for k in range(4)
    ]
    for p in proposals:
        assert p["model_version"] is None
    review(client, proposals[0], "accepted", label="coin")  # kept (relabelled)
    grown = decode_rle(proposals[1]["rle"])
    grown[100:105, 0:5] = True
    review(client, proposals[1], "accepted", rle=encode_rle(grown))  # edited
    review(client, proposals[2], "rejected")  # proposals[3] waits
    got = client.get("/api/stats").json()
    assert [v["model_version"] for v in got["versions"]] == [0, 1, None]
    v0, v1, none = got["versions"]
    manual = v0["stages"]["assisted-manual"]
    assert (manual["masks"], manual["images"], manual["seconds_per_mask"]) == (2, 1, 15.0)
    assert manual["by_tool"]["clicks"] == 1 and manual["by_tool"]["box"] == 1
    assert v1["stages"]["assisted-manual"]["seconds_per_mask"] == 30.0
    semi = none["stages"]["semi-automatic"]
    assert {k: semi[k] for k in ("proposed", "kept", "edited", "rejected", "waiting")} == {
        "proposed": 4,
        "kept": 1,
        "edited": 1,
        "rejected": 1,
        "waiting": 1,
    }
    assert semi["relabelled"] == 1 and semi["seconds_per_mask"] is None
    total = got["total"]
    assert total["masks"] == 5 and total["masks_per_image"] == 2.5
    assert total["share_from_model"] == pytest.approx(2 / 5)


# ----- live updates -----------------------------------------------------------------------------
def test_the_event_stream_tells_every_page_of_each_change(tmp_path, tiny):
    """GET /api/events on a real server (uvicorn in a thread): changes made through another
    connection arrive as server-sent events, one per change, in order."""
    import http.client
    import threading
    import time

    import uvicorn
    from fastapi.testclient import TestClient

    from segany.server import ServerSettings, create_app
    from tests.server_fixtures import LIMITS, free_port

    app = create_app(ServerSettings(project_dir=tmp_path / "p", **LIMITS), model=tiny)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    config.timeout_graceful_shutdown = 1
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/events")
        stream = conn.getresponse()
        assert stream.status == 200
        assert stream.getheader("content-type").startswith("text/event-stream")
        assert stream.readline() == b"retry: 2000\n"
        hub = app.state.segany.events
        while len(hub) == 0 and time.time() < deadline:
            time.sleep(0.05)
        other = TestClient(app)  # another page, through its own connection
        image = upload(other)
        mask = add_mask(other, image["id"], _square(10, 10), label="coin")
        review(other, mask, "accepted")
        other.patch(f"/api/classes/{mask['class_id']}", json={"color": "#000000"})
        other.delete(f"/api/masks/{mask['id']}?version=2")
        got: list[tuple] = []
        while len(got) < 6 and time.time() < deadline + 30:
            line = stream.readline().decode().strip()
            if line.startswith("event: "):
                kind = line[7:]
                data = json.loads(stream.readline().decode()[6:])
                got.append((kind, data.get("action"), data.get("image_id")))
        i = image["id"]
        assert got == [
            ("image", "added", i),
            ("classes", "added", None),  # "coin", made by the mask's label
            ("mask", "added", i),
            ("mask", "accepted", i),
            ("classes", "changed", None),
            ("mask", "deleted", i),
        ]
        conn.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
