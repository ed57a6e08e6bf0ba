"""The annotation app's JSON API, through FastAPI's test client on the bundled tiny model."""

# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from segany.masks import decode_rle, encode_rle  # noqa: E402
from segany.server import ServerSettings  # noqa: E402
from tests.server_fixtures import (  # noqa: E402, F401
    add_mask,
    click,
    client,
    coins_png,
    db_url,
    make_client,
    png_bytes,
    postgres_url,
    reset_postgres,
    tiny,
    upload,
)


# ----- images -----------------------------------------------------------------------------------
def test_upload_list_file_status(client):
    image = upload(client, name="../../evil name!.png")
    assert image["path"] == "images/evil_name.png"  # base name only, safe characters
    assert (image["width"], image["height"]) == (384, 303)
    listing = client.get("/api/images").json()
    assert listing["counts"] == {"todo": 1, "annotated": 0, "skipped": 0, "reviewed": 0}
    assert listing["next_id"] == image["id"]
    assert client.get(image["url"]).content == coins_png()
    assert client.get(f"/api/images/{image['id']}").json() == image
    r = client.put(f"/api/images/{image['id']}/status", json={"status": "skipped"})
    assert r.json()["status"] == "skipped"
    listing = client.get("/api/images").json()
    assert listing["counts"]["skipped"] == 1 and listing["next_id"] is None
    assert client.put(f"/api/images/{image['id']}/status", json={"status": "x"}).status_code == 422
    # The same file again is the same image, not a copy: 200 (not 201), with its masks.
    square = np.zeros((303, 384), bool)
    square[10:20, 10:30] = True
    add_mask(client, image["id"], encode_rle(square), origin="brush")
    r = client.post("/api/images", files={"file": ("evil name!.png", coins_png(), "image/png")})
    assert r.status_code == 200 and r.json()["id"] == image["id"]
    assert r.json()["masks"] == 1  # was 201 with "masks": 0


def test_import_folder_inside_the_project_only(client, tmp_path):
    folder = tmp_path / "project" / "batch"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(np.full((20, 30, 3), 9, np.uint8)))
    (folder / "broken.png").write_bytes(b"not a png")
    r = client.post("/api/images/import", json={"folder": "batch"})
    assert [im["path"] for im in r.json()["images"]] == ["batch/a.png"]
    assert client.post("/api/images/import", json={"folder": "batch"}).json()["images"] == []
    for trick in ("..", "../..", "/etc", "batch/../../x", "a\\..\\b"):
        r = client.post("/api/images/import", json={"folder": trick})
        assert r.status_code == 400, trick
        assert "project" in r.json()["detail"] or "path" in r.json()["detail"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "project" / "link").symlink_to(outside)
    assert client.post("/api/images/import", json={"folder": "link"}).status_code == 400


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("big.png", b"x" * 500_000, 413, "limit"),
        ("text.png", b"hello, not an image", 400, "not an image"),
        ("script.sh", b"#!/bin/sh", 400, "must end in"),
        ("noext", b"abc", 400, "must end in"),
    ],
)
def test_upload_errors(client, name, data, status, words):
    r = client.post("/api/images", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert not any((client.app.state.segany.project.images).iterdir())


def test_decompression_bomb_refused_from_header(tmp_path, tiny):
    """Above the limit and with large images that are not TIFFs refused (decoded whole to
    convert them, up to --max-convert-pixels: ``test_server_large_images``)."""
    import io

    from PIL import Image

    client = make_client(tmp_path / "project", tiny, max_convert_pixels=0)
    buf = io.BytesIO()
    Image.new("1", (2000, 2000)).save(buf, "PNG")  # 4 M pixels in a few hundred bytes
    assert len(buf.getvalue()) < 10_000
    r = client.post("/api/images", files={"file": ("bomb.png", buf.getvalue(), "image/png")})
    assert r.status_code == 400
    assert "4000000 pixels is over the limit" in r.json()["detail"]


@pytest.mark.parametrize(
    ("orientation", "kind"), [(1, "JPEG"), (3, "JPEG"), (6, "JPEG"), (8, "JPEG"), (6, "TIFF")]
)
def test_a_photo_turned_by_exif_has_the_size_its_masks_have(client, orientation, kind):
    """Phones store a portrait photo as landscape pixels plus an EXIF orientation: the image's
    row has the turned size, as the embedding and the masks (``read_image``) and the browser
    (which applies the orientation) have it."""
    from PIL import Image

    from segany.images import read_image

    pixels = np.zeros((120, 200, 3), np.uint8)
    pixels[20:60, 30:90] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    if kind == "JPEG":
        Image.fromarray(pixels).save(buf, "JPEG", exif=exif, quality=95)
    else:  # a TIFF's orientation is a tag of its own (PIL turns its size when it opens it)
        Image.fromarray(pixels).save(buf, "TIFF", tiffinfo={0x0112: orientation})
    row = upload(client, buf.getvalue(), "portrait.jpg" if kind == "JPEG" else "portrait.tif")
    turned = orientation in (6, 8)
    assert (row["width"], row["height"]) == ((120, 200) if turned else (200, 120))
    path = client.app.state.segany.project.inside(row["path"])
    assert read_image(path).shape[:2] == (row["height"], row["width"])
    answer = click(client, row["id"], points=[[10, 10]], labels=[1])
    assert answer["masks"][0]["size"] == [row["height"], row["width"]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/images/999"),
        ("get", "/api/images/999/file"),
        ("get", "/api/images/999/embedding"),
        ("get", "/api/images/999/masks"),
        ("get", "/api/masks/999"),
        ("get", "/api/train/999"),
        ("get", "/api/exports/nothing.json"),
        ("delete", "/api/masks/999?version=1"),
    ],
)
def test_unknown_ids_are_404_json(client, method, path):
    r = getattr(client, method)(path)
    assert r.status_code == 404 and "detail" in r.json()


def test_export_paths_cannot_leave_the_exports_folder(client):
    for trick in ("../annotations.db", "..%2Fannotations.db", "%2e%2e/annotations.db"):
        r = client.get(f"/api/exports/{trick}")
        assert r.status_code in (400, 404), trick
        assert r.headers["content-type"].startswith("application/json")


# ----- embedding and decode ---------------------------------------------------------------------
def test_embedding_computed_once_and_cached_on_disk(client, tiny, tmp_path):
    image = upload(client)
    hub = client.app.state.segany.hub
    first = client.get(f"/api/images/{image['id']}/embedding")
    again = client.get(f"/api/images/{image['id']}/embedding")
    assert hub.encoder_runs == 1
    assert first.content == again.content
    assert first.headers["x-shape"] == "1,128,48,48"
    assert first.headers["x-original-size"] == "303,384"
    assert first.headers["x-input-size"] == "303,384"
    emb = np.frombuffer(first.content, "<f4").reshape(1, 128, 48, 48)
    from segany import Predictor
    from segany.formats import read_image

    predictor = Predictor(tiny)
    predictor.set_image(read_image(tmp_path / "project" / image["path"]))
    np.testing.assert_allclose(emb, predictor.get_image_embedding().numpy(), atol=1e-5)
    assert len(list((tmp_path / "project" / "embeddings").glob("*.safetensors"))) == 1
    # A restarted server reads it from disk: no encoder run.
    other = make_client(tmp_path / "project", tiny)
    assert other.get(f"/api/images/{image['id']}/embedding").content == first.content
    assert other.app.state.segany.hub.encoder_runs == 0


def test_an_old_projects_npz_embeddings_are_converted_not_recomputed(tmp_path, tiny):
    client = make_client(tmp_path / "project", tiny)
    image = upload(client)
    url = f"/api/images/{image['id']}/embedding"
    want = client.get(url).content
    folder = tmp_path / "project" / "embeddings"
    (entry,) = folder.glob("*.safetensors")
    old = folder / f"{entry.stem}.npz"  # the name and form projects used before

    def make_old_project(data: bytes) -> None:
        old.write_bytes(data)
        for f in folder.glob("*.safetensors"):
            f.unlink()

    buf = io.BytesIO()
    features = np.frombuffer(want, "<f4").reshape(1, 128, 48, 48)
    np.savez(buf, features=features, original=np.array([303, 384]), input=np.array([303, 384]))
    make_old_project(buf.getvalue())
    again = make_client(tmp_path / "project", tiny)
    assert again.get(url).content == want
    assert again.app.state.segany.hub.encoder_runs == 0
    assert sorted(f.name for f in folder.iterdir()) == [entry.name]  # converted, old one gone
    # A damaged old file is removed and the embedding computed again.
    make_old_project(buf.getvalue()[:100])
    third = make_client(tmp_path / "project", tiny)
    emb = np.frombuffer(third.get(url).content, "<f4")
    np.testing.assert_allclose(emb, features.reshape(-1), atol=1e-5)
    assert third.app.state.segany.hub.encoder_runs == 1
    assert sorted(f.name for f in folder.iterdir()) == [entry.name]


def test_precision_embeds_in_that_mode_and_keeps_it_apart_on_disk(tmp_path, tiny):
    from segany import Predictor
    from segany.formats import read_image

    exact = make_client(tmp_path / "project", tiny)
    image = upload(exact)
    fp32 = exact.get(f"/api/images/{image['id']}/embedding").content
    fast = make_client(tmp_path / "project", tiny, precision="int8")
    assert fast.app.state.segany.hub.precision == "int8"
    got = fast.get(f"/api/images/{image['id']}/embedding").content
    assert fast.app.state.segany.hub.encoder_runs == 1  # fp32's file is not int8's
    assert got != fp32
    want = Predictor(tiny, precision="int8")
    want.set_image(read_image(tmp_path / "project" / image["path"]))
    emb = np.frombuffer(got, "<f4").reshape(want.get_image_embedding().shape)
    np.testing.assert_allclose(emb, want.get_image_embedding().numpy(), atol=1e-5)
    names = [f.name for f in (tmp_path / "project" / "embeddings").glob("*.safetensors")]
    assert sorted(n.endswith("-e0-int8.safetensors") for n in names) == [False, True]
    with pytest.raises(ValueError, match="precision must be one of"):
        ServerSettings(project_dir=tmp_path / "x", precision="fp64")


def test_shared_embedding_cache(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("SEGANY_CACHE", str(tmp_path / "env"))
    client = make_client(tmp_path / "a", tiny, cache=str(tmp_path / "shared"))
    client.get(f"/api/images/{upload(client)['id']}/embedding")
    assert len(list((tmp_path / "shared").glob("*.safetensors"))) == 1
    # another project on the same image skips the encoder: the shared cache has it
    from segany.inference import predictor

    runs = []
    encode = predictor.encode
    monkeypatch.setattr(predictor, "encode", lambda *a: runs.append(1) or encode(*a))
    other = make_client(tmp_path / "b", tiny, cache=str(tmp_path / "shared"))
    emb = other.get(f"/api/images/{upload(other)['id']}/embedding")
    assert emb.status_code == 200 and not runs
    off = make_client(tmp_path / "d", tiny, cache=False)
    off.get(f"/api/images/{upload(off)['id']}/embedding")
    assert runs == [1]
    assert not (tmp_path / "env").exists()  # False is off, even with $SEGANY_CACHE set


def test_embedding_memory_is_bounded(tmp_path, tiny):
    client = make_client(tmp_path / "p", tiny, embedding_cache=2)
    for v in range(3):
        image = upload(client, png_bytes(np.full((16, 16, 3), v * 50, np.uint8)), f"{v}.png")
        client.get(f"/api/images/{image['id']}/embedding")
    assert client.app.state.segany.hub.embeddings.in_memory == 2


def test_decode_matches_the_predictor_and_feeds_logits_back(client, tiny, tmp_path):
    from segany import Predictor
    from segany.formats import read_image

    image = upload(client)
    out = click(client, image["id"], points=[[150, 100], [300, 250]], labels=[1, 0])
    assert len(out["masks"]) == 3 and len(out["scores"]) == 3
    assert out["masks"][0]["size"] == [303, 384] and out["model_version"] == 0
    predictor = Predictor(tiny)
    predictor.set_image(read_image(tmp_path / "project" / image["path"]))
    ref = predictor.predict(np.array([[150, 100], [300, 250]]), np.array([1, 0]))
    for rle, mask in zip(out["masks"], ref.masks, strict=True):
        assert (decode_rle(rle) != mask).sum() <= 2  # float noise at the 0 threshold only
    np.testing.assert_allclose(out["scores"], ref.scores, atol=1e-4)
    logits = out["low_res_logits"]
    assert logits["shape"] == [3, 192, 192]
    best = np.frombuffer(base64.b64decode(logits["data"]), "<f4").reshape(3, 192, 192)
    feed = {"shape": [1, 192, 192], "data": base64.b64encode(best[:1].tobytes()).decode()}
    again = click(
        client, image["id"], points=[[150, 100]], labels=[1], mask_input=feed, multimask=False
    )
    assert len(again["masks"]) == 1
    box = click(client, image["id"], box=[100, 50, 250, 200], multimask=False)
    assert len(box["masks"]) == 1


def test_decode_refines_masks_when_asked_or_set_to(client, tiny, tmp_path):
    from segany import Predictor
    from segany.formats import read_image
    from segany.refine import RefinedPredictor

    image = upload(client)
    prompt = {"points": [[150, 100]], "labels": [1], "box": [100, 50, 250, 200]}
    refined = RefinedPredictor(Predictor(tiny))
    refined.set_image(read_image(tmp_path / "project" / image["path"]))
    want = refined.predict(np.array([[150, 100]]), np.array([1]), np.array([100, 50, 250, 200]))
    plain = click(client, image["id"], **prompt)
    asked = click(client, image["id"], **prompt, refine=True)
    for rle, mask in zip(asked["masks"], want.masks, strict=True):
        assert (decode_rle(rle) != mask).sum() <= 2  # float noise at the threshold only
    assert asked["scores"] == plain["scores"]
    assert asked["low_res_logits"] == plain["low_res_logits"]  # the model's, to feed back
    assert any(a != b for a, b in zip(asked["masks"], plain["masks"], strict=True))
    # A server started with refine=True refines unless the request says no.
    server = make_client(tmp_path / "other", tiny, refine=True)
    other = upload(server)
    assert click(server, other["id"], **prompt)["masks"] == asked["masks"]
    assert click(server, other["id"], **prompt, refine=False)["masks"] == plain["masks"]
    # The page then decodes on the server (the in-browser decoder cannot refine).
    summary = server.get("/api/project").json()
    assert summary["refine"] is True and summary["decoder_onnx"] is False
    assert client.get("/api/project").json()["refine"] is False


def _tensor(array: np.ndarray) -> dict:
    arr = np.ascontiguousarray(array, "<f4")
    return {"shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}


def _logits(out: dict) -> np.ndarray:
    t = out["low_res_logits"]
    return np.frombuffer(base64.b64decode(t["data"]), "<f4").reshape(t["shape"])


def test_a_server_that_zooms_corrections_answers_them_as_the_library(tiny, tmp_path):
    """`segany serve --zoom-clicks`: a correction is answered on a crop around its mask, the
    crop comes back as logits_frame and is sent back with the logits, as ZoomPredictor does."""
    from segany import Predictor
    from segany.formats import read_image
    from segany.refine import RefinedPredictor
    from segany.zoom import ZoomPredictor

    server = make_client(tmp_path / "zoom", tiny, zoom_clicks=1.0)
    summary = server.get("/api/project").json()
    assert summary["zoom_clicks"] == 1.0 and summary["decoder_onnx"] is False
    image = upload(server)
    rgb = read_image(tmp_path / "zoom" / image["path"])
    lib = ZoomPredictor(Predictor(tiny, cache=False), None, click_margin=1.0)
    lib.set_image(rgb)

    def same(out, want):
        for rle, mask in zip(out["masks"], want.masks, strict=True):
            assert (decode_rle(rle) != mask).sum() <= 2  # float noise at the 0 threshold only
        np.testing.assert_allclose(out["scores"], want.scores, atol=1e-4)
        np.testing.assert_allclose(_logits(out), want.logits, atol=1e-3)

    pts, labels = [[330, 250]], [1]  # a small coin: its crop is not the image
    first = click(server, image["id"], points=pts, labels=labels)
    want = lib.predict(np.array(pts), np.array(labels))
    same(first, want)
    assert first["logits_frame"] is None  # the first click sees the whole image
    best = int(np.argmax(first["scores"]))
    pts, labels = [[330, 250], [342, 260]], [1, 0]
    body = dict(points=pts, labels=labels, multimask=False)
    second = click(server, image["id"], **body, mask_input=_tensor(_logits(first)[best : best + 1]))
    want = lib.predict(
        np.array(pts),
        np.array(labels),
        mask_input=want.logits[best : best + 1],
        multimask_output=False,
    )
    same(second, want)
    frame = second["logits_frame"]
    assert frame == list(lib.crop) and frame != [0, 0, 384, 303]
    pts, labels = [[330, 250], [342, 260], [320, 245]], [1, 0, 1]
    body = dict(points=pts, labels=labels, multimask=False, mask_input=_tensor(_logits(second)))
    third = click(server, image["id"], **body, mask_input_frame=frame)
    want3 = lib.predict(
        np.array(pts), np.array(labels), mask_input=want.logits, multimask_output=False
    )
    same(third, want3)
    # Without its frame the same logits would be read over the whole image: another answer.
    unframed = click(server, image["id"], **body)
    assert unframed["masks"] != third["masks"]
    # Refined, as RefinedPredictor over ZoomPredictor (the crop's radius).
    refined = click(server, image["id"], **body, mask_input_frame=frame, refine=True)
    lib_refined = RefinedPredictor(ZoomPredictor(Predictor(tiny, cache=False), None, 1.0))
    lib_refined.set_image(rgb)
    feed = lib_refined.predict(np.array(pts[:1]), np.array(labels[:1])).logits[best : best + 1]
    feed = lib_refined.predict(
        np.array(pts[:2]), np.array(labels[:2]), mask_input=feed, multimask_output=False
    ).logits
    want_refined = lib_refined.predict(
        np.array(pts), np.array(labels), mask_input=feed, multimask_output=False
    )
    assert lib_refined.predictor.crop is not None
    assert (decode_rle(refined["masks"][0]) != want_refined.masks[0]).sum() <= 4
    assert refined["masks"] != third["masks"]
    # Frames that are not crops of the image, and frames sent to a server that does not zoom.
    for bad, words in (([0, 0, 500, 10], "not a crop"), ([1, 2, 3], "4 whole pixels")):
        r = server.post(f"/api/images/{image['id']}/decode", json={**body, "mask_input_frame": bad})
        assert r.status_code == 400 and words in r.json()["detail"], r.text
    plain = make_client(tmp_path / "plain", tiny)
    other = upload(plain)
    r = plain.post(f"/api/images/{other['id']}/decode", json={**body, "mask_input_frame": frame})
    assert r.status_code == 400 and "--zoom-clicks" in r.json()["detail"]
    assert plain.get("/api/project").json()["zoom_clicks"] is None
    from segany.errors import InputError

    for margin in (-1.0, float("inf"), float("nan")):
        with pytest.raises(InputError, match="click zoom margin"):
            ServerSettings(project_dir=tmp_path / "bad", zoom_clicks=margin)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({}, 400, "at least one prompt"),
        ({"points": [[1, 2]]}, 400, "labels"),
        ({"points": [[1, 2]], "labels": [2]}, 400, "labels"),
        ({"points": [[1, 2]], "labels": [1, 0]}, 400, "point_labels shape"),
        ({"points": [[1, 2, 3]], "labels": [1]}, 400, "N×2"),
        ({"points": [[1, 2]] * 65, "labels": [1] * 65}, 400, "1 to 64 points"),
        ({"labels": [1]}, 400, "without points"),
        ({"box": [10, 10, 5, 5]}, 400, "XYXY"),
        ({"box": [1, 2, 3]}, 400, "box"),
        # ragged lists (points: a 500 in the app issue's report, numpy's ValueError)
        ({"points": [[1, 2], [3]], "labels": [1, 1]}, 400, "rows of different lengths"),
        ({"points": [[1, 2]], "labels": [[1], [1, 0]]}, 422, "schema"),
        ({"points": "here", "labels": [1]}, 422, "schema"),
        ({"points": [[1, 2]], "labels": [1], "color": "red"}, 422, "schema"),
        ({"mask_input": {"shape": [1, 8, 8], "data": "AAAA"}}, 400, "bytes"),
        ({"mask_input": {"shape": [1, 96, 96], "data": "@@@"}}, 400, "base64"),
        ({"mask_input": {"shape": [1, 2, 2], "data": "A" * 22 + "=="}}, 400, "mask_input"),
    ],
)
def test_malformed_prompts_are_4xx(client, body, status, words):
    image = upload(client)
    r = client.post(f"/api/images/{image['id']}/decode", json=body)
    assert r.status_code == status, r.text
    assert words in r.text
    # Checked where the request arrives, before any model work.
    assert client.app.state.segany.hub.encoder_runs == 0


def test_malformed_json_is_422(client):
    image = upload(client)
    r = client.post(
        f"/api/images/{image['id']}/decode",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422


# ----- masks: CRUD, concurrency, persistence (SQLite and PostgreSQL) ----------------------------
def test_masks_crud_and_stale_edit_conflict(tmp_path, tiny, db_url):
    client = make_client(tmp_path / "project", tiny, db_url)
    image = upload(client)
    out = click(client, image["id"])
    mask = add_mask(
        client,
        image["id"],
        out["masks"][2],
        label="coin",
        author="ann",
        prompts={"points": [[150, 100]], "labels": [1]},
        model_version=0,
        predicted_iou=out["scores"][2],
        seconds=4.5,
    )
    truth = decode_rle(out["masks"][2])
    assert mask["area"] == int(truth.sum()) and mask["version"] == 1
    ys, xs = np.nonzero(truth)
    assert mask["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
    assert client.get(f"/api/masks/{mask['id']}").json() == mask
    assert client.get(f"/api/images/{image['id']}/masks").json() == [mask]
    # Two annotators read version 1; the first edit wins, the second gets 409 + current state.
    first = client.patch(f"/api/masks/{mask['id']}", json={"version": 1, "label": "penny"})
    assert first.status_code == 200 and first.json()["version"] == 2
    second = client.patch(f"/api/masks/{mask['id']}", json={"version": 1, "label": "dime"})
    assert second.status_code == 409
    assert second.json()["current"]["label"] == "penny"
    assert second.json()["current"]["version"] == 2
    stale_delete = client.delete(f"/api/masks/{mask['id']}?version=1")
    assert stale_delete.status_code == 409
    edited = client.patch(
        f"/api/masks/{mask['id']}",
        json={"version": 2, "rle": out["masks"][0], "seconds": 9.0, "editor": "bob"},
    ).json()
    assert edited["area"] == int(decode_rle(out["masks"][0]).sum())
    # The origin is how it was made; the new shape and the new class are counted apart.
    assert edited["origin"] == "clicks" and edited["label"] == "penny"
    assert (edited["edits"], edited["relabels"], edited["editor"]) == (1, 1, "bob")
    assert edited["author"] == "ann"
    origin = client.patch(f"/api/masks/{mask['id']}", json={"version": 3, "origin": "edited"})
    assert origin.status_code == 422
    assert client.delete(f"/api/masks/{mask['id']}?version=3").status_code == 204
    assert client.get(f"/api/masks/{mask['id']}").status_code == 404
    gone = client.patch(f"/api/masks/{mask['id']}", json={"version": 3, "label": "x"})
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("rle", "words"),
    [
        ({"size": [10, 10], "counts": "PP"}, "but image"),
        ({"size": [303, 384], "counts": "!!!!"}, "counts"),
        # valid characters whose runs cover 9 of 303×384 pixels: pycocotools alone decodes
        # them into a different junk mask each time (this answered 201 before)
        ({"size": [303, 384], "counts": "5220003"}, "counts"),
        ({"size": [303, 384], "counts": "0"}, "counts"),
        ("empty", "empty"),
    ],
)
def test_bad_masks_are_400(client, rle, words):
    from segany.masks import encode_rle

    image = upload(client)
    if rle == "empty":
        rle = encode_rle(np.zeros((303, 384), bool))
    r = client.post(f"/api/images/{image['id']}/masks", json={"rle": rle, "origin": "brush"})
    assert r.status_code == 400 and words in r.json()["detail"]
    r = client.post(f"/api/images/{image['id']}/masks", json={"rle": rle, "origin": "magic"})
    assert r.status_code == 422


def test_restart_keeps_everything(tmp_path, tiny, db_url):
    from segany.server.db import SCHEMA_VERSION, schema_version

    client = make_client(tmp_path / "project", tiny, db_url)
    image = upload(client)
    out = click(client, image["id"])
    mask = add_mask(client, image["id"], out["masks"][1], label="kept", seconds=2.0)
    client.put(f"/api/images/{image['id']}/status", json={"status": "annotated"})
    client.app.state.segany.engine.dispose()  # the process is gone
    del client
    again = make_client(tmp_path / "project", tiny, db_url)
    assert again.get(f"/api/masks/{mask['id']}").json() == mask
    assert again.get("/api/images").json()["counts"]["annotated"] == 1
    engine = again.app.state.segany.engine
    assert schema_version(engine) == SCHEMA_VERSION
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text("SELECT version FROM schema_migrations")).scalars().all()
    assert sorted(rows) == list(range(1, SCHEMA_VERSION + 1))  # each applied once


def test_images_recorded_unturned_before_get_their_turned_size_once(tmp_path, tiny, caplog):
    """A project made before EXIF orientation was read at import recorded turned photos at
    their stored size: when it opens, those without masks get the turned size, those with
    masks are named in the log and kept; once (a marker file)."""
    from PIL import Image
    from sqlalchemy import update

    from segany.server.db import ImageRow
    from segany.server.turned_sizes import MARKER

    client = make_client(tmp_path / "project", tiny)
    rows = []
    for name in ("a.jpg", "b.jpg"):
        exif = Image.Exif()
        exif[0x0112] = 6
        buf = io.BytesIO()
        Image.fromarray(np.zeros((120, 200, 3), np.uint8)).save(buf, "JPEG", exif=exif)
        rows.append(upload(client, buf.getvalue(), name))
    assert all((r["width"], r["height"]) == (120, 200) for r in rows)
    add_mask(client, rows[1]["id"], encode_rle(np.ones((200, 120), bool)))
    state = client.app.state.segany
    with state.sessions.begin() as s:  # as an older server recorded them
        s.execute(update(ImageRow).values(width=200, height=120))
    state.engine.dispose()
    (tmp_path / "project" / MARKER).unlink()
    with caplog.at_level("WARNING", logger="segany.server"):
        again = make_client(tmp_path / "project", tiny)
    sizes = {
        r["path"]: (r["width"], r["height"]) for r in again.get("/api/images").json()["images"]
    }
    assert sizes == {"images/a.jpg": (120, 200), "images/b.jpg": (200, 120)}
    assert "images/b.jpg" in caplog.text and "images/a.jpg" not in caplog.text
    assert (tmp_path / "project" / MARKER).exists()


def test_migrations_upgrade_an_older_database(tmp_path):
    from sqlalchemy import create_engine, inspect

    from segany.server import db

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    first = db.MIGRATIONS[:1]
    original = db.MIGRATIONS[:]
    db.MIGRATIONS[:] = first
    try:
        assert db.migrate(engine) == [1]
    finally:
        db.MIGRATIONS[:] = original
    assert not inspect(engine).has_table("train_jobs")
    assert not inspect(engine).has_table("classes")
    assert "review" not in {c["name"] for c in inspect(engine).get_columns("masks")}
    assert db.migrate(engine) == [2, 3, 4, 5, 6]
    assert inspect(engine).has_table("train_jobs")
    assert db.migrate(engine) == []


def test_a_project_made_before_classes_opens_with_its_labels_as_classes(tmp_path, tiny, db_url):
    """A version-2 database (masks with free-text labels, no classes, no review) opens in the
    app: each distinct label becomes a class, masks keep their label and origin, unreviewed."""
    from sqlalchemy import create_engine, text

    from segany.server import db

    url = db_url or f"sqlite:///{tmp_path / 'project' / 'annotations.db'}"
    (tmp_path / "project").mkdir()
    engine = create_engine(url)
    original = db.MIGRATIONS[:]
    db.MIGRATIONS[:] = original[:2]
    try:
        assert db.migrate(engine) == [1, 2]
    finally:
        db.MIGRATIONS[:] = original
    rle = encode_rle(np.pad(np.ones((5, 5), bool), ((1, 14), (2, 23))))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO images (id, path, width, height, sha256, status, added_at) "
                "VALUES (1, 'images/a.png', 30, 20, 'x', 'annotated', :t)"
            ),
            {"t": db.now()},
        )
        for n, (label, origin) in enumerate(
            [("coin", "clicks"), ("penny", "prefill"), ("", "brush"), ("coin", "edited")]
        ):
            conn.execute(
                text(
                    "INSERT INTO masks (id, image_id, rle, bbox, area, label, author, origin, "
                    "prompts, seconds, version, created_at, updated_at) VALUES (:id, 1, :rle, "
                    "'[2, 1, 5, 5]', 25, :label, 'ann', :origin, '{}', 1.0, 1, :t, :t)"
                ),
                {
                    "id": n + 1,
                    "rle": rle["counts"],
                    "label": label,
                    "origin": origin,
                    "t": db.now(),
                },
            )
    engine.dispose()
    client = make_client(tmp_path / "project", tiny, db_url)
    classes = client.get("/api/classes").json()
    assert [(c["name"], c["masks"]) for c in classes] == [("coin", 2), ("penny", 1)]
    masks = client.get("/api/images/1/masks").json()
    ids = {c["name"]: c["id"] for c in classes}
    assert [(m["label"], m["class_id"]) for m in masks] == [
        ("coin", ids["coin"]),
        ("penny", ids["penny"]),
        ("", None),
        ("coin", ids["coin"]),
    ]
    assert [m["origin"] for m in masks] == ["clicks", "prefill", "brush", "edited"]
    assert {m["review"] for m in masks} == {"unreviewed"}
    assert {(m["edits"], m["relabels"], m["reviewer"]) for m in masks} == {(0, 0, "")}
    # and the new columns work on the old rows
    r = client.patch("/api/masks/2", json={"version": 1, "review": "accepted", "reviewer": "rev"})
    assert r.status_code == 200 and r.json()["review"] == "accepted", r.text


# ----- access --------------------------------------------------------------------------------
def test_token_checked_on_every_request(tmp_path, tiny):
    client = make_client(tmp_path / "p", tiny, token="s3cret-token")
    for path in ("/api/images", "/", "/openapi.json", "/static/app.js"):
        r = client.get(path)
        assert r.status_code == 401 and "token" in r.json()["detail"], path
    assert client.get("/api/images", headers={"X-Segany-Token": "wrong-token"}).status_code == 401
    assert client.get("/api/images", headers={"X-Segany-Token": "s3cret-token"}).status_code == 200
    bearer = {"Authorization": "Bearer s3cret-token"}
    assert client.get("/api/images", headers=bearer).status_code == 200
    # Opening the page with ?token= leaves a cookie that the page's own requests carry.
    assert client.get("/?token=s3cret-token").status_code == 200
    assert client.get("/api/images").status_code == 200


def test_public_host_needs_a_token(tmp_path):
    from segany.errors import InputError

    with pytest.raises(InputError, match="token"):
        ServerSettings(project_dir=tmp_path, host="0.0.0.0")
    assert ServerSettings(project_dir=tmp_path, host="0.0.0.0", token="long-enough").token


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/images",
        "/api/images/import",
        "/api/images/{image_id}",
        "/api/images/{image_id}/file",
        "/api/images/{image_id}/status",
        "/api/images/{image_id}/embedding",
        "/api/images/{image_id}/decode",
        "/api/images/{image_id}/prefill",
        "/api/images/{image_id}/masks",
        "/api/masks/{mask_id}",
        "/api/export",
        "/api/exports/{path}",
        "/api/train",
        "/api/train/{job_id}",
        "/api/models",
        "/api/project",
        "/api/decoder.onnx",
        "/api/classes",
        "/api/classes/{class_id}",
        "/api/stats",
        "/api/import/coco",
    ):
        assert path in paths, path
    assert client.get("/docs").status_code == 200
    assert client.get("/api/project").json()["model_version"] == 0


def test_serve_command_refuses_a_public_host_without_token(tmp_path, monkeypatch, capsys):
    from segany.cli import main

    monkeypatch.delenv("SEGANY_TOKEN", raising=False)
    code = main(["serve", str(tmp_path / "p"), "--host", "0.0.0.0"])
    assert code == 3
    assert "token" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # refused before creating anything
