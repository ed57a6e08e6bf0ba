"""``segany serve --tile`` (issue 39): the app's pre-fill (segment everything) of an image larger
than a tile runs tile by tile with ``segany.tasks.generate_tiled``, as ``segany auto --tile``;
its proposals equal the library call's, the semi-automatic rule applies to them, a smaller
image keeps the whole-image pre-fill, and the settings are checked.

A 300×420 image of bright discs (six 192-px tiles) with the bundled model and a 4×4 grid.
"""

# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from helpers import disc_image  # noqa: E402

from segany import Predictor  # noqa: E402
from segany.automatic import MaskGenerator  # noqa: E402
from segany.automatic.semi import keep_new  # noqa: E402
from segany.errors import InputError  # noqa: E402
from segany.masks import decode_rle  # noqa: E402
from segany.server import ServerSettings  # noqa: E402
from segany.server.proposals import novel  # noqa: E402
from segany.tasks import generate_tiled  # noqa: E402
from tests.server_fixtures import add_mask, make_client, png_bytes, tiny, upload  # noqa: E402, F401

OPTIONS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def _want(model, image: np.ndarray, **tiling) -> list:
    generator = MaskGenerator.for_model(
        Predictor(model, cache=False), **OPTIONS, output_mode="coco_rle"
    )
    return generate_tiled(generator, image, **tiling)


def test_tiled_prefill_equals_generate_tiled_and_keeps_the_semi_rule(tmp_path, tiny):
    image = disc_image(300, 420, 0)
    client = make_client(tmp_path / "project", tiny, prefill_tile=192, prefill_tile_overlap=48)
    row = upload(client, png_bytes(image), "discs.png")
    url = f"/api/images/{row['id']}/prefill"
    got = client.post(url, json=OPTIONS).json()["proposals"]
    # the app proposes a mask once (segany.server.proposals): near-duplicates are left out
    tiled = _want(tiny, image, tile=192, overlap=48)
    want = _novel(tiled, [])
    assert 1 < len(want) < len(tiled)  # several masks, so the order is checked too
    assert [p["rle"] for p in got] == [r.segmentation for r in want]
    assert [p["bbox"] for p in got] == [[int(v) for v in r.bbox] for r in want]
    tiles = tmp_path / "project" / "tiles"  # the run kept its progress there, cleared at the end
    assert tiles.is_dir() and not any(tiles.iterdir())
    # with a mask stored: only what the semi-automatic rule keeps, and no duplicate of it
    stored = add_mask(client, row["id"], got[0]["rle"], origin="prefill")
    annotated = decode_rle(stored["rle"])
    again = client.post(url, json=OPTIONS).json()["proposals"]
    kept = _novel(list(keep_new(tiled, annotated)), [annotated])
    assert kept and [p["rle"] for p in again] == [r.segmentation for r in kept]
    assert got[0]["rle"] not in [p["rle"] for p in again]


def _novel(records: list, existing: list) -> list:
    keep = novel([r.mask() for r in records], existing)
    return [r for r, new in zip(records, keep, strict=True) if new]


def test_an_image_within_a_tile_keeps_the_whole_image_prefill(tmp_path, tiny):
    image = disc_image(150, 180, 1)
    tiled = make_client(tmp_path / "tiled", tiny, prefill_tile=192)
    plain = make_client(tmp_path / "plain", tiny)
    got = []
    for client in (tiled, plain):
        row = upload(client, png_bytes(image), "small.png")
        r = client.post(f"/api/images/{row['id']}/prefill", json=OPTIONS)
        got.append([p["rle"] for p in r.json()["proposals"]])
    assert got[0] and got[0] == got[1]


def test_tile_settings_are_checked(tmp_path):
    with pytest.raises(InputError, match="tile side must be ≥ 0"):
        ServerSettings(project_dir=tmp_path, prefill_tile=-1)
    with pytest.raises(InputError, match="overlap goes with a pre-fill tile side"):
        ServerSettings(project_dir=tmp_path, prefill_tile_overlap=10)
    with pytest.raises(InputError, match="overlap must be ≥ 0"):
        ServerSettings(project_dir=tmp_path, prefill_tile=0, prefill_tile_overlap=-3)


def test_serve_command_refuses_an_overlap_without_tiles(tmp_path, capsys):
    from segany.cli import main

    assert main(["serve", str(tmp_path / "p"), "--tile-overlap", "10"]) == 2
    assert "--tile-overlap goes with --tile" in capsys.readouterr().err
