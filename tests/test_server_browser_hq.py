"""End to end in Chromium with a SAM-HQ model (`segany serve --model sam_hq.pth`): the page's
in-browser decoder (onnxruntime-web on SAM-HQ's ONNX export) reads the early map the server
sends beside the embedding, and answers every prompt as the server's decode does: one mask
(SAM's chosen output plus the HQ mask) with the same score. A decoder whose inputs the page
cannot feed is refused by name when it loads, so the page decodes on the server (SAM 2's
high-resolution maps it feeds: tests/test_server_browser_sam2.py).

The model is a small seeded SAM-HQ (tests/test_modeling_hq.py's SMALL_HQ, 256-px input, early
map 1×16×16×64); the early map of the released sam_hq_vit_b is 1×64×64×768 floats, 12.6 MB
per image beside the 4.2 MB embedding (2.6 MB for sam_hq_vit_tiny).
"""

# ruff: noqa: F811 - pytest fixtures imported from tests.test_server_browser are test arguments

from __future__ import annotations

import pytest
import torch

from tests.server_fixtures import coins_png
from tests.test_server_browser import (  # noqa: F401
    COIN,
    PARITY,
    _serve,
    browser,
    canvas_point,
    open_page,
)

pytestmark = pytest.mark.slow  # a server in a subprocess and Chromium, ~1 min


@pytest.fixture(scope="module")
def hq_server(tmp_path_factory):
    from helpers import seeded_model
    from test_modeling_hq import SMALL_HQ

    root = tmp_path_factory.mktemp("hq_app")
    weights = root / "sam_hq_small.pth"
    torch.save(seeded_model(SMALL_HQ).state_dict(), weights)  # the official format
    with _serve(root, "--model", str(weights)) as running:
        yield running


def test_sam_hq_decodes_in_the_browser_as_on_the_server(hq_server, browser, tmp_path):
    url, _ = hq_server
    errors: list[str] = []
    page = open_page(browser, url, errors)
    assert page.get_attribute("body", "data-decoder") == "browser"
    assert page.evaluate("window.segany.state.decoder.needsEarly")
    image_file = tmp_path / "coins.png"
    image_file.write_bytes(coins_png())
    page.set_input_files("#upload", str(image_file))
    page.wait_for_function("window.segany.state.embedding !== null", timeout=120_000)
    shape, size = page.evaluate(
        "[window.segany.state.embedding.early.shape, window.segany.state.embedding.early.data"
        ".length]"
    )
    assert shape == [1, 16, 16, 64] and size == 16 * 16 * 64

    prompts = [
        ({"points": [list(COIN)], "labels": [1], "box": None}, True),
        ({"points": [list(COIN)], "labels": [1], "box": None}, False),
        ({"points": [list(COIN), [300, 250]], "labels": [1, 0], "box": None}, True),
        ({"points": [], "labels": [], "box": [120, 60, 200, 150]}, False),
    ]
    for prompt, multimask in prompts:
        answers = page.evaluate(PARITY, [prompt, multimask])
        assert len(answers) == 1, (prompt, multimask)  # SAM-HQ: one mask per prompt
        for iou, score_browser, score_server, union in answers:
            assert union > 0 and iou >= 0.99, (prompt, multimask, iou)
            assert abs(score_browser - score_server) < 1e-3

    # A click and a correction (the first answer's logits fed back with the second point).
    sx, sy = canvas_point(page, *COIN)
    page.mouse.click(sx, sy)
    page.wait_for_function("window.segany.state.current !== null", timeout=30_000)
    assert page.evaluate("window.segany.state.outputs.length") == 1
    decodes = page.evaluate("window.segany.state.decodes")
    page.mouse.click(*canvas_point(page, COIN[0] + 30, COIN[1]), button="right")
    page.wait_for_function(f"window.segany.state.decodes > {decodes}", timeout=30_000)
    assert page.evaluate("window.segany.state.prompt.labels") == [1, 0]
    assert page.evaluate("window.segany.state.outputs.length") == 1
    page.close()
    assert not errors, errors


REFUSED = """async () => {
  const { BrowserDecoder } = await import('/static/decoder.js');
  try {
    await BrowserDecoder.load('/unknown-input-decoder.onnx');
    return 'loaded';
  } catch (error) {
    return error.message;
  }
}"""


def test_a_decoder_with_inputs_the_page_cannot_feed_is_refused(hq_server, browser):
    from onnx import TensorProto, helper

    # An ONNX graph with an input no decoder the page knows has: the page must not load it as
    # its decoder (SAM 2's high_res_feats_0/1 it now feeds, tests/test_server_browser_sam2.py).
    graph = helper.make_graph(
        [helper.make_node("Identity", ["dense_prompt_embeddings"], ["masks"])],
        "unknown_input",
        [helper.make_tensor_value_info("dense_prompt_embeddings", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    url, _ = hq_server
    errors: list[str] = []
    page = open_page(browser, url, errors)
    page.route(
        "**/unknown-input-decoder.onnx",
        lambda route: route.fulfill(body=model.SerializeToString(), status=200),
    )
    message = page.evaluate(REFUSED)
    assert message == "the page cannot feed the decoder's dense_prompt_embeddings"
    page.close()
    assert not errors, errors
