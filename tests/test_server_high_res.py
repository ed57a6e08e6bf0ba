"""The app's high-resolution maps endpoint (``GET /api/images/ID/high_res``), which the page's
in-browser SAM 2 decoder reads beside the embedding: the bytes are the decoder's
``high_res_feats_0`` then ``high_res_feats_1`` (float32, C order), unpacked from the
Predictor's packed map of the image, with SAM 2's single-mask stability settings in a header;
a SAM 1 model answers 404, and so does ``/early`` for SAM 2 (naming the route to use). The
page's use of it is tested in Chromium (tests/test_server_browser_sam2.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SMALL, seeded_model
from server_fixtures import coins_png, make_client, upload
from test_sam2_onnx import SMALL_SAM2

from segany import Predictor
from segany.formats import read_image
from segany.modeling.hiera.encoder import unpack_high_res

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")


def test_high_res_bytes_are_the_predictors_maps(tmp_path):
    model = seeded_model(SMALL_SAM2).eval()
    client = make_client(tmp_path / "project", model)
    image = upload(client, coins_png())
    r = client.get(f"/api/images/{image['id']}/high_res")
    assert r.status_code == 200, r.text
    shape0 = tuple(int(v) for v in r.headers["x-shape-0"].split(","))
    shape1 = tuple(int(v) for v in r.headers["x-shape-1"].split(","))
    # C = 256: C/8 channels at 4× the 16×16 embedding grid, C/4 at 2×
    assert shape0 == (1, 32, 64, 64) and shape1 == (1, 64, 32, 32)
    assert [float(v) for v in r.headers["x-stability"].split(",")] == [0.05, 0.98]
    data = np.frombuffer(r.content, dtype="<f4")
    assert data.size == np.prod(shape0) + np.prod(shape1)
    got0 = data[: np.prod(shape0)].reshape(shape0)
    got1 = data[np.prod(shape0) :].reshape(shape1)
    predictor = Predictor(model)
    predictor.set_image(read_image(tmp_path / "project" / image["path"]))
    want0, want1 = (m.numpy() for m in unpack_high_res(predictor.get_early_features(), 256))
    for got, want in ((got0, want0), (got1, want1)):
        np.testing.assert_array_equal(got, want)  # same encoder, same pixels: exact
    assert np.abs(want0).max() > 0 and np.abs(want1).max() > 0
    # SAM 2's maps are not an early map: /early names the route to use
    r = client.get(f"/api/images/{image['id']}/early")
    assert r.status_code == 404 and "/high_res" in r.json()["detail"]


def test_a_sam_model_has_no_high_res_maps(tmp_path):
    client = make_client(tmp_path / "project", seeded_model(SMALL).eval())
    image = upload(client, coins_png())
    r = client.get(f"/api/images/{image['id']}/high_res")
    assert r.status_code == 404
    assert "only SAM 2" in r.json()["detail"]
