"""End to end in Chromium (issue 37): PostgreSQL stopped under the app while an annotator
works. Accepting a mask fails with the server's line in the page (the database is
unavailable, nothing was saved); once PostgreSQL is back the same accept succeeds, with no
server restart and no reload of the page."""

# ruff: noqa: F811 - pytest fixtures imported from tests.test_server_browser are test arguments

from __future__ import annotations

import pytest

from tests.server_fixtures import PostgresServer, scene_png
from tests.test_server_browser import _serve, browser, canvas_point, open_page  # noqa: F401

pytestmark = pytest.mark.slow

BIG = (38, 54)  # image pixels inside an object of the synthetic scene
MASKS = "(id) => fetch(`/api/images/${id}/masks`).then(r => r.json())"


def test_a_save_while_postgres_is_down(browser, tmp_path_factory, tmp_path):
    postgres = PostgresServer()
    root = tmp_path_factory.mktemp("pgdown")
    errors: list[str] = []
    try:
        with _serve(root, "--db", postgres.url) as (url, _):
            page = open_page(browser, url, errors)
            (tmp_path / "scene.png").write_bytes(scene_png())
            page.set_input_files("#upload", str(tmp_path / "scene.png"))
            page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
            image_id = page.evaluate("window.segany.state.image.id")
            page.mouse.click(*canvas_point(page, *BIG))
            page.wait_for_function("window.segany.state.current !== null", timeout=30_000)

            postgres.stop()
            page.keyboard.press("a")
            page.wait_for_function(
                "document.getElementById('status').textContent.includes('nothing was saved')",
                timeout=60_000,
            )
            status = page.text_content("#status")
            assert status.startswith("the database is unavailable"), status
            assert page.locator("#mask-list li").count() == 0

            postgres.start()  # the same server process, the same page
            page.keyboard.press("a")
            page.wait_for_function(
                "document.querySelectorAll('#mask-list li').length === 1", timeout=60_000
            )
            (mask,) = page.evaluate(MASKS, image_id)
            assert mask["origin"] == "clicks" and mask["area"] > 0
            page.close()
    finally:
        postgres.remove()
    assert not errors, errors
