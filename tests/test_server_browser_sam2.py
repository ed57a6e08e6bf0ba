"""End to end in Chromium with a SAM 2.1 model (`segany serve --model sam2.safetensors`): the
page's in-browser decoder (onnxruntime-web on SAM 2's ONNX export, segany.export.decoder_sam2)
reads the two high-resolution maps the server sends beside the embedding
(`/api/images/ID/high_res`) and answers every prompt as the server's decode does: the same
masks (up to a pixel or two whose logit lies at the 0 threshold) and scores within 1e-4,
SAM 2's single-mask choice included; a click is then decoded in the page, with no decode
request to the server.

The model is a small seeded SAM 2.1 (tests/test_sam2_onnx.py's SMALL_SAM2, 256-px frame: the
maps are 1×32×64×64 and 1×64×32×32). The 384×303 coins photo is larger than that frame, so its
masks are made in the page from the low-res logits (one bilinear resize, as SAM 2 does); a
160×120 crop of it is decoded at its own size by the decoder.
"""

# ruff: noqa: F811 - pytest fixtures imported from tests.test_server_browser are test arguments

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.server_fixtures import coins_png, png_bytes
from tests.test_server_browser import (  # noqa: F401
    COIN,
    _serve,
    browser,
    canvas_point,
    open_page,
)

pytestmark = pytest.mark.slow  # a server in a subprocess and Chromium, ~1 min

# Browser and server decodes of one prompt: per output, the pixels where the masks differ,
# the mask's area, and both scores.
PARITY = """async ([prompt, multimask]) => {
  const a = await window.segany.decode(prompt, multimask, 'browser');
  const b = await window.segany.decode(prompt, multimask, 'server');
  if (a.length !== b.length) return `browser ${a.length} outputs, server ${b.length}`;
  return a.map((o, k) => {
    let differ = 0, area = 0;
    for (let i = 0; i < o.mask.length; i++) {
      differ += o.mask[i] !== b[k].mask[i] ? 1 : 0; area += b[k].mask[i];
    }
    return [differ, area, o.score, b[k].score];
  });
}"""

# The same with the first answer's low-res logits fed back (a correction's mask input).
PARITY_FED_BACK = """async ([prompt, second]) => {
  const first = await window.segany.decode(prompt, true, 'browser');
  const fed = { ...second, maskInput: first[0].lowRes };
  const a = await window.segany.decode(fed, false, 'browser');
  const b = await window.segany.decode(fed, false, 'server');
  let differ = 0, area = 0;
  for (let i = 0; i < a[0].mask.length; i++) {
    differ += a[0].mask[i] !== b[0].mask[i] ? 1 : 0; area += b[0].mask[i];
  }
  return [[differ, area, a[0].score, b[0].score]];
}"""


@pytest.fixture(scope="module")
def sam2_server(tmp_path_factory):
    from helpers import seeded_model
    from test_sam2_onnx import SMALL_SAM2

    from segany.checkpoints.loading import save_state_dict

    root = tmp_path_factory.mktemp("sam2_app")
    weights = save_state_dict(
        SMALL_SAM2, seeded_model(SMALL_SAM2).state_dict(), root / "sam2.safetensors", "segany"
    )
    with _serve(root, "--model", str(weights)) as running:
        yield running


def _check(answers, what) -> None:
    assert not isinstance(answers, str), (what, answers)
    for differ, area, score_browser, score_server in answers:
        assert differ <= 2, (what, differ, area)
        assert abs(score_browser - score_server) < 1e-4, (what, score_browser, score_server)


def _open_image(page, path, height: int) -> None:
    """Upload and open an image ``height`` px high; return once its maps are in the page."""
    page.set_input_files("#upload", str(path))
    page.wait_for_function(
        "(h) => { const e = window.segany.state.embedding;"
        " return e !== null && e.originalSize[0] === h && e.highRes !== null; }",
        arg=height,
        timeout=120_000,
    )


def test_sam2_decodes_in_the_browser_as_on_the_server(sam2_server, browser, tmp_path):
    url, _ = sam2_server
    errors: list[str] = []
    page = open_page(browser, url, errors)
    assert page.get_attribute("body", "data-decoder") == "browser"
    assert page.evaluate("window.segany.state.decoder.needsHighRes")
    assert not page.evaluate("window.segany.state.decoder.needsEarly")
    coins = tmp_path / "coins.png"
    coins.write_bytes(coins_png())
    _open_image(page, coins, 303)
    shapes, stability = page.evaluate(
        "[window.segany.state.embedding.highRes.maps.map((m) => [m.shape, m.data.length]),"
        " window.segany.state.embedding.highRes.stability]"
    )
    assert shapes == [[[1, 32, 64, 64], 32 * 64 * 64], [[1, 64, 32, 32], 64 * 32 * 32]]
    assert stability == [0.05, 0.98]

    prompts = [
        ({"points": [list(COIN)], "labels": [1], "box": None}, True),
        ({"points": [list(COIN)], "labels": [1], "box": None}, False),
        ({"points": [list(COIN), [300, 250]], "labels": [1, 0], "box": None}, True),
        ({"points": [list(COIN), [300, 250]], "labels": [1, 0], "box": None}, False),
        ({"points": [], "labels": [], "box": [120, 60, 200, 150]}, False),
        ({"points": [[180, 120]], "labels": [1], "box": [120, 60, 200, 150]}, False),
    ]
    answers = {}
    for prompt, multimask in prompts:
        answers[str((prompt, multimask))] = got = page.evaluate(PARITY, [prompt, multimask])
        _check(got, (prompt, multimask))
        assert len(got) == (3 if multimask else 1)
    # the masks compared are not empty everywhere (a seeded model's masks are arbitrary)
    assert sum(a[1] for got in answers.values() for a in got) > 0
    first = {"points": [list(COIN)], "labels": [1], "box": None}
    second = {"points": [list(COIN), [COIN[0] + 30, COIN[1]]], "labels": [1, 0], "box": None}
    _check(page.evaluate(PARITY_FED_BACK, [first, second]), "mask input")

    # A click: decoded in the page, no decode request to the server.
    decode_requests: list[str] = []
    page.on("request", lambda r: decode_requests.append(r.url) if "/decode" in r.url else None)
    decodes = page.evaluate("window.segany.state.decodes")
    page.mouse.click(*canvas_point(page, *COIN))
    page.wait_for_function(f"window.segany.state.decodes > {decodes}", timeout=30_000)
    page.wait_for_function("window.segany.state.current !== null", timeout=30_000)
    assert page.evaluate("window.segany.state.outputs.length") == 3  # a first click: multimask
    page.mouse.click(*canvas_point(page, COIN[0] + 30, COIN[1]), button="right")
    page.wait_for_function(f"window.segany.state.decodes > {decodes + 1}", timeout=30_000)
    assert page.evaluate("window.segany.state.prompt.labels") == [1, 0]
    assert page.evaluate("window.segany.state.outputs.length") == 1
    assert decode_requests == []

    # An image smaller than the 256-px frame: the decoder answers at the image's own size.
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(np.asarray(Image.open(coins).convert("RGB"))[40:160, 80:240]))
    _open_image(page, small, 120)
    assert page.evaluate("window.segany.state.embedding.originalSize") == [120, 160]
    for prompt, multimask in [
        ({"points": [[COIN[0] - 80, COIN[1] - 40]], "labels": [1], "box": None}, True),
        ({"points": [[COIN[0] - 80, COIN[1] - 40]], "labels": [1], "box": None}, False),
        ({"points": [], "labels": [], "box": [30, 20, 120, 100]}, False),
    ]:
        _check(page.evaluate(PARITY, [prompt, multimask]), ("small", prompt, multimask))
    page.close()
    assert not errors, errors
