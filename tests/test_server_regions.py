"""Clicks made zoomed into a large image (issue 36): the page sends its view with the click and
the server answers on tile embeddings at the view's scale (``segany.tasks.regions``), cached per
tile in memory and in the project's embedding cache; masks come back at the image's size."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from segany.masks import decode_rle
from segany.tasks.tiles import tile_frames
from tests.server_fixtures import make_client, png_bytes, tiny  # noqa: F401

H, W = 1536, 2048  # 5.3 times the bundled model's 384 px on the long side


def comb(teeth: int = 9, tooth: int = 8, gap: int = 12, length: int = 120, body: int = 40):
    """A flat scene with one comb: a bar and thin teeth ``tooth`` px wide, ``gap`` px apart
    (a tooth is 1.5 px and a gap 2 px where the whole image is seen at 384 px). Returns the
    image H×W×3, the comb's mask H×W and a click on its bar (x, y)."""
    image = np.empty((H, W, 3), np.uint8)
    image[...] = (190, 200, 185)
    truth = np.zeros((H, W), bool)
    width = teeth * tooth + (teeth - 1) * gap
    x0, y0 = W // 2 - width // 2, H // 2
    truth[y0 : y0 + body, x0 : x0 + width] = True
    for t in range(teeth):
        x = x0 + t * (tooth + gap)
        truth[y0 + body : y0 + body + length, x : x + tooth] = True
    image[truth] = (40, 60, 150)
    return image, truth, (W // 2, y0 + body // 2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def best(answer: dict) -> np.ndarray:
    """The mask of the highest score (what the page shows after a first click)."""
    k = int(np.argmax(answer["scores"]))
    return decode_rle(answer["masks"][k]).astype(bool)


@pytest.fixture
def served(tmp_path, tiny):  # noqa: F811
    image, truth, point = comb()
    client = make_client(
        tmp_path / "project", tiny, max_upload_bytes=4_000_000, max_pixels=4_000_000
    )
    r = client.post("/api/images", files={"file": ("comb.png", png_bytes(image), "image/png")})
    assert r.status_code == 201, r.text
    return client, r.json()["id"], truth, point, tmp_path / "project"


def view_around(point, side: float) -> list[float]:
    return [point[0] - side / 2, point[1] - side / 2, point[0] + side / 2, point[1] + side / 2]


def decode(client, image_id: int, **body) -> dict:
    r = client.post(f"/api/images/{image_id}/decode", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_zoomed_click_is_answered_on_its_regions_tile_with_finer_masks(served, tiny):  # noqa: F811
    client, image_id, truth, point, _ = served
    hub = client.app.state.segany.hub
    click = {"points": [list(point)], "labels": [1]}
    whole = decode(client, image_id, **click)
    assert whole["logits_frame"] is None
    runs = hub.tile_runs
    zoomed = decode(client, image_id, **click, view=view_around(point, 300))
    assert hub.tile_runs == runs + 1  # one tile encoded for it

    # The answer came from a tile of the library's tiling (384 px, the model's size) that holds
    # the click, and its masks are at the image's full size.
    frame = tuple(zoomed["logits_frame"])
    assert frame in tile_frames((H, W), 384, 96)
    assert frame[0] <= point[0] < frame[2] and frame[1] <= point[1] < frame[3]
    assert all(m["size"] == [H, W] for m in zoomed["masks"])

    # Finer: the teeth and gaps are seen at full resolution on the tile, so the tile's masks
    # follow the comb more closely than any of the whole image's. The best of each answer's
    # three masks is compared: a click on the bar is a part or the whole, and which of the two
    # the model scores first is its own choice (v7 ranked the comb first, v8 the bar). Measured,
    # bundled model: the tile's best 0.642 against the whole image's 0.509 (v7 0.721 / 0.477).
    def closest(answer: dict) -> float:
        return max(iou(decode_rle(m).astype(bool), truth) for m in answer["masks"])

    fine, coarse = closest(zoomed), closest(whole)
    assert fine >= coarse + 0.1, (fine, coarse)
    assert best(zoomed)[: frame[1]].sum() == 0  # nothing outside the tile

    # The library gives the same answer (the server holds no segmentation logic of its own).
    from segany.inference.predictor import Predictor
    from segany.tasks.regions import RegionPredictor

    regions = RegionPredictor(Predictor(tiny, cache=False))
    regions.set_image(comb()[0])
    lib = regions.predict(view_around(point, 300), [list(point)], [1])
    assert lib is not None and regions.frame == frame
    assert np.allclose(lib.scores, zoomed["scores"], atol=1e-4)
    assert np.array_equal(lib.masks[int(np.argmax(lib.scores))], best(zoomed))

    # A correction with the logits and their frame is answered on the same tile, which is
    # not encoded again; so is a new object clicked in the same view.
    k = int(np.argmax(zoomed["scores"]))
    s = zoomed["low_res_logits"]["shape"][1]
    logits = np.frombuffer(base64.b64decode(zoomed["low_res_logits"]["data"]), "<f4")
    feed = logits.reshape(-1, s, s)[k : k + 1]
    mask_input = {"shape": [1, s, s], "data": base64.b64encode(feed.tobytes()).decode()}
    gap = [point[0] + 10, point[1] + 60]  # between two teeth: a negative click
    fixed = decode(
        client,
        image_id,
        points=[list(point), gap],
        labels=[1, 0],
        mask_input=mask_input,
        mask_input_frame=list(frame),
        multimask=False,
        view=view_around(point, 300),
    )
    assert tuple(fixed["logits_frame"]) == frame and len(fixed["masks"]) == 1
    decode(client, image_id, points=[[point[0] - 40, point[1] + 50]], labels=[1],
           view=view_around(point, 300))  # fmt: skip
    assert hub.tile_runs == runs + 1

    # A view of about the whole image is answered on the whole image's embedding, as no view.
    again = decode(client, image_id, **click, view=[0, 0, W, H])
    assert again["logits_frame"] is None and again["scores"] == whole["scores"]


def test_a_correction_that_leaves_its_tile_moves_with_its_mask(served):
    client, image_id, _, point, _ = served
    view = view_around(point, 300)
    first = decode(client, image_id, points=[list(point)], labels=[1], view=view)
    frame = first["logits_frame"]
    k = int(np.argmax(first["scores"]))
    s = first["low_res_logits"]["shape"][1]
    feed = np.frombuffer(base64.b64decode(first["low_res_logits"]["data"]), "<f4")
    feed = feed.reshape(-1, s, s)[k : k + 1]
    outside = [frame[2] + 30, point[1]]  # a positive click right of the tile
    moved = decode(
        client,
        image_id,
        points=[list(point), outside],
        labels=[1, 1],
        mask_input={"shape": [1, s, s], "data": base64.b64encode(feed.tobytes()).decode()},
        mask_input_frame=frame,
        multimask=False,
        view=view,
    )
    x0, y0, x1, y1 = moved["logits_frame"]
    assert moved["logits_frame"] != frame
    for x, y in (point, outside):
        assert x0 <= x < x1 and y0 <= y < y1


def test_tile_embeddings_are_kept_on_disk_across_a_restart(served, tiny, monkeypatch):  # noqa: F811
    client, image_id, _, point, folder = served
    click = {"points": [list(point)], "labels": [1], "view": view_around(point, 300)}
    first = decode(client, image_id, **click)
    client.close()

    # A new server on the project: the whole image's embedding and the tile's are on disk, so
    # the encoder never runs.
    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran: a cached embedding was not used")

    monkeypatch.setattr(type(tiny.image_encoder), "forward", no_encoder)
    again = make_client(folder, tiny, max_upload_bytes=4_000_000, max_pixels=4_000_000)
    second = decode(again, image_id, **click)
    assert second["logits_frame"] == first["logits_frame"]
    assert second["scores"] == pytest.approx(first["scores"], abs=1e-5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"view": [0, 0, 0, 10]}, "x0 < x1"),
        ({"view": [1, 2, 3]}, "4 finite numbers"),
        ({"view": [5000, 5000, 6000, 6000]}, "does not overlap"),
        (
            {
                "view": [900, 700, 1200, 1000],
                "mask_input_frame": [0, 0, 5000, 10],
                "mask_input": {"shape": [1, 192, 192], "data": ""},
            },
            "not a region",
        ),
    ],
)
def test_bad_views_and_frames_get_a_clear_400(served, body, message):
    client, image_id, _, point, _ = served
    if "mask_input" in body:
        zeros = np.zeros((1, 192, 192), "<f4").tobytes()
        body["mask_input"]["data"] = base64.b64encode(zeros).decode()
    r = client.post(
        f"/api/images/{image_id}/decode", json={"points": [list(point)], "labels": [1], **body}
    )
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]


def test_a_refined_region_answer_stays_in_its_tile(served):
    """``refine``: the tile's masks are snapped to the image's edges within the tile (the
    rest of a large image is not filtered)."""
    client, image_id, truth, point, _ = served
    view = view_around(point, 300)
    plain = decode(client, image_id, points=[list(point)], labels=[1], view=view)
    refined = decode(client, image_id, points=[list(point)], labels=[1], view=view, refine=True)
    x0, y0, x1, y1 = refined["logits_frame"]
    assert refined["logits_frame"] == plain["logits_frame"]
    mask = best(refined)
    assert mask.any() and mask.sum() == mask[y0:y1, x0:x1].sum()
    assert iou(mask, best(plain)) > 0.5  # the same object, its edges moved
