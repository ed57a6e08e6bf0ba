"""Images above the app's whole-image limit, worked on by windows (segany.server.windows): a
6 MP TIFF in a project whose limit is 1 MP. Whole-image calls are refused with a message that
says what to send; window calls equal the same calls on the window cut out as its own image;
masks saved, edited and listed through windows are pasted into, kept in and cut from the
image-sized RLE."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segany.inference.predictor import Predictor
from segany.masks import decode_rle, encode_rle
from tests.server_fixtures import make_client, tiny  # noqa: F401

tifffile = pytest.importorskip("tifffile")

H, W = 2000, 3000
LIMIT = 1_000_000
BOXES = [(400, 300, 700, 520), (1900, 1200, 2300, 1700), (980, 1300, 1300, 1450)]  # XYXY


def scene() -> np.ndarray:
    rng = np.random.default_rng(3)
    image = np.empty((H, W, 3), np.uint8)
    image[...] = (185, 190, 180)
    image += rng.integers(0, 12, (H, W, 1), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(BOXES):
        image[y0:y1, x0:x1] = [(40, 60, 150), (150, 40, 40), (30, 130, 60)][k]
    return image


@pytest.fixture
def project(tmp_path, tiny):  # noqa: F811
    image = scene()
    folder = tmp_path / "project"
    client = make_client(folder, tiny, max_upload_bytes=32 * 2**20, max_pixels=LIMIT)
    tifffile.imwrite(folder / "images" / "scan.tif", image, photometric="rgb")
    r = client.post("/api/images/import", json={"folder": "images"})
    assert r.status_code == 200, r.text
    (row,) = r.json()["images"]
    assert (row["width"], row["height"]) == (W, H)
    return client, row["id"], image


def project_folder(client) -> Path:
    from segany.server.state import state_of

    return state_of(client).project.root  # type: ignore[no-any-return]


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_whole_image_calls_are_refused_and_say_what_to_send(project) -> None:
    client, image_id, _ = project
    assert client.get("/api/project").json()["max_large_pixels"] >= W * H
    for r in (
        client.get(f"/api/images/{image_id}/file"),
        client.get(f"/api/images/{image_id}/embedding"),
        client.post(f"/api/images/{image_id}/decode", json={"points": [[10, 10]], "labels": [1]}),
        client.post(f"/api/images/{image_id}/prefill", json={}),
    ):
        assert r.status_code == 400, r.text
        assert "window" in r.json()["detail"] and str(LIMIT) in r.json()["detail"]
    too_big = client.get(f"/api/images/{image_id}/file", params={"window": "0,0,1001,1000"})
    assert too_big.status_code == 400 and "more than" in too_big.json()["detail"]
    outside = client.get(f"/api/images/{image_id}/file", params={"window": "2900,0,3100,10"})
    assert outside.status_code == 400 and "inside" in outside.json()["detail"]
    for params in ({"window": "a,b"}, {"window": "1,2,3"}, {"scale": 0}, {"scale": 3001}):
        bad = client.get(f"/api/images/{image_id}/file", params=params)
        assert bad.status_code == 400, (params, bad.text)


def test_windows_and_overviews_of_the_file(project) -> None:
    client, image_id, image = project
    r = client.get(f"/api/images/{image_id}/file", params={"window": "1800,1100,2600,1900"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(png(r.content), image[1100:1900, 1800:2600])
    overview = np.asarray(Image.fromarray(image).reduce(4))  # block means
    for _ in range(2):  # computed, then kept in the project
        r = client.get(f"/api/images/{image_id}/file", params={"scale": 4})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        np.testing.assert_array_equal(png(r.content), overview)
    assert len(list((project_folder(client) / "overviews").iterdir())) == 1
    r = client.get(f"/api/images/{image_id}/file", params={"scale": 2, "window": "0,0,2000,2000"})
    np.testing.assert_array_equal(png(r.content), Image.fromarray(image[:2000, :2000]).reduce(2))


def test_a_window_is_answered_as_its_own_image(project, tiny) -> None:  # noqa: F811
    client, image_id, image = project
    window = [1800, 1100, 2600, 1900]
    crop = np.ascontiguousarray(image[1100:1900, 1800:2600])
    ref = Predictor(tiny)
    ref.set_image(crop)
    r = client.get(f"/api/images/{image_id}/embedding", params={"window": "1800,1100,2600,1900"})
    assert r.status_code == 200
    got = np.frombuffer(r.content, "<f4").reshape([int(v) for v in r.headers["X-Shape"].split(",")])
    np.testing.assert_array_equal(got, ref.get_image_embedding().numpy())
    assert r.headers["X-Original-Size"] == "800,800"
    body = {"points": [[300, 300]], "labels": [1], "window": window}
    answer = client.post(f"/api/images/{image_id}/decode", json=body).json()
    masks, scores, _ = ref.predict(np.array([[300.0, 300.0]]), np.array([1]))
    assert answer["window"] == window
    assert [m["size"] for m in answer["masks"]] == [[800, 800]] * len(masks)
    for rle, mask in zip(answer["masks"], masks, strict=True):
        np.testing.assert_array_equal(decode_rle(rle), mask)
    np.testing.assert_allclose(answer["scores"], scores, rtol=1e-5)


def test_masks_through_windows(project) -> None:
    client, image_id, _ = project
    # A mask drawn in window A (a square reaching its right edge) is pasted into the image.
    a = [1000, 1000, 1800, 1800]
    piece = np.zeros((800, 800), bool)
    piece[100:300, 500:800] = True
    body = {"rle": encode_rle(piece), "origin": "clicks", "window": a}
    r = client.post(f"/api/images/{image_id}/masks", json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["window"] == a and made["rle"] == encode_rle(piece)
    full = np.zeros((H, W), bool)
    full[1100:1300, 1500:1800] = True
    assert made["area"] == full.sum() and made["bbox"] == [1500, 1100, 299, 199]
    (stored,) = client.get(f"/api/images/{image_id}/masks").json()
    assert stored["rle"]["size"] == [H, W] and stored["window"] is None
    np.testing.assert_array_equal(decode_rle(stored["rle"]), full)
    # Window B overlaps its right half: listed there cut to B; a window away lists nothing.
    b = [1600, 1000, 2400, 1800]
    (seen,) = client.get(
        f"/api/images/{image_id}/masks", params={"window": "1600,1000,2400,1800"}
    ).json()
    np.testing.assert_array_equal(decode_rle(seen["rle"]), full[1000:1800, 1600:2400])
    assert (
        client.get(f"/api/images/{image_id}/masks", params={"window": "0,0,900,900"}).json() == []
    )
    # An edit made in B replaces the mask inside B and keeps it outside.
    edit = np.zeros((800, 800), bool)
    edit[150:250, 0:400] = True
    patch = {"version": seen["version"], "rle": encode_rle(edit), "window": b}
    r = client.patch(f"/api/masks/{made['id']}", json=patch)
    assert r.status_code == 200, r.text
    expect = full.copy()
    expect[1000:1800, 1600:2400] = edit
    np.testing.assert_array_equal(decode_rle(r.json()["rle"]), edit)
    (stored,) = client.get(f"/api/images/{image_id}/masks").json()
    np.testing.assert_array_equal(decode_rle(stored["rle"]), expect)
    assert stored["area"] == expect.sum() and stored["edits"] == 1
    # Shrunk for an overview (a pixel set where any of its block is), whole or in a window.
    (small,) = client.get(f"/api/images/{image_id}/masks", params={"scale": 7}).json()
    padded = np.zeros((-(-H // 7) * 7, -(-W // 7) * 7), bool)
    padded[:H, :W] = expect
    blocks = padded.reshape(padded.shape[0] // 7, 7, padded.shape[1] // 7, 7).any(axis=(1, 3))
    assert small["rle"] == encode_rle(blocks) and small["area"] == expect.sum()
    (part,) = client.get(
        f"/api/images/{image_id}/masks", params={"window": "1600,1000,2400,1800", "scale": 4}
    ).json()
    in_b = expect[1000:1800, 1600:2400].reshape(200, 4, 200, 4).any(axis=(1, 3))
    assert part["rle"] == encode_rle(in_b)
    for bad in ({"scale": 0}, {"scale": W + 1}, {"window": "0,0,10,10", "scale": 11}):
        r = client.get(f"/api/images/{image_id}/masks", params=bad)
        assert r.status_code == 400, (bad, r.text)
        assert "scale" in r.json()["detail"] or "factor" in r.json()["detail"]

    # A window's mask of the wrong size, and an empty paste, are refused.
    wrong = {"rle": encode_rle(piece[:700]), "origin": "clicks", "window": a}
    assert client.post(f"/api/images/{image_id}/masks", json=wrong).status_code == 400
    empty = {"rle": encode_rle(np.zeros((800, 800), bool)), "origin": "clicks", "window": a}
    r = client.post(f"/api/images/{image_id}/masks", json=empty)
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    # COCO export holds the image-sized mask.
    r = client.post("/api/export", json={"format": "coco"})
    assert r.status_code == 200, r.text


def test_prefill_in_a_window_pastes_its_proposals(project) -> None:
    client, image_id, _ = project
    window = [1800, 1100, 2600, 1900]
    body = {
        "window": window,
        "save": True,
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }
    first = client.post(f"/api/images/{image_id}/prefill", json=body)
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["saved"], "no proposals at thresholds 0"
    for p, saved in zip(out["proposals"], out["saved"], strict=True):
        assert p["rle"]["size"] == [800, 800] and saved["window"] == window
        assert saved["rle"] == p["rle"]
    stored = client.get(f"/api/images/{image_id}/masks").json()
    for m in stored:
        mask = decode_rle(m["rle"])
        assert mask.shape == (H, W)
        assert not mask[:1100].any() and not mask[:, :1800].any()  # inside the window only
        x, y = m["prompts"]["points"][0]
        assert 1800 <= x < 2600 and 1100 <= y < 1900  # the grid point in image pixels
    again = client.post(
        f"/api/images/{image_id}/prefill", json={**body, "save": False, "skip_annotated": False}
    ).json()
    assert again["proposals"] == [] and again["duplicates"] >= len(out["saved"])


def test_large_images_can_be_turned_off(tmp_path, tiny) -> None:  # noqa: F811
    folder = tmp_path / "off"
    client = make_client(
        folder, tiny, max_upload_bytes=32 * 2**20, max_pixels=LIMIT, max_large_pixels=0
    )
    data = io.BytesIO()
    tifffile.imwrite(data, scene()[:1200, :1000], photometric="rgb")
    r = client.post("/api/images", files={"file": ("scan.tif", data.getvalue(), "image/tiff")})
    assert r.status_code == 400 and "over the limit" in r.json()["detail"]
    # and on: the same upload is a large image
    on = make_client(tmp_path / "on", tiny, max_upload_bytes=32 * 2**20, max_pixels=LIMIT)
    r = on.post("/api/images", files={"file": ("scan.tif", data.getvalue(), "image/tiff")})
    assert r.status_code == 201, r.text
    assert (r.json()["width"], r.json()["height"]) == (1000, 1200)
    assert not any(p.name.startswith(".upload") for p in (tmp_path / "on" / "images").iterdir())
    # a PNG that large: refused when large images are off, converted when on
    big = io.BytesIO()
    Image.fromarray(scene()[:1200, :1000]).save(big, "PNG")
    r = client.post("/api/images", files={"file": ("scan.png", big.getvalue(), "image/png")})
    assert r.status_code == 400 and "over the limit" in r.json()["detail"], r.text
    assert not (folder / "large").exists()
    r = on.post("/api/images", files={"file": ("scan.png", big.getvalue(), "image/png")})
    assert r.status_code == 201, r.text
    assert len(list((tmp_path / "on" / "large").iterdir())) == 1


def test_export_polygons_are_found_in_each_masks_box(monkeypatch) -> None:
    """COCO polygons and YOLO lines from the mask cut to its box (as for a large image, whose
    masks are never decoded whole) equal those of the whole mask."""
    from segany.formats.yolo import mask_line
    from segany.server import export_formats
    from segany.server.export_formats import _coco_polygons, _mask_line, coco_polygons

    monkeypatch.setattr(export_formats, "PNG_MAX_PIXELS", 0)  # every mask cut to its box

    rng = np.random.default_rng(5)
    for k in range(30):
        h, w = (int(v) for v in rng.integers(20, 90, 2))
        mask = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            y, x, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, 15)
            yy, xx = np.ogrid[:h, :w]
            mask |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        if k % 5 == 0:
            mask[0, :] = True  # touching the image's edge
        rle = encode_rle(mask)
        assert _coco_polygons(rle) == coco_polygons(mask)
        whole, boxed = mask_line(mask, 3), _mask_line(rle, 3)
        assert (whole is None) == (boxed is None)
        if whole is not None and boxed is not None:
            assert boxed.holes == whole.holes and boxed.class_index == 3
            np.testing.assert_allclose(boxed.points, whole.points, rtol=0, atol=1e-12)


def test_exports_of_a_large_image(project, monkeypatch) -> None:
    from segany.server import export_formats

    client, image_id, _ = project
    piece = np.zeros((800, 800), bool)
    piece[100:300, 500:700] = True
    body = {"rle": encode_rle(piece), "origin": "clicks", "window": [1000, 1000, 1800, 1800]}
    assert client.post(f"/api/images/{image_id}/masks", json=body).status_code == 201
    r = client.post("/api/export", json={"format": "coco", "polygons": True})
    assert r.status_code == 200, r.text
    coco = r.json()
    assert coco["masks"] == 1 and not any("RLE" in w for w in coco["warnings"])
    r = client.post("/api/export", json={"format": "yolo"})
    assert r.status_code == 200 and r.json()["masks"] == 1, r.text
    # PNG maps are image-sized: an image above PNG_MAX_PIXELS is left out, and said so
    monkeypatch.setattr(export_formats, "PNG_MAX_PIXELS", 1_000_000)
    r = client.post("/api/export", json={"format": "png"})
    assert r.status_code == 200, r.text
    assert any("scan.tif" in w and "left out" in w for w in r.json()["warnings"])


def test_windows_are_tiles_of_the_whole_image(project, tiny) -> None:  # noqa: F811
    from segany.tasks.tiles import tile_frames

    client, image_id, _ = project
    grid = client.get(f"/api/images/{image_id}/windows").json()
    side = int(tiny.image_size) * 2  # 768: the largest S·2^k within the 1 MP limit
    assert (grid["side"], grid["overlap"]) == (side, side // 4)
    frames = tile_frames((H, W), side, side // 4)
    assert {(x, y, min(W, x + side), min(H, y + side)) for x in grid["x"] for y in grid["y"]} == (
        set(frames)
    )
    assert client.get("/api/images/999/windows").status_code == 404


def test_a_zoomed_click_in_a_window_is_answered_on_the_whole_images_tiles(
    project,
    tiny,  # noqa: F811
    monkeypatch,
) -> None:
    """The same answer as ``TiledPredictor`` over the whole image with the tiles of
    ``segany segment --tile`` (the model's size, a quarter overlap), cut to the window; the
    correction sent back with its frame continues on that tile."""
    from segany.tasks.tiles import TiledPredictor, tile_frames

    client, image_id, image = project
    grid = client.get(f"/api/images/{image_id}/windows").json()
    side = grid["side"]
    # The window that holds the click (2000, 1300) on the red square (1900..2300, 1200..1700).
    x0 = max(x for x in grid["x"] if x <= 2000 - side // 4)
    y0 = max(y for y in grid["y"] if y <= 1300 - side // 4)
    window = [x0, y0, min(W, x0 + side), min(H, y0 + side)]
    assert x0 < 2000 < window[2] and y0 < 1300 < window[3]
    tiled = TiledPredictor(Predictor(tiny, cache=False))
    tiled.set_image(image)
    # Seen through a view of 300 px: level 0.
    click = [2000.0 - x0, 1300.0 - y0]
    view = [click[0] - 150, click[1] - 150, click[0] + 150, click[1] + 150]
    body = {"points": [click], "labels": [1], "window": window, "view": view}
    r = client.post(f"/api/images/{image_id}/decode", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    (theirs,) = tiled.predict_framed(np.array([[2000.0, 1300.0]]), np.array([1]))
    fx0, fy0, fx1, fy1 = theirs.frame
    # A tile of the whole image, not one of the window's own tiling.
    assert theirs.frame in tiled.frames
    own = tile_frames((window[3] - y0, window[2] - x0), tiled.tile, tiled.overlap)
    assert (fx0 - x0, fy0 - y0, fx1 - x0, fy1 - y0) not in own
    assert answer["logits_frame"] == [fx0 - x0, fy0 - y0, fx1 - x0, fy1 - y0]
    assert answer["window"] == window
    full = theirs.pasted().masks
    for rle, mask in zip(answer["masks"], full, strict=True):
        np.testing.assert_array_equal(decode_rle(rle), mask[y0 : window[3], x0 : window[2]])
    np.testing.assert_allclose(answer["scores"], theirs.scores, rtol=1e-5)

    k = int(np.argmax(answer["scores"]))
    sent = answer["low_res_logits"]
    got = np.frombuffer(base64.b64decode(sent["data"]), "<f4").reshape(sent["shape"])
    np.testing.assert_allclose(got, theirs.logits, rtol=1e-5, atol=1e-5)
    logits = np.ascontiguousarray(got[k : k + 1])
    two = [click, [click[0] + 40, click[1]]]
    fix = {
        **body,
        "points": two,
        "labels": [1, 1],
        "multimask": False,
        "mask_input": {"shape": list(logits.shape), "data": base64.b64encode(logits).decode()},
        "mask_input_frame": answer["logits_frame"],
    }
    r = client.post(f"/api/images/{image_id}/decode", json=fix)
    assert r.status_code == 200, r.text
    again = tiled.predict_on(
        theirs.frame,
        np.array(two) + [x0, y0],
        np.array([1, 1]),
        mask_input=logits,
        multimask_output=False,
    )
    assert r.json()["logits_frame"] == answer["logits_frame"]
    np.testing.assert_array_equal(
        decode_rle(r.json()["masks"][0]), again.masks[0][y0 : window[3], x0 : window[2]]
    )

    # The tiles went to the project's embedding cache under their pixels, as the batch
    # commands' do: a TiledPredictor over the image with that cache encodes nothing.
    from segany.server.state import state_of

    shared = TiledPredictor(Predictor(tiny, cache=state_of(client).hub.embeddings.store))
    shared.set_image(image)

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran: the tile was not in the cache")

    monkeypatch.setattr(tiny.image_encoder, "forward", no_encoder)
    (cached,) = shared.predict_framed(np.array([[2000.0, 1300.0]]), np.array([1]))
    assert cached.frame == theirs.frame
    np.testing.assert_array_equal(cached.pasted().masks, full)
    monkeypatch.undo()

    # A frame that is not a region of the image (once moved out of the window) is refused.
    bad = {**fix, "mask_input_frame": [-5000, 0, 100, 100]}
    r = client.post(f"/api/images/{image_id}/decode", json=bad)
    assert r.status_code == 400 and "not a region" in r.json()["detail"], r.text

    # A view as large as the window is answered on the window's own embedding.
    whole = {**body, "view": [0, 0, window[2] - x0, window[3] - y0]}
    r = client.post(f"/api/images/{image_id}/decode", json=whole)
    assert r.status_code == 200 and r.json()["logits_frame"] is None


def test_a_zoomed_click_on_an_image_longer_than_the_default_side_limit(tmp_path, tiny) -> None:  # noqa: F811
    """The whole image's tiles are read within --max-large-pixels, not the default limits
    (sides up to 32 768 px): a 33 000 × 200 strip."""
    from segany.limits import pixel_limit
    from segany.tasks.tiles import TiledPredictor

    strip = np.full((200, 33_000, 3), 180, np.uint8)
    strip[60:140, 32_700:32_900] = (150, 40, 40)
    folder = tmp_path / "strip"
    client = make_client(folder, tiny, max_upload_bytes=32 * 2**20, max_pixels=LIMIT)
    tifffile.imwrite(folder / "images" / "strip.tif", strip, photometric="rgb")
    (row,) = client.post("/api/images/import", json={"folder": "images"}).json()["images"]
    grid = client.get(f"/api/images/{row['id']}/windows").json()
    x0 = max(x for x in grid["x"] if x <= 32_800 - grid["side"] // 2)
    window = [x0, 0, x0 + grid["side"], 200]
    click = [32_800.0 - x0, 100.0]
    view = [click[0] - 100, 0, click[0] + 100, 200]
    body = {"points": [click], "labels": [1], "window": window, "view": view}
    r = client.post(f"/api/images/{row['id']}/decode", json=body)
    assert r.status_code == 200, r.text
    with pixel_limit(10**9):  # (sides above 32 768 px come with a raised limit)
        tiled = TiledPredictor(Predictor(tiny, cache=False))
        tiled.set_image(strip)
        (theirs,) = tiled.predict_framed(np.array([[32_800.0, 100.0]]), np.array([1]))
    fx0, fy0, fx1, fy1 = theirs.frame
    assert r.json()["logits_frame"] == [fx0 - x0, fy0, fx1 - x0, fy1]
    full = theirs.pasted().masks
    for rle, mask in zip(r.json()["masks"], full, strict=True):
        np.testing.assert_array_equal(decode_rle(rle), mask[:, x0 : window[2]])


def test_a_large_png_or_jpeg_is_converted_once_and_worked_on_by_windows(tmp_path, tiny) -> None:  # noqa: F811
    """A PNG, and a JPEG turned by its EXIF orientation, above the project's limit: imported
    from the folder or uploaded, decoded once into a tiled TIFF in ``large/`` (remade when it
    is removed), and read by windows as a TIFF is."""
    from segany.formats import read_image

    image = scene()
    folder = tmp_path / "photos"
    client = make_client(folder, tiny, max_upload_bytes=32 * 2**20, max_pixels=LIMIT)
    Image.fromarray(image).save(folder / "images" / "scene.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 3000 wide, shown 2000 wide
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", exif=exif, quality=90)
    r = client.post("/api/images/import", json={"folder": "images"})
    assert r.status_code == 200, r.text
    (png_row,) = r.json()["images"]
    r = client.post("/api/images", files={"file": ("turned.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 201, r.text
    jpg_row = r.json()
    assert (png_row["width"], png_row["height"]) == (W, H)
    assert (jpg_row["width"], jpg_row["height"]) == (H, W)
    large = project_folder(client) / "large"
    png_sha = hashlib.sha256((folder / "images" / "scene.png").read_bytes()).hexdigest()
    jpg_sha = hashlib.sha256(buf.getvalue()).hexdigest()
    assert sorted(p.name for p in large.iterdir()) == sorted([f"{png_sha}.tif", f"{jpg_sha}.tif"])
    turned = read_image(project_folder(client) / jpg_row["path"])
    assert turned.shape == (W, H, 3)
    for row, pixels in ((png_row, image), (jpg_row, turned)):
        r = client.get(f"/api/images/{row['id']}/file", params={"window": "100,200,900,1000"})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(png(r.content), pixels[200:1000, 100:900])
    # A window's click is the Predictor's on the window cut out.
    ref = Predictor(tiny)
    ref.set_image(np.ascontiguousarray(turned[200:1000, 100:900]))
    body = {"points": [[300, 300]], "labels": [1], "window": [100, 200, 900, 1000]}
    answer = client.post(f"/api/images/{jpg_row['id']}/decode", json=body).json()
    masks, _, _ = ref.predict(np.array([[300.0, 300.0]]), np.array([1]))
    for rle, mask in zip(answer["masks"], masks, strict=True):
        np.testing.assert_array_equal(decode_rle(rle), mask)
    # The conversion removed: made again from the image at the next read.
    for p in large.iterdir():
        p.unlink()
    r = client.get(f"/api/images/{png_row['id']}/file", params={"window": "0,0,500,500"})
    np.testing.assert_array_equal(png(r.content), image[:500, :500])
    assert (large / f"{png_sha}.tif").is_file()


def test_a_large_non_tiff_over_the_conversion_limit_is_refused(tmp_path, tiny) -> None:  # noqa: F811
    for limit, words in ((3_000_000, "--max-convert-pixels"), (0, "tiff extra")):
        folder = tmp_path / f"limit{limit}"
        client = make_client(
            folder, tiny, max_upload_bytes=32 * 2**20, max_pixels=LIMIT, max_convert_pixels=limit
        )
        data = io.BytesIO()
        Image.fromarray(scene()).save(data, "PNG")
        r = client.post("/api/images", files={"file": ("scene.png", data.getvalue(), "image/png")})
        assert r.status_code == 400 and words in r.json()["detail"], r.text
        assert not (project_folder(client) / "large").exists()
        assert [p.name for p in (folder / "images").iterdir()] == []  # nothing left behind


def test_a_zoomed_click_in_a_window_stays_within_the_apps_limit(project, tiny) -> None:  # noqa: F811
    """The whole image's tiles answer a zoomed click only for prompts inside the window, and
    its mask grows into frames of at most --max-pixels: a click on the background (a mask over
    most of the 6 MP image) stays on a frame within the 1 MP limit, and a box over the whole
    image is answered on the window's embedding. A view outside the window is a 400."""
    from segany.tasks.tiles import TiledPredictor

    client, image_id, image = project
    grid = client.get(f"/api/images/{image_id}/windows").json()
    side = grid["side"]
    x0, y0 = grid["x"][0], grid["y"][0]
    window = [x0, y0, x0 + side, y0 + side]
    click, view = [150.0, 600.0], [100, 550, 200, 650]  # the grey background
    body = {"points": [click], "labels": [1], "window": window, "view": view}
    r = client.post(f"/api/images/{image_id}/decode", json=body)
    assert r.status_code == 200, r.text
    fx0, fy0, fx1, fy1 = r.json()["logits_frame"]
    assert (fx1 - fx0) * (fy1 - fy0) <= LIMIT
    unbounded = TiledPredictor(Predictor(tiny, cache=False))
    unbounded.set_image(image)
    (theirs,) = unbounded.predict_framed(np.array([[click[0] + x0, click[1] + y0]]), [1])
    ux0, uy0, ux1, uy1 = theirs.frame
    assert (ux1 - ux0) * (uy1 - uy0) > LIMIT  # what the bound keeps it from

    whole = {"box": [-x0, -y0, W - x0, H - y0], "window": window, "view": view}
    r = client.post(f"/api/images/{image_id}/decode", json=whole)
    assert r.status_code == 200 and r.json()["logits_frame"] is None, r.text
    away = {**body, "view": [side + 10, 0, side + 100, 90]}
    r = client.post(f"/api/images/{image_id}/decode", json=away)
    assert r.status_code == 400 and "does not overlap" in r.json()["detail"], r.text
