"""End to end in Chromium, a team project (issue 36): an annotator and a reviewer, each in
their own browser context, sign in; the annotator's masks carry her name, undo and redo walk
the prompt back and forth, a delete asks first; the reviewer assigns the image, takes it from
the review queue and accepts; the annotator's page sees the assignment live."""

# ruff: noqa: F811 - pytest fixtures imported from tests.test_server_browser are test arguments

from __future__ import annotations

import json

import pytest

from tests.server_fixtures import scene_png
from tests.test_server_browser import _serve, browser, canvas_point  # noqa: F401

pytestmark = pytest.mark.slow

BIG, SMALL = (38, 54), (80, 182)  # image pixels well inside two objects of the scene
TEAM = [
    {"name": "ada", "role": "admin", "password": "admin-pass-1"},
    {"name": "ann", "role": "annotator", "password": "annotator-1"},
    {"name": "rev", "role": "reviewer", "password": "reviewer-1"},
]
MASKS = "(id) => fetch(`/api/images/${id}/masks`).then(r => r.json())"


def _signed_in(browser, url: str, who: dict, errors: list[str]):
    page = browser.new_page(viewport={"width": 1280, "height": 800})  # its own context
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#login-name", who["name"])
    page.fill("#login-password", "not-the-password")
    page.click("#login-submit")
    page.wait_for_function("document.getElementById('login-error').textContent !== ''")
    assert page.text_content("#login-error") == "wrong name or password"
    page.fill("#login-password", who["password"])
    page.click("#login-submit")
    page.wait_for_selector("body[data-ready='1']", timeout=180_000)
    assert page.get_attribute("body", "data-user") == who["name"]
    return page


def _click(page, xy, decodes: int) -> None:
    page.mouse.click(*canvas_point(page, *xy))
    page.wait_for_function(f"window.segany.state.decodes >= {decodes}", timeout=30_000)
    page.wait_for_function("window.segany.state.current !== null", timeout=30_000)


def test_a_team_annotates_and_reviews_in_the_browser(browser, tmp_path_factory, tmp_path):
    root = tmp_path_factory.mktemp("team")
    (root / "users.json").write_text(json.dumps(TEAM))
    errors: list[str] = []
    with _serve(root, "--users", str(root / "users.json")) as (url, _):
        ann = _signed_in(browser, url, TEAM[1], errors)
        assert ann.is_hidden("#author") and ann.is_hidden("#reviewer-tools")
        (tmp_path / "scene.png").write_bytes(scene_png())
        ann.set_input_files("#upload", str(tmp_path / "scene.png"))
        ann.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
        image_id = ann.evaluate("window.segany.state.image.id")

        # Undo and redo: two clicks, back one (the first click's mask), forward again.
        _click(ann, BIG, 1)
        first = ann.evaluate("Array.from(window.segany.state.current)")
        text = ann.text_content("#mask-info")
        _click(ann, SMALL, 2)
        both = ann.evaluate("Array.from(window.segany.state.current)")
        assert both != first
        ann.keyboard.press("z")
        assert ann.evaluate("Array.from(window.segany.state.current)") == first
        assert ann.text_content("#mask-info") == text
        assert ann.evaluate("window.segany.state.prompt.points.length") == 1
        ann.keyboard.press("y")
        assert ann.evaluate("Array.from(window.segany.state.current)") == both
        assert ann.evaluate("window.segany.state.prompt.points.length") == 2
        ann.keyboard.press("z")
        ann.keyboard.press("Control+Shift+Z")  # the other redo key
        assert ann.evaluate("window.segany.state.prompt.points.length") == 2
        ann.keyboard.press("y")  # nothing left to redo: unchanged
        assert ann.evaluate("Array.from(window.segany.state.current)") == both
        ann.keyboard.press("z")
        ann.keyboard.press("z")
        assert ann.evaluate("window.segany.state.current") is None
        assert ann.text_content("#mask-info") == ""

        # Two masks, signed by the sign-in (no name field in a team project).
        _click(ann, BIG, 3)
        ann.keyboard.press("a")
        ann.wait_for_function("document.querySelectorAll('#mask-list li').length === 1")
        _click(ann, SMALL, 4)
        ann.keyboard.press("a")
        ann.wait_for_function("document.querySelectorAll('#mask-list li').length === 2")
        made = ann.evaluate(MASKS, image_id)
        assert {(m["author"], m["review"]) for m in made} == {("ann", "unreviewed")}

        # A delete asks first: Esc keeps the mask, Enter deletes it.
        ann.click("#mask-list li:nth-child(2) .name")
        ann.keyboard.press("Delete")
        ann.wait_for_selector("#confirm:not([hidden])")
        assert f"Delete mask {made[1]['id']}" in ann.text_content("#confirm-text")
        ann.keyboard.press("Escape")
        assert ann.is_hidden("#confirm")
        assert len(ann.evaluate(MASKS, image_id)) == 2
        ann.keyboard.press("Delete")
        ann.keyboard.press("Enter")
        ann.wait_for_function("document.querySelectorAll('#mask-list li').length === 1")
        assert [m["id"] for m in ann.evaluate(MASKS, image_id)] == [made[0]["id"]]
        # An annotator does not decide: r says so, and the mask stays unreviewed.
        ann.click("#mask-list li:nth-child(1) .name")
        ann.keyboard.press("r")
        assert "reviewer's decision" in ann.text_content("#status")

        # The reviewer assigns the image to ann (her page shows it, live), takes it from the
        # review queue (q) and accepts the mask.
        rev = _signed_in(browser, url, TEAM[2], errors)
        assert rev.is_visible("#reviewer-tools")
        rev.keyboard.press("q")
        rev.wait_for_function(f"window.segany.state.image?.id === {image_id}")
        rev.wait_for_function("document.querySelectorAll('#mask-list li').length === 1")
        rev.select_option("#assign", label="→ ann (annotator)")
        ann.wait_for_function(
            "document.querySelector('#image-list li .who')?.textContent === 'ann'"
        )
        rev.click("#mask-list li:nth-child(1) .name")
        rev.keyboard.press("a")
        rev.wait_for_function("window.segany.state.masks[0]?.review === 'accepted'")
        (mask,) = rev.evaluate(MASKS, image_id)
        assert (mask["review"], mask["reviewer"], mask["author"]) == ("accepted", "rev", "ann")
        rev.keyboard.press("q")
        rev.wait_for_function(
            "document.getElementById('status').textContent === 'nothing waits for a review'"
        )
        people = rev.evaluate("fetch('/api/stats').then(r => r.json())")["users"]
        assert people["ann"]["masks"] == 1 and people["rev"]["accepted"] == 1

        # Signing out brings the form back.
        ann.click("#sign-out")
        ann.wait_for_selector("#login:not([hidden])")
        ann.close()
        rev.close()
    assert not errors, errors
