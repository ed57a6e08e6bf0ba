"""The app keeps one Predictor per image across clicks: the encoder runs once per image and the
decoder's image-side projections (``PointDecoder``) are made once per image, not per click."""

# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from tests.server_fixtures import click, make_client, png_bytes, tiny, upload  # noqa: E402, F401

CLICKS: list[dict[str, Any]] = [
    {"points": [[150, 100]], "labels": [1]},
    {"points": [[150, 100], [300, 250]], "labels": [1, 0]},
    {"box": [100, 50, 250, 200], "multimask": False},
]


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times the image encoder ran and ``PointDecoder`` was built (the per-image
    projections), counted where the Predictor calls them."""
    from segany.inference import predictor

    seen = {"encoder": 0, "projections": 0}
    encode, point_decoder = predictor.encode, predictor.PointDecoder

    def counted_encode(*args: Any, **kwargs: Any) -> Any:
        seen["encoder"] += 1
        return encode(*args, **kwargs)

    def counted_point_decoder(*args: Any, **kwargs: Any) -> Any:
        seen["projections"] += 1
        return point_decoder(*args, **kwargs)

    monkeypatch.setattr(predictor, "encode", counted_encode)
    monkeypatch.setattr(predictor, "PointDecoder", counted_point_decoder)
    return seen


def _scene(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.full((120, 160, 3), 30, np.uint8)
    y, x = rng.integers(10, 60, 2)
    image[y : y + 40, x : x + 60] = rng.integers(120, 255, 3)
    return png_bytes(image)


def test_clicks_on_an_image_reuse_its_predictor(tmp_path, tiny, counts):
    client = make_client(tmp_path / "p", tiny, cache=False)
    first = upload(client)
    second = upload(client, _scene(1), "second.png")
    answers = [click(client, first["id"], **body) for body in CLICKS]
    assert counts == {"encoder": 1, "projections": 1}
    for body in CLICKS:
        click(client, second["id"], **body)
    assert counts == {"encoder": 2, "projections": 2}  # the second image gets its own
    # Back to the first image: its Predictor was kept, and it answers as it did.
    assert click(client, first["id"], **CLICKS[0]) == answers[0]
    assert counts == {"encoder": 2, "projections": 2}


def test_the_predictors_kept_are_bounded(tmp_path, tiny, counts):
    from segany.server.sessions import IMAGES_KEPT

    client = make_client(tmp_path / "p", tiny, cache=False)
    images = [upload(client, _scene(i), f"{i}.png") for i in range(IMAGES_KEPT + 1)]
    for image in images:
        click(client, image["id"], points=[[60, 50]], labels=[1])
    assert len(client.app.state.segany.hub.sessions) == IMAGES_KEPT
    assert counts["projections"] == IMAGES_KEPT + 1
    # The first image's Predictor went first; its embedding is still stored (no encoder run).
    click(client, images[0]["id"], points=[[60, 50]], labels=[1])
    assert counts == {"encoder": IMAGES_KEPT + 1, "projections": IMAGES_KEPT + 2}


def test_concurrent_clicks_share_one_predictor_per_image(tmp_path, tiny, counts):
    client = make_client(tmp_path / "p", tiny, cache=False)
    ids = [upload(client, _scene(i), f"{i}.png")["id"] for i in range(2)]

    def decode(n: int) -> dict[str, Any]:
        body = {"points": [[40 + 10 * (n // 2), 50]], "labels": [1]}
        r = client.post(f"/api/images/{ids[n % 2]}/decode", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(decode, range(8)))
    assert counts == {"encoder": 2, "projections": 2}
    assert together == [decode(n) for n in range(8)]  # the same answers one at a time


def test_a_retrained_version_gets_its_own_predictor(tmp_path, tiny, counts):
    import copy

    client = make_client(tmp_path / "p", tiny, cache=False)
    image = upload(client)
    click(client, image["id"])
    hub = client.app.state.segany.hub
    # A version whose encoder is version 0's (frozen during retraining): same embedding.
    hub.register(1, None, encoder_version=0)
    hub.add_loaded(1, copy.deepcopy(tiny))
    hub.current = 1
    assert click(client, image["id"])["model_version"] == 1
    assert counts == {"encoder": 1, "projections": 2}
    assert len(hub.sessions) == 1  # version 0's Predictor is gone: it decodes no more
