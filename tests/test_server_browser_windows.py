"""End to end in Chromium, a large image worked on by windows (segany.server.windows): a
3000×2000 TIFF in a project that works on at most 1 MP at once. The page opens it as an
overview; a click there opens the window of the whole image's grid that holds it most
centrally, and the arrows step through the grid; a click in the window is decoded in the
page on the window's embedding and the accepted mask is pasted into the image at the window;
back in the overview the mask's shape and box are drawn."""

# ruff: noqa: F811 - pytest fixtures imported from tests.test_server_browser are test arguments

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from segany.server.windows import window_grid
from segany.tasks.tiles import tile_frames
from tests.test_server_browser import _serve, browser, canvas_point, open_page  # noqa: F401
from tests.test_server_large_images import H, W, scene

tifffile = pytest.importorskip("tifffile")
pytestmark = pytest.mark.slow

CENTRE = (2100, 1450)  # the red rectangle (1900..2300 × 1200..1700), image pixels


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())


def test_a_large_image_through_its_overview_and_a_window(browser, tmp_path):
    from segany.masks import decode_rle

    (tmp_path / "project" / "images").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "project" / "images" / "scan.tif", scene(), photometric="rgb")
    with _serve(tmp_path, "--max-pixels", "1000000") as (url, _):
        (row,) = _post(f"{url}/api/images/import", {"folder": "images"})["images"]
        errors: list[str] = []
        page = open_page(browser, url, errors)
        page.evaluate(f"window.segany.openImage({row['id']})")
        page.wait_for_selector(f"body[data-image='{row['id']}']")
        image = page.evaluate("window.segany.state.image")
        assert image["overview"] == 3 and (image["width"], image["height"]) == (1000, 667)
        assert page.evaluate("window.segany.state.embedding") is None  # none for an overview
        assert page.is_visible("#window-bar")

        # A click on the overview opens the grid's window that holds that point most centrally
        # (768 px: the bundled model's 384·2, the largest within 1 MP).
        side, _, xs, ys = window_grid((H, W), 384, 1_000_000)
        (cx, cy) = (CENTRE[0] // 3 * 3, CENTRE[1] // 3 * 3)  # (where the overview click lands)

        def most_central(starts: list[int], at: int, length: int) -> int:
            return max(starts, key=lambda s: min(at - s, min(length, s + side) - at))

        x0, y0 = most_central(xs, cx, W), most_central(ys, cy, H)
        sx, sy = canvas_point(page, CENTRE[0] / 3, CENTRE[1] / 3)
        page.mouse.click(sx, sy)
        page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
        window = page.evaluate("window.segany.state.window")
        assert window == [x0, y0, x0 + side, y0 + side], (window, xs, ys)
        assert page.get_attribute("body", "data-window") == ",".join(map(str, window))
        # The arrows step to the grid's next window, and back.
        page.click("#window-bar [data-move='1,0']")
        nxt = xs[xs.index(x0) + 1]
        page.wait_for_function(f"window.segany.state.window[0] === {nxt}")
        page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
        page.click("#window-bar [data-move='-1,0']")
        page.wait_for_function(f"window.segany.state.window[0] === {x0}")
        page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)

        # A click in the window: decoded in the page on the window's embedding, equal to the
        # server's decode of the same click in that window.
        point = [CENTRE[0] - x0, CENTRE[1] - y0]
        page.mouse.click(*canvas_point(page, *point))
        page.wait_for_function("window.segany.state.current !== null", timeout=60_000)
        current = np.array(page.evaluate("Array.from(window.segany.state.current)"), bool)
        current = current.reshape(side, side)
        served = _post(
            f"{url}/api/images/{row['id']}/decode",
            {"points": [point], "labels": [1], "window": window},
        )
        best = max(
            (decode_rle(m) for m in served["masks"]),
            key=lambda m: (m & current).sum() / max(1, (m | current).sum()),
        )
        assert (best & current).sum() / (best | current).sum() >= 0.99
        page.keyboard.press("a")
        page.wait_for_function("document.querySelectorAll('#mask-list li').length === 1")

        # Stored at the image's size, the window's mask at the window, nothing elsewhere.
        with urllib.request.urlopen(f"{url}/api/images/{row['id']}/masks") as r:
            (saved,) = json.loads(r.read())
        mask = decode_rle(saved["rle"])
        assert mask.shape == (H, W)
        np.testing.assert_array_equal(mask[y0 : y0 + side, x0 : x0 + side], current)
        assert mask.sum() == current.sum()
        # the click, moved into image pixels (where the mouse landed: within a pixel or so)
        ((px, py),) = saved["prompts"]["points"]
        assert abs(px - CENTRE[0]) <= 1.5 and abs(py - CENTRE[1]) <= 1.5

        # Back to the overview: the mask's box is drawn, shrunk with it.
        page.keyboard.press("o")
        page.wait_for_function("window.segany.state.overviewBoxes.length === 1")
        assert page.evaluate("window.segany.state.window") is None
        boxes = page.evaluate("window.segany.state.overviewBoxes")
        assert [round(v * 3) for v in boxes[0]["bbox"]] == saved["bbox"]
        # and its shape, shrunk 3 times: a pixel set where any of its 3×3 block is
        shrunk = np.array(page.evaluate("Array.from(window.segany.state.overviewMasks[0].bits)"))
        padded = np.zeros((667 * 3, 1000 * 3), bool)
        padded[:H, :W] = mask
        expect = padded.reshape(667, 3, 1000, 3).any(axis=(1, 3))
        np.testing.assert_array_equal(shrunk.reshape(667, 1000).astype(bool), expect)

        # Back in the window, zoomed in: a click goes to the server with its view and is
        # answered on the whole image's tiles (segany segment --tile's, grown as the library
        # grows them), not on tiles of the window.
        sent: list[dict] = []
        page.on(
            "request",
            lambda r: sent.append(r.post_data_json) if r.url.endswith("/decode") else None,
        )
        page.evaluate(f"window.segany.openWindow(0, 0, {window})")
        page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
        to_client = "([x, y]) => window.segany.view.toClient(x, y)"
        fitted = page.evaluate("window.segany.view.scale")
        page.mouse.move(*page.evaluate(to_client, point))
        page.mouse.wheel(0, -700)
        page.wait_for_function(f"window.segany.view.scale > {fitted} * 2.5")
        decodes = page.evaluate("window.segany.state.decodes")
        page.mouse.click(*page.evaluate(to_client, point))
        page.wait_for_function(f"window.segany.state.decodes > {decodes}", timeout=60_000)
        assert sent[-1]["window"] == window and "view" in sent[-1]
        fx0, fy0, fx1, fy1 = page.evaluate("window.segany.state.previousFrame")
        # The frame the library's TiledPredictor answers the click on over the whole image
        # (the red rectangle is larger than a tile: a frame grown to hold it).
        from segany import Predictor, load_model
        from segany.tasks.tiles import TiledPredictor

        tiled = TiledPredictor(Predictor(load_model(), cache=False))
        tiled.set_image(scene())
        (px, py) = sent[-1]["points"][0]
        (theirs,) = tiled.predict_framed(np.array([[px + x0, py + y0]]), np.array([1]))
        assert (fx0 + x0, fy0 + y0, fx1 + x0, fy1 + y0) == theirs.frame
        assert (fx0, fy0, fx1, fy1) not in tile_frames((side, side), 384, 96)
        assert not errors, errors
