"""Issue 36's two-user flow in one run, end to end in Chromium: the admin makes the classes (from
the page) and two users, uploads an image and assigns it; the annotator signs in, annotates it
with clicks and classes and submits it; the reviewer signs in, takes it from the queue, accepts
one mask and rejects the other with a note; the annotator sees the rejection and its note live
and fixes the mask with the brush, which sends it back to the queue; the reviewer accepts the
fix; the COCO export, read back with pycocotools, holds the two accepted masks as they were
decided, under their classes. The mask list shows each class name in full (no tooltip)."""

# ruff: noqa: F811 - pytest fixtures imported from tests.test_server_browser are test arguments

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.server_fixtures import scene_png
from tests.test_server_browser import _serve, browser, canvas_point  # noqa: F401
from tests.test_server_browser_review import _export
from tests.test_server_browser_team import _signed_in

pytestmark = pytest.mark.slow  # one server, three browser contexts: about a minute

BIG, SMALL = (38, 54), (80, 182)  # image pixels well inside two objects of the scene
LONG = "round object with a thin outline, photographed from above in daylight"
ADMIN = {"name": "ada", "role": "admin", "password": "admin-pass-1"}
ANN = {"name": "ann", "role": "annotator", "password": "annotator-1"}
REV = {"name": "rev", "role": "reviewer", "password": "reviewer-1"}
NOTE = "the outline is missing on the right: paint it in"
MASKS = "(id) => fetch(`/api/images/${id}/masks`).then(r => r.json())"
ADD_USER = """async (user) => (await fetch('/api/users', {method: 'POST',
  headers: {'content-type': 'application/json'}, body: JSON.stringify(user)})).status"""


def _click(page, xy, decodes: int) -> None:
    page.mouse.click(*canvas_point(page, *xy))
    page.wait_for_function(f"window.segany.state.decodes >= {decodes}", timeout=30_000)
    page.wait_for_function("window.segany.state.current !== null", timeout=30_000)


def _masks_are(page, reviews: list[str]) -> None:
    page.wait_for_function(
        "JSON.stringify(window.segany.state.masks.map(m => m.review)) === "
        f"'{json.dumps(reviews, separators=(',', ':'))}'",
        timeout=30_000,
    )


def test_two_users_annotate_review_fix_and_export(browser, tmp_path_factory, tmp_path):
    from pycocotools.coco import COCO

    from segany.masks import decode_rle

    root = tmp_path_factory.mktemp("flow")
    (root / "users.json").write_text(json.dumps([ADMIN]))
    (tmp_path / "scene.png").write_bytes(scene_png())
    errors: list[str] = []
    with _serve(root, "--users", str(root / "users.json")) as (url, project):
        # The admin: two classes typed in the page, two users, the image assigned to ann.
        admin = _signed_in(browser, url, ADMIN, errors)
        for n, name in enumerate((LONG, "wheel"), 1):
            admin.fill("#label", name)
            admin.press("#label", "Enter")
            admin.wait_for_function(f"document.querySelectorAll('#class-list li').length === {n}")
        assert admin.evaluate(ADD_USER, ANN) == 201 and admin.evaluate(ADD_USER, REV) == 201
        admin.reload()  # the assignment menu lists the new users
        admin.wait_for_selector("body[data-ready='1']", timeout=180_000)
        admin.set_input_files("#upload", str(tmp_path / "scene.png"))
        admin.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
        image_id = admin.evaluate("window.segany.state.image.id")
        admin.select_option("#assign", label="→ ann (annotator)")
        admin.wait_for_function("document.querySelector('#image-list li .who') !== null")

        # The annotator: her image, a mask of each class by clicks, then submitted (d).
        ann = _signed_in(browser, url, ANN, errors)
        ann.click("#image-list li")
        ann.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
        for key, xy, n in (("1", BIG, 1), ("2", SMALL, 2)):
            ann.keyboard.press(key)
            _click(ann, xy, n)
            ann.keyboard.press("a")
            ann.wait_for_function(f"window.segany.state.masks.length === {n}")
        ann.keyboard.press("d")
        ann.wait_for_function("document.querySelector('#image-list .badge.annotated') !== null")
        made = ann.evaluate(MASKS, image_id)
        assert [(m["label"], m["author"], m["review"]) for m in made] == [
            (LONG, "ann", "unreviewed"),
            ("wheel", "ann", "unreviewed"),
        ]

        # The reviewer: the queue (q) opens the image; the list shows the labels in full.
        rev = _signed_in(browser, url, REV, errors)
        rev.keyboard.press("q")
        rev.wait_for_function(f"window.segany.state.image?.id === {image_id}")
        rev.wait_for_function("document.querySelectorAll('#mask-list li').length === 2")
        first = rev.locator("#mask-list li:nth-child(1) .label")
        assert first.text_content() == LONG
        assert first.evaluate("e => e.scrollWidth <= e.clientWidth && e.offsetHeight > 20")
        meta = rev.text_content("#mask-list li:nth-child(1) .meta")
        assert meta.startswith("clicks · unreviewed") and "by ann" in meta
        # Accept the first (a); the second is selected next: reject it with a note (Enter).
        rev.click("#mask-list li:nth-child(1) .label")
        rev.keyboard.press("a")
        rev.wait_for_function(f"window.segany.state.selected === {made[1]['id']}")
        rev.fill("#review-note", NOTE)
        rev.press("#review-note", "Enter")
        _masks_are(rev, ["accepted", "rejected"])
        assert rev.text_content("#mask-list li:nth-child(2) .note") == f"“{NOTE}”"

        # The annotator's page shows the rejection and its note live; she paints the fix.
        _masks_are(ann, ["accepted", "rejected"])
        assert NOTE in ann.text_content("#mask-list li:nth-child(2) .note")
        assert "rejected by rev" in ann.text_content("#mask-list li:nth-child(2) .meta")
        ann.click("#mask-list li:nth-child(2) .label")
        ann.keyboard.press("b")
        ann.mouse.move(*canvas_point(ann, SMALL[0] + 10, SMALL[1]))
        ann.mouse.down()
        ann.mouse.move(*canvas_point(ann, SMALL[0] + 40, SMALL[1]), steps=6)
        ann.mouse.up()
        ann.keyboard.press("a")
        _masks_are(ann, ["accepted", "unreviewed"])
        fixed = ann.evaluate(MASKS, image_id)[1]
        assert (fixed["edits"], fixed["editor"]) == (1, "ann")
        assert decode_rle(fixed["rle"]).sum() > made[1]["area"]

        # The reviewer's queue has the image again; the fix is accepted.
        _masks_are(rev, ["accepted", "unreviewed"])
        rev.keyboard.press("q")
        rev.wait_for_function(f"window.segany.state.image?.id === {image_id}")
        rev.click("#mask-list li:nth-child(2) .label")
        rev.keyboard.press("a")
        _masks_are(rev, ["accepted", "accepted"])
        final = rev.evaluate(MASKS, image_id)
        assert [m["review_note"] for m in final] == ["", ""]

        # The export holds both accepted masks as decided, under their classes.
        folder = project / _export(rev, "coco", None)
        coco = COCO(str(folder / "instances.json"))
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) == 2
        for ann_out, m in zip(sorted(anns, key=lambda a: a["id"]), final, strict=True):
            assert coco.cats[ann_out["category_id"]]["name"] == m["label"]
            np.testing.assert_array_equal(
                coco.annToMask(ann_out).astype(bool), decode_rle(m["rle"]).astype(bool)
            )
        for page in (admin, ann, rev):
            page.close()
    assert not errors, errors
