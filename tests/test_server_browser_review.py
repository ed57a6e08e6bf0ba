"""End to end, issue 36's flow in Chromium: classes from `segany serve --classes`, picked with
number keys and renamed in the page; masks coloured by class; pre-filled proposals reviewed
one key each; COCO and YOLO exports read back with their own readers; the figures; zoom and
pan; the small
defects (the pre-fill threshold, a stale output text after undo, a class leaking onto the
next object, a skip that drops masks without a word)."""

# ruff: noqa: F811 - pytest fixtures imported from tests.test_server_browser are test arguments

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.server_fixtures import scene_png
from tests.test_server_browser import _serve, browser, canvas_point, open_page  # noqa: F401

pytestmark = pytest.mark.slow

# Two objects of the synthetic scene (image pixels well inside each)
BIG, SMALL = (38, 54), (80, 182)

MASKS = "(id) => fetch(`/api/images/${id}/masks`).then(r => r.json())"


def _click_and_wait(page, xy: tuple[int, int], decodes: int) -> None:
    page.mouse.click(*canvas_point(page, *xy))
    page.wait_for_function(f"window.segany.state.decodes >= {decodes}", timeout=30_000)
    page.wait_for_function("window.segany.state.current !== null", timeout=30_000)


def _layer_pixel(page, xy: tuple[int, int]) -> list[int]:
    """The saved-masks layer (image resolution) at image pixel ``xy``: RGBA."""
    return page.evaluate(
        "([x, y]) => Array.from(window.segany.view.layer.getContext('2d')"
        ".getImageData(x, y, 1, 1).data)",
        list(xy),
    )


def _export(page, option: str, before: str | None) -> str:
    page.select_option("#export-format", option)
    page.click("#export")
    page.wait_for_function(
        f"document.body.dataset.export && document.body.dataset.export !== {json.dumps(before)}"
    )
    return page.get_attribute("body", "data-export")


def test_classes_review_and_exports_in_the_browser(browser, tmp_path_factory, tmp_path):
    from pycocotools.coco import COCO

    from segany import load_model
    from segany.formats.yolo import line_mask, read_labels
    from segany.masks import decode_rle

    root = tmp_path_factory.mktemp("classes")
    (root / "classes.txt").write_text("coin #ffd700\nwasher #00ff00\n")
    errors: list[str] = []
    with _serve(root, "--classes", str(root / "classes.txt")) as (url, project):
        page = open_page(browser, url, errors)
        page.fill("#author", "ann")
        page.keyboard.press("Escape")
        (tmp_path / "scene.png").write_bytes(scene_png())
        page.set_input_files("#upload", str(tmp_path / "scene.png"))
        page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
        image_id = page.evaluate("window.segany.state.image.id")
        # A reviewer's page, in another browser context, on the same image: it shows the
        # annotator's changes live (server-sent events), without a reload.
        reviewer = open_page(browser, url, errors)
        reviewer.evaluate("(id) => window.segany.openImage(id)", image_id)
        reviewer.wait_for_selector("body[data-live='1']")

        # The pre-fill fields start at the model's own thresholds (they said 0.88).
        own = load_model().generator_defaults
        assert float(page.input_value("#prefill-iou")) == pytest.approx(own["pred_iou_thresh"])
        assert page.locator("#class-list li").count() == 2

        # Undo back to an empty prompt clears the output text (it stayed: "output 1/3 · IoU").
        _click_and_wait(page, BIG, 1)
        assert page.text_content("#mask-info").startswith("output ")
        page.keyboard.press("z")
        page.wait_for_function("window.segany.state.current === null")
        assert page.text_content("#mask-info") == ""

        # Key 2 picks "washer"; the accepted mask has it, in the class's colour; the next
        # object starts without a class (the label leaked onto it).
        page.keyboard.press("2")
        assert page.text_content("#class-picked") == "class: washer"
        _click_and_wait(page, BIG, 2)
        page.keyboard.press("a")
        page.wait_for_function("document.querySelectorAll('#mask-list li').length === 1")
        reviewer.wait_for_function("document.querySelectorAll('#mask-list li').length === 1")
        assert page.text_content("#class-picked") == "class: none"
        assert _layer_pixel(page, BIG)[:3] == [0, 255, 0]
        _click_and_wait(page, SMALL, 3)
        page.keyboard.press("a")
        page.wait_for_function("document.querySelectorAll('#mask-list li').length === 2")
        made = page.evaluate(MASKS, image_id)
        assert [m["label"] for m in made] == ["washer", ""]
        assert {(m["origin"], m["review"], m["author"]) for m in made} == {
            ("clicks", "unreviewed", "ann")
        }

        # Pre-fill (f) at the model's own thresholds: proposals, the first one selected; then
        # one key each: 1 + a accepts it as a coin, r rejects the next, t + a edits one.
        page.keyboard.press("f")
        page.wait_for_selector("body[data-prefill]", timeout=180_000)
        proposed = int(page.get_attribute("body", "data-prefill"))
        assert proposed >= 2, page.text_content("#status")
        first = page.evaluate("window.segany.state.selected")
        page.keyboard.press("1")
        page.keyboard.press("a")
        moved = "(id) => ![null, id].includes(window.segany.state.selected)"
        page.wait_for_function(moved, arg=first)
        second = page.evaluate("window.segany.state.selected")
        page.keyboard.press("r")
        page.wait_for_function(moved, arg=second)
        third = page.evaluate("window.segany.state.selected")  # a proposal or a hand-made mask
        page.keyboard.press("t")
        assert "active" in page.get_attribute("#tool-brush", "class")
        page.keyboard.press("a")
        page.wait_for_function(moved, arg=third)
        page.keyboard.press("v")
        masks = {m["id"]: m for m in page.evaluate(MASKS, image_id)}
        assert (masks[third]["review"], masks[third]["reviewer"]) == ("accepted", "ann")
        assert (masks[first]["review"], masks[first]["label"]) == ("accepted", "coin")
        assert masks[first]["reviewer"] == "ann" and masks[first]["origin"] == "prefill"
        assert masks[first]["relabels"] == 1 and masks[first]["edits"] == 0
        assert (masks[second]["review"], masks[second]["reviewer"]) == ("rejected", "ann")
        # a second pre-fill proposes nothing new: every proposal is a duplicate
        page.evaluate("delete document.body.dataset.prefill")
        page.keyboard.press("f")
        page.wait_for_selector("body[data-prefill]", timeout=180_000)
        assert page.get_attribute("body", "data-prefill") == "0"

        # Renaming a class in the page renames its masks.
        page.once("dialog", lambda d: d.accept("penny"))
        page.dblclick("#class-list li:nth-child(1) .name")
        page.wait_for_function(
            "document.querySelector('#class-list li .name').textContent === 'penny'"
        )
        masks = {m["id"]: m for m in page.evaluate(MASKS, image_id)}
        assert masks[first]["label"] == "penny"
        reviewer.wait_for_function(
            "document.querySelector('#class-list li .name').textContent === 'penny'"
        )
        reviewer.wait_for_function(
            f"document.querySelectorAll('#mask-list li').length === {len(masks)}"
        )
        assert reviewer.evaluate("window.segany.state.liveEvents") >= len(masks)
        reviewer.close()

        # Exports: COCO read back with pycocotools, YOLO by its documented layout; both hold
        # the masks (not the proposals or the rejected one), with the classes.
        kept = [m for m in masks.values() if m["review"] in ("unreviewed", "accepted")]
        folder = project / _export(page, "coco", None)
        coco = COCO(str(folder / "instances.json"))
        names = {c["name"] for c in coco.loadCats(coco.getCatIds())}
        assert {"penny", "washer", "unlabelled"} <= names
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(kept)
        for ann, m in zip(anns, sorted(kept, key=lambda m: m["id"]), strict=True):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), decode_rle(m["rle"]))
            assert coco.cats[ann["category_id"]]["name"] == (m["label"] or "unlabelled")
        folder = project / _export(page, "yolo", page.get_attribute("body", "data-export"))
        yaml = (folder / "data.yaml").read_text().splitlines()
        yolo_names = [json.loads(line.split(": ", 1)[1]) for line in yaml[4:]]
        (labels,) = (folder / "labels" / "train").iterdir()
        lines = read_labels(labels)
        assert len(lines) == len(kept)
        assert [yolo_names[x.class_index] for x in lines] == [
            m["label"] or "unlabelled" for m in sorted(kept, key=lambda m: m["id"])
        ]
        for line, m in zip(lines, sorted(kept, key=lambda m: m["id"]), strict=True):
            got, want = line_mask(line, (256, 239)), decode_rle(m["rle"])
            assert not (want & ~got).any()  # every pixel; a part's bridge may add a line

        # Zoom (wheel, about the cursor) and pan (space + drag): a click still lands on the
        # image pixel under it.
        page.keyboard.press("Escape")
        to_client = "([x, y]) => window.segany.view.toClient(x, y)"
        to_image = "([x, y]) => window.segany.view.toImage({clientX: x, clientY: y})"
        fitted = page.evaluate("window.segany.view.scale")
        sx, sy = page.evaluate(to_client, list(SMALL))
        page.mouse.move(sx, sy)
        page.mouse.wheel(0, -600)
        page.wait_for_function(f"window.segany.view.scale > {fitted} * 1.5")
        assert page.evaluate(to_image, [sx, sy]) == pytest.approx(list(SMALL), abs=0.5)
        decodes = page.evaluate("window.segany.state.decodes")
        page.keyboard.down("Space")
        page.mouse.down()
        page.mouse.move(sx + 40, sy + 10, steps=4)
        page.mouse.up()
        page.keyboard.up("Space")
        assert page.evaluate(to_image, [sx + 40, sy + 10]) == pytest.approx(list(SMALL), abs=0.5)
        assert page.evaluate("window.segany.state.prompt.points.length") == 0
        page.mouse.click(*page.evaluate(to_client, list(SMALL)))
        page.wait_for_function(f"window.segany.state.decodes > {decodes}", timeout=30_000)
        (point,) = page.evaluate("window.segany.state.prompt.points")
        assert point == pytest.approx(list(SMALL), abs=0.5)
        page.keyboard.press("Escape")
        page.keyboard.press("Home")
        assert page.evaluate("window.segany.view.scale") == pytest.approx(fitted)

        # The figures: the two masks made by hand (seconds recorded), the accepted proposal.
        page.click("#figures")
        page.wait_for_selector("body[data-figures]")
        assert int(page.get_attribute("body", "data-figures")) == len(kept)
        assert page.locator("#figures-table tr").count() >= 2

        # A reload reopens the image the page was on.
        page.reload()
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        page.wait_for_function(f"window.segany.state.image?.id === {image_id}")

        # Skipping an image with masks says what it drops.
        page.keyboard.press("s")
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('left out of exports')"
        )
        page.close()
    assert not errors, errors
