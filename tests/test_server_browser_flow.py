"""Issue 36's two-user flow in one run, end to end in Chromium: the admin makes the classes (from
the page) and two users, uploads an image and assigns it; the annotator signs in, annotates it
with clicks and classes and submits it; the reviewer signs in, takes it from the queue, accepts
one mask and rejects the other with a note; the annotator sees the rejection and its note live
and fixes the mask with the brush, which sends it back to the queue; the reviewer accepts the
fix. The annotator then opens a 6000×4000 photo, zooms in and clicks: the click goes to the
server with the view and is answered on the region's tile (``segany.tasks.regions``), the mask
stored at the photo's size under its class; the reviewer accepts it from the queue and the
annotator's page shows it live. The annotator pre-fills the first image (the default 16×16
grid, the bundled model): the reviewer decides the proposals one key each (the first accepted
under a class, the rest rejected), which the annotator's page shows live. The COCO export,
read back with pycocotools, and the YOLO segmentation export, read back by its documented
layout (``segany.formats.yolo``), hold exactly the accepted masks of both images as they were
decided, under their classes (no proposal, no rejected mask). The mask list shows each class
name in full (no tooltip)."""

# ruff: noqa: F811 - pytest fixtures imported from tests.test_server_browser are test arguments

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.server_fixtures import scene_png
from tests.test_server_browser import _serve, browser, canvas_point  # noqa: F401
from tests.test_server_browser_large import OBJECT, _jpeg
from tests.test_server_browser_review import _export
from tests.test_server_browser_team import _signed_in

pytestmark = pytest.mark.slow  # one server, three contexts, a 24 MP photo: 26 s at load 0.3-1.4

BIG, SMALL = (38, 54), (80, 182)  # image pixels well inside two objects of the scene
LONG = "round object with a thin outline, photographed from above in daylight"
ADMIN = {"name": "ada", "role": "admin", "password": "admin-pass-1"}
ANN = {"name": "ann", "role": "annotator", "password": "annotator-1"}
REV = {"name": "rev", "role": "reviewer", "password": "reviewer-1"}
NOTE = "the outline is missing on the right: paint it in"
TO_CLIENT = "([x, y]) => window.segany.view.toClient(x, y)"
REVIEW_OF = "([id, review]) => window.segany.state.masks.find(m => m.id === id)?.review === review"
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

    from segany.formats.yolo import line_mask, read_labels
    from segany.masks import decode_rle

    root = tmp_path_factory.mktemp("flow")
    (root / "users.json").write_text(json.dumps([ADMIN]))
    (tmp_path / "scene.png").write_bytes(scene_png())
    errors: list[str] = []
    with _serve(root, "--users", str(root / "users.json"), "--max-upload-mb", "64") as (
        url,
        project,
    ):
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

        # The annotator: a 6000×4000 photo; zoomed in about an object (key 2: its class), a
        # click goes to the server with the view in sight and is answered on the region's tile.
        large = tmp_path / "large.jpg"
        _jpeg((6000, 4000), large)
        sent: list[dict] = []
        ann.on(
            "request",
            lambda r: sent.append(r.post_data_json) if r.url.endswith("/decode") else None,
        )
        ann.set_input_files("#upload", str(large))
        ann.wait_for_function(
            "window.segany.state.image?.path?.endsWith('large.jpg')"
            " && window.segany.state.embedding !== null",
            timeout=300_000,
        )
        large_id = ann.evaluate("window.segany.state.image.id")
        size = ann.evaluate("[window.segany.state.image.width, window.segany.state.image.height]")
        assert size == [6000, 4000]
        x, y = OBJECT[0] * 6000, OBJECT[1] * 4000
        ann.keyboard.press("v")  # the point tool again (the fix was painted with the brush)
        ann.keyboard.press("2")
        fitted = ann.evaluate("window.segany.view.scale")
        ann.mouse.move(*ann.evaluate(TO_CLIENT, [x, y]))
        ann.mouse.wheel(0, -2400)
        ann.wait_for_function(f"window.segany.view.scale > {fitted} * 6")
        decodes = ann.evaluate("window.segany.state.decodes")
        ann.mouse.click(*ann.evaluate(TO_CLIENT, [x, y]))
        ann.wait_for_function(f"window.segany.state.decodes > {decodes}", timeout=120_000)
        ann.wait_for_function("window.segany.state.current !== null", timeout=30_000)
        assert len(sent) == 1  # the page's own decoder answered none of it
        x0, y0, x1, y1 = sent[0]["view"]
        assert max(x1 - x0, y1 - y0) <= 6000 / 6 and x0 <= x <= x1 and y0 <= y <= y1
        fx0, fy0, fx1, fy1 = ann.evaluate("window.segany.state.previousFrame")
        assert fx0 <= x <= fx1 and fy0 <= y <= fy1 and max(fx1 - fx0, fy1 - fy0) < 6000 / 2
        assert f"region {fx1 - fx0}×{fy1 - fy0} px" in ann.text_content("#mask-info")
        ann.keyboard.press("a")
        ann.wait_for_function("window.segany.state.masks.length === 1")
        (zoomed,) = ann.evaluate(MASKS, large_id)
        assert (zoomed["label"], zoomed["origin"], zoomed["author"]) == ("wheel", "clicks", "ann")
        assert zoomed["rle"]["size"] == [4000, 6000]
        assert decode_rle(zoomed["rle"])[int(y), int(x)]
        ann.keyboard.press("d")
        ann.wait_for_function(
            f"document.querySelector(\"#image-list li[data-id='{large_id}'] .badge.annotated\")"
            " !== null"
        )

        # The reviewer's queue has the photo (the first image is all decided); accepted, and
        # the annotator's page shows it live.
        rev.keyboard.press("q")
        rev.wait_for_function(f"window.segany.state.image?.id === {large_id}", timeout=120_000)
        rev.wait_for_function("document.querySelectorAll('#mask-list li').length === 1")
        rev.click("#mask-list li:nth-child(1) .label")
        rev.keyboard.press("a")
        _masks_are(rev, ["accepted"])
        _masks_are(ann, ["accepted"])

        # The annotator pre-fills the first image: proposals, signed with her name.
        ann.click(f"#image-list li[data-id='{image_id}']")
        ann.wait_for_function(
            f"window.segany.state.image?.id === {image_id} && window.segany.state.embedding"
            " !== null",
            timeout=120_000,
        )
        ann.keyboard.press("f")
        ann.wait_for_selector("body[data-prefill]", timeout=180_000)
        proposed = int(ann.get_attribute("body", "data-prefill"))
        assert proposed >= 2, ann.text_content("#status")
        proposals = [m for m in ann.evaluate(MASKS, image_id) if m["review"] == "proposed"]
        assert len(proposals) == proposed
        assert {(m["origin"], m["author"]) for m in proposals} == {("prefill", "ann")}

        # The reviewer's queue has it again: one key each, the first proposal accepted as the
        # first class (1, a), every other one rejected (r); the next is selected each time.
        rev.keyboard.press("q")
        rev.wait_for_function(f"window.segany.state.image?.id === {image_id}", timeout=120_000)
        rev.wait_for_function(
            f"document.querySelectorAll('#mask-list li').length === {2 + proposed}"
        )
        ids = [m["id"] for m in proposals]
        rev.click(f"#mask-list li[data-id='{ids[0]}'] .label")
        rev.keyboard.press("1")
        rev.keyboard.press("a")
        rev.wait_for_function(REVIEW_OF, arg=[ids[0], "accepted"])
        for pid in ids[1:]:
            rev.wait_for_function(f"window.segany.state.selected === {pid}")
            rev.keyboard.press("r")
            rev.wait_for_function(REVIEW_OF, arg=[pid, "rejected"])
        decided = ["accepted", "accepted", "accepted"] + ["rejected"] * (proposed - 1)
        _masks_are(rev, decided)
        _masks_are(ann, decided)  # live in the annotator's page
        prefilled = {m["id"]: m for m in rev.evaluate(MASKS, image_id)}
        assert (prefilled[ids[0]]["label"], prefilled[ids[0]]["reviewer"]) == (LONG, "rev")
        assert {prefilled[i]["reviewer"] for i in ids[1:]} == {"rev"}

        # Both exports hold the accepted masks of both images as decided, under their
        # classes: no proposal and no rejected mask. COCO, read back with pycocotools:
        kept = {
            i: [m for m in rev.evaluate(MASKS, i) if m["review"] == "accepted"]
            for i in (image_id, large_id)
        }
        assert [len(kept[image_id]), len(kept[large_id])] == [3, 1]
        assert [m["id"] for m in kept[image_id][:2]] == [m["id"] for m in final]
        folder = project / _export(rev, "coco", None)
        coco = COCO(str(folder / "instances.json"))
        assert len(coco.getAnnIds()) == 4
        for i, masks in kept.items():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[i]))
            assert len(anns) == len(masks)
            for ann_out, m in zip(sorted(anns, key=lambda a: a["id"]), masks, strict=True):
                assert coco.cats[ann_out["category_id"]]["name"] == m["label"]
                np.testing.assert_array_equal(
                    coco.annToMask(ann_out).astype(bool), decode_rle(m["rle"]).astype(bool)
                )
        # YOLO segmentation, by its documented layout: data.yaml's names by index, a label
        # file per image, each mask's polygon covering every pixel of the mask.
        folder = project / _export(rev, "yolo", rev.get_attribute("body", "data-export"))
        yaml = (folder / "data.yaml").read_text().splitlines()
        assert yaml[:4] == ["path: .", "train: images/train", "val: images/train", "names:"]
        names = [json.loads(line.split(": ", 1)[1]) for line in yaml[4:]]
        labels = sorted((folder / "labels" / "train").iterdir())
        assert [p.stem.split("_", 1)[1] for p in labels] == ["scene", "large"]
        for path, masks, hw in zip(labels, kept.values(), [(256, 239), (4000, 6000)], strict=True):
            lines = read_labels(path)
            assert [names[line.class_index] for line in lines] == [m["label"] for m in masks]
            for line, m in zip(lines, masks, strict=True):
                got, want = line_mask(line, hw), decode_rle(m["rle"]).astype(bool)
                assert want.shape == hw and not (want & ~got).any()
        for page in (admin, ann, rev):
            page.close()
    assert not errors, errors
