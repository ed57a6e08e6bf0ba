"""End to end: `segany serve` in a subprocess, the page in headless Chromium (Playwright).

The decoder runs in the page (onnxruntime-web on the server's embedding); the test checks its
masks against the server's decode endpoint for the same prompts, then drives the tools the way
an annotator does and reads the export back with segany.formats.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.server_fixtures import coins_png, free_port

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")
pytest.importorskip("onnx", reason="the in-browser decoder needs the onnx export (dev extra)")
if not CHROMIUM.is_file():
    pytest.skip("no /usr/bin/chromium (CI installs Debian's chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update"]  # fmt: skip


@contextlib.contextmanager
def _serve(root: Path, *flags: str) -> Iterator[tuple[str, Path]]:
    """`segany serve` in a subprocess while the context lasts: (url, project folder)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    cmd = [sys.executable, "-m", "segany", "serve", str(root / "project"), "--port", str(port)]
    proc = subprocess.Popen([*cmd, *flags], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/me", timeout=5)  # open in a team project too
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError((root / "server.log").read_text()) from None
            time.sleep(0.5)
    try:
        yield url, root / "project"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with _serve(tmp_path_factory.mktemp("app")) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str, errors: list[str]):
    """A new page on ``url``, ready; uncaught page errors go to ``errors``."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=180_000)
    return page


@pytest.fixture(scope="module")
def page(server, browser):
    url, _ = server
    errors: list[str] = []
    yield open_page(browser, url, errors)
    assert not errors, errors


def canvas_point(page, x: float, y: float) -> tuple[float, float]:
    """Screen position of image pixel (x, y)."""
    box = page.locator("#canvas").bounding_box()
    scale, dx, dy = page.evaluate(
        "(() => { const s = window.segany.state; const c = document.getElementById('canvas');"
        " const r = c.getBoundingClientRect();"
        " const k = Math.min(r.width / s.image.width, r.height / s.image.height);"
        " return [k, (r.width - s.image.width * k) / 2, (r.height - s.image.height * k) / 2]; })()"
    )
    return box["x"] + dx + x * scale, box["y"] + dy + y * scale


def pixel(page, sx: float, sy: float) -> list[int]:
    box = page.locator("#canvas").bounding_box()
    return page.evaluate(
        f"Array.from(document.getElementById('canvas').getContext('2d')"
        f".getImageData({round(sx - box['x'])}, {round(sy - box['y'])}, 1, 1).data)"
    )


PARITY = """async ([prompt, multimask]) => {
  const a = await window.segany.decode(prompt, multimask, 'browser');
  const b = await window.segany.decode(prompt, multimask, 'server');
  return a.map((o, k) => {
    let inter = 0, union = 0;
    for (let i = 0; i < o.mask.length; i++) {
      inter += o.mask[i] & b[k].mask[i]; union += o.mask[i] | b[k].mask[i];
    }
    return [union ? inter / union : 1, o.score, b[k].score, union];
  });
}"""

COIN = (157, 103)  # a coin in the second row of the coins photo (image pixels)


def test_annotate_in_the_browser(page, server, tmp_path):
    from segany.formats import read_sa1b
    from segany.masks import decode_rle

    url, project = server
    assert page.get_attribute("body", "data-decoder") == "browser"
    image_file = tmp_path / "coins.png"
    image_file.write_bytes(coins_png())
    page.set_input_files("#upload", str(image_file))
    page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
    assert page.locator("#image-list li").count() == 1

    # Hover: the mask under the cursor, from the decoder in the page.
    sx, sy = canvas_point(page, *COIN)
    page.mouse.move(sx, sy)
    page.wait_for_function("window.segany.state.hover !== null", timeout=30_000)
    before = pixel(page, sx, sy)

    # The in-browser decoder equals the server's decoder on the same prompts.
    prompts = [
        ({"points": [list(COIN)], "labels": [1], "box": None}, True),
        ({"points": [list(COIN), [300, 250]], "labels": [1, 0], "box": None}, False),
        ({"points": [], "labels": [], "box": [120, 60, 200, 150]}, False),
    ]
    for prompt, multimask in prompts:
        for iou, score_browser, score_server, union in page.evaluate(PARITY, [prompt, multimask]):
            assert union > 0 and iou >= 0.99, (prompt, iou)
            assert abs(score_browser - score_server) < 1e-3

    # Click: a mask is drawn (the blue overlay tints the coin's gray pixels).
    page.mouse.click(sx, sy)
    page.wait_for_function("window.segany.state.current !== null", timeout=30_000)
    after = pixel(page, sx, sy)
    assert after[2] > after[0] + 30 and after != before, (before, after)
    page.screenshot(path=str(tmp_path / "page-with-mask.png"))
    assert page.evaluate("window.segany.state.outputs.length") == 3
    page.keyboard.press("c")  # cycle the multimask outputs
    assert page.evaluate("window.segany.state.choice") in (0, 1, 2)
    page.keyboard.press("z")  # undo the cycle
    area = page.evaluate("window.segany.state.current.reduce((a, b) => a + b, 0)")

    # Brush: paint a stroke next to the coin; the mask grows.
    page.keyboard.press("b")
    x0, y0 = canvas_point(page, COIN[0] + 40, COIN[1] + 40)
    x1, y1 = canvas_point(page, COIN[0] + 60, COIN[1] + 40)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    grown = page.evaluate("window.segany.state.current.reduce((a, b) => a + b, 0)")
    assert grown > area

    # Accept with a label (and the annotator's name).
    page.fill("#author", "tester")
    page.keyboard.press("Escape")  # leave the field: keys are shortcuts again
    page.keyboard.press("l")
    page.keyboard.type("coin")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#mask-list li').length === 1")
    image_id = page.evaluate("window.segany.state.image.id")
    masks = page.evaluate(f"fetch('/api/images/{image_id}/masks').then(r => r.json())")
    assert len(masks) == 1
    saved = masks[0]
    assert saved["label"] == "coin" and saved["origin"] == "edited" and saved["seconds"] > 0
    assert saved["area"] == grown and saved["model_version"] == 0
    assert saved["author"] == "tester"

    # Help overlay.
    page.keyboard.press("v")
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")

    # Pre-fill (thresholds low enough for the tiny model on a photo), then export SA-1B and read
    # it back: the proposals wait for review, so the export holds the accepted mask only.
    page.fill("#prefill-iou", "0.5")
    page.fill("#prefill-stability", "0.5")
    page.click("#prefill")
    page.wait_for_function("document.querySelectorAll('#mask-list li').length > 1", timeout=180_000)
    masks = page.evaluate(f"fetch('/api/images/{image_id}/masks').then(r => r.json())")
    assert {m["origin"] for m in masks} == {"edited", "prefill"}
    assert {m["review"] for m in masks if m["origin"] == "prefill"} == {"proposed"}
    page.select_option("#export-format", "sa1b")
    page.click("#export")
    page.wait_for_selector("body[data-export]")
    folder = project / page.get_attribute("body", "data-export")
    doc = read_sa1b(next(folder.glob("*.json")))
    assert len(doc.annotations) == 1
    coin = next(a for a in doc.annotations if a["label"] == "coin")
    np.testing.assert_array_equal(decode_rle(coin["segmentation"]), decode_rle(saved["rle"]))

    # Select a pre-filled mask, hide it, show it, delete it (Delete asks, Enter confirms).
    count = len(masks)
    page.click("#mask-list li:nth-child(2) .name")
    assert page.evaluate("window.segany.state.selected") == masks[1]["id"]
    page.keyboard.press("h")
    assert "hidden-mask" in page.get_attribute("#mask-list li:nth-child(2)", "class")
    page.keyboard.press("h")
    page.keyboard.press("Delete")
    page.wait_for_selector("#confirm:not([hidden])")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelectorAll('#mask-list li').length === {count - 1}")
    left = page.evaluate(f"fetch('/api/images/{image_id}/masks').then(r => r.json())")
    assert masks[1]["id"] not in {m["id"] for m in left}

    # Done: the image is annotated and the progress says so.
    page.keyboard.press("d")
    page.wait_for_function("document.getElementById('progress-text').textContent"
                           ".startsWith('1 annotated')")  # fmt: skip


def _coins_decoded_on_the_server(browser, url: str, errors: list[str], folder: Path):
    """A page on a server that decodes (the in-browser decoder off), the coins uploaded and
    embedded: (page, the uploaded file)."""
    page = open_page(browser, url, errors)
    assert page.get_attribute("body", "data-decoder") == "server"
    image_file = folder / "coins.png"
    image_file.write_bytes(coins_png())
    page.set_input_files("#upload", str(image_file))
    page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
    return page, image_file


def test_a_server_that_refines_decodes_the_pages_clicks(browser, tmp_path_factory, tmp_path):
    """`segany serve --refine`: the page decodes on the server, whose masks are refined."""
    from segany.masks import decode_rle

    root = tmp_path_factory.mktemp("refine")
    errors: list[str] = []
    with _serve(root, "--refine") as (url, _):
        page, _ = _coins_decoded_on_the_server(browser, url, errors, tmp_path)
        sx, sy = canvas_point(page, *COIN)
        page.mouse.click(sx, sy)
        page.wait_for_function("window.segany.state.current !== null", timeout=30_000)
        # What the page decodes is the refined answer, not the model's own.
        page_areas, refined, plain = page.evaluate(
            """async (coin) => {
              const id = window.segany.state.image.id;
              const ask = (refine) => fetch(`/api/images/${id}/decode`, {method: 'POST',
                headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({points: [coin], labels: [1], refine})})
                .then(r => r.json());
              const got = await window.segany.decode(
                {points: [coin], labels: [1], box: null}, true);
              return [got.map(o => o.mask.reduce((a, b) => a + b, 0)),
                      (await ask(true)).masks, (await ask(false)).masks];
            }""",
            list(COIN),
        )
        refined_areas = [int(decode_rle(r).sum()) for r in refined]
        plain_areas = [int(decode_rle(r).sum()) for r in plain]
        assert page_areas == refined_areas != plain_areas
        page.close()
    assert not errors, errors


def test_a_server_that_zooms_corrections_gets_their_crop_back_from_the_page(
    browser, tmp_path_factory, tmp_path
):
    """`segany serve --zoom-clicks`: the page decodes on the server and sends each answer's
    crop (logits_frame) back with its logits, so its masks are ZoomPredictor's."""
    from segany import Predictor, load_model
    from segany.formats import read_image
    from segany.zoom import ZoomPredictor

    root = tmp_path_factory.mktemp("zoom")
    errors: list[str] = []
    clicks = [((330, 250), "left"), ((342, 260), "right"), ((320, 245), "left")]  # a small coin
    with _serve(root, "--zoom-clicks") as (url, _):
        page, image_file = _coins_decoded_on_the_server(browser, url, errors, tmp_path)
        frames = []
        for k, ((x, y), button) in enumerate(clicks):
            page.mouse.click(*canvas_point(page, x, y), button=button)
            page.wait_for_function(f"window.segany.state.decodes >= {k + 1}", timeout=30_000)
            frames.append(page.evaluate("window.segany.state.previousFrame"))
        points, labels, mask = page.evaluate(
            "(() => { const s = window.segany.state;"
            " return [s.prompt.points, s.prompt.labels, Array.from(s.current)]; })()"
        )
        page.close()
    assert not errors, errors
    assert labels == [1, 0, 1]
    assert frames[0] is None and frames[1] is not None  # corrections came back with a crop
    zoom = ZoomPredictor(Predictor(load_model(), cache=False), None, click_margin=1.0)
    image = read_image(image_file)
    zoom.set_image(image)
    first = zoom.predict(np.array(points[:1]), np.array(labels[:1]))
    feed = first.logits[int(np.argmax(first.scores))][None]
    for n in (2, 3):
        pts, lab = np.array(points[:n]), np.array(labels[:n])
        out = zoom.predict(pts, lab, mask_input=feed, multimask_output=False)
        feed = out.logits
        assert frames[n - 1] == list(zoom.crop)
    want = out.masks[0]
    got = np.array(mask, dtype=bool).reshape(want.shape)
    assert want.sum() > 100 and (got != want).sum() <= 4  # float noise at the threshold only
