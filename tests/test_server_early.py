"""The app's early-map endpoint (``GET /api/images/ID/early``), which the page's in-browser
SAM-HQ decoder reads beside the embedding: the bytes are the Predictor's early map of the image
(1×h×w×E float32, C order), and a model whose decoder reads the embedding alone answers 404.
The page's use of it is tested in Chromium (tests/test_server_browser_hq.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import seeded_model
from server_fixtures import coins_png, make_client, upload
from test_modeling_hq import SMALL_HQ

from segany import Predictor
from segany.formats import read_image

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")


def test_early_map_bytes_are_the_predictors(tmp_path):
    model = seeded_model(SMALL_HQ).eval()
    client = make_client(tmp_path / "project", model)
    image = upload(client, coins_png())
    r = client.get(f"/api/images/{image['id']}/early")
    assert r.status_code == 200, r.text
    shape = tuple(int(v) for v in r.headers["x-shape"].split(","))
    assert shape == (1, 16, 16, 64)  # 1×h×w×E: SMALL_HQ's grid and ViT width
    got = np.frombuffer(r.content, dtype="<f4").reshape(shape)
    predictor = Predictor(model)
    predictor.set_image(read_image(tmp_path / "project" / image["path"]))
    want = predictor.get_early_features().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    # the embedding beside it is the one the decoder reads with it
    emb = client.get(f"/api/images/{image['id']}/embedding")
    emb_want = predictor.get_image_embedding().numpy()
    assert (
        np.abs(np.frombuffer(emb.content, "<f4") - emb_want.ravel()).max()
        <= 1e-5 * np.abs(emb_want).max()
    )


def test_a_sam_model_has_no_early_map(tmp_path):
    from helpers import SMALL

    torch.manual_seed(0)
    client = make_client(tmp_path / "project", seeded_model(SMALL).eval())
    image = upload(client, coins_png())
    r = client.get(f"/api/images/{image['id']}/early")
    assert r.status_code == 404
    assert "only SAM-HQ" in r.json()["detail"]
