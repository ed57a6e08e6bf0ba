"""The annotation app's exports read back by their own formats' readers, and COCO import
(issue 36): pycocotools for COCO, the YOLO-seg files parsed by Ultralytics' documented layout."""

# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")

from segany.masks import decode_rle, encode_rle  # noqa: E402
from tests.server_fixtures import (  # noqa: E402, F401
    add_mask,
    client,
    coins_png,
    make_client,
    png_bytes,
    tiny,
    upload,
)

SIZE = (303, 384)


def _masks() -> list[np.ndarray]:
    """Three coins of the photo, two coins as one mask (two parts), a ring (a hole)."""
    from segany.train.realdata import coins

    _, coins_masks = coins()
    ring = np.zeros(SIZE, bool)
    ring[200:260, 20:80] = True
    ring[215:245, 35:65] = False
    return [*coins_masks[:3], coins_masks[3] | coins_masks[4], ring]


@pytest.fixture
def project(client):
    """Coins with five masks: classes coin (two), pair, ring; one unlabelled coin."""
    image = upload(client)
    other = upload(client, png_bytes(np.full((40, 50, 3), 90, np.uint8)), "plain.png")
    square = np.zeros((40, 50), bool)
    square[5:25, 10:30] = True
    masks = _masks()
    labels = ["coin", "coin", "", "pair", "ring"]
    stored = [
        add_mask(client, image["id"], encode_rle(m), label=lab)
        for m, lab in zip(masks, labels, strict=True)
    ]
    stored.append(add_mask(client, other["id"], encode_rle(square), label="ring"))
    return client, image, other, stored, [*masks, square]


def _export(client, **body) -> tuple[dict, Path]:
    out = client.post("/api/export", json=body).json()
    return out, client.app.state.segany.project.root / out["folder"]


def test_coco_export_has_the_classes_and_reads_back_with_pycocotools(project):
    from pycocotools.coco import COCO

    client, image, other, stored, masks = project
    classes = {c["name"]: c["id"] for c in client.get("/api/classes").json()}
    out, folder = _export(client, format="coco")
    assert "1 masks have no class: exported as 'unlabelled'" in out["warnings"]
    coco = COCO(str(folder / "instances.json"))
    cats = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    assert cats == {**classes, "unlabelled": max(classes.values()) + 1}
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
    names = [coco.cats[a["category_id"]]["name"] for a in anns]
    assert names == ["coin", "coin", "unlabelled", "pair", "ring"]
    for ann, want in zip(anns, masks, strict=False):
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), want)
    assert coco.getAnnIds(catIds=[classes["ring"]]) and len(coco.getImgIds()) == 2
    # Renamed and recoloured, a class keeps its id in the next export.
    client.patch(f"/api/classes/{classes['coin']}", json={"name": "penny", "color": "#123456"})
    again = COCO(str(_export(client, format="coco")[1] / "instances.json"))
    assert again.cats[classes["coin"]]["name"] == "penny"
    assert again.cats[classes["coin"]]["color"] == "#123456"


def test_coco_polygons_read_back_with_pycocotools(project):
    from pycocotools.coco import COCO

    client, image, _, _, masks = project
    out, folder = _export(client, format="coco", polygons=True)
    assert "1 masks with holes (or parts too thin for a polygon) stay RLE" in out["warnings"]
    coco = COCO(str(folder / "instances.json"))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
    kinds = [type(a["segmentation"]).__name__ for a in anns]
    assert kinds == ["list", "list", "list", "list", "dict"]  # the ring keeps its RLE
    assert len(anns[3]["segmentation"]) == 2  # two parts, two polygons
    for ann, want in zip(anns, masks, strict=False):
        got = coco.annToMask(ann).astype(bool)
        iou = (got & want).sum() / (got | want).sum()
        # polygons through the boundary pixels' centres: COCO's rasteriser drops part of the
        # boundary (0.95 on these coins), never adds outside it
        assert iou > 0.9 and not (got & ~want).any(), iou


def test_yolo_export_reads_back_by_the_documented_layout(project):
    """Ultralytics' YOLO-seg: data.yaml (names by index), images/train, labels/train with
    '<class> x1 y1 ... xn yn' normalised to [0, 1]; masks rasterised as Ultralytics does."""
    from PIL import Image

    from segany.formats.yolo import line_mask, read_labels

    client, image, other, _, masks = project
    out, folder = _export(client, format="yolo")
    assert "YOLO polygons cannot hold holes: 1 holes are filled" in out["warnings"]
    yaml = (folder / "data.yaml").read_text().splitlines()
    assert yaml[:4] == ["path: .", "train: images/train", "val: images/train", "names:"]
    names = [json.loads(line.split(": ", 1)[1]) for line in yaml[4:]]
    classes = [c["name"] for c in client.get("/api/classes").json()]
    assert names == [*classes, "unlabelled"]
    pictures = sorted((folder / "images" / "train").iterdir())
    labels = sorted((folder / "labels" / "train").iterdir())
    assert (
        [p.stem for p in pictures]
        == [p.stem for p in labels]
        == [
            "000000_coins",
            "000001_plain",
        ]
    )
    assert pictures[0].read_bytes() == coins_png()
    lines = read_labels(labels[0])
    assert [names[x.class_index] for x in lines] == ["coin", "coin", "unlabelled", "pair", "ring"]
    for raw in labels[0].read_text().splitlines():  # the layout itself, without our reader
        parts = raw.split()
        values = [float(v) for v in parts[1:]]
        assert parts[0].isdigit() and len(values) % 2 == 0 and len(values) >= 6
        assert all(0 <= v <= 1 for v in values)
    h = Image.open(pictures[0]).size[::-1]  # (H, W)
    for line, want in zip(lines[:3], masks[:3], strict=True):
        np.testing.assert_array_equal(line_mask(line, h), want)  # one part: the very mask
    pair = line_mask(lines[3], h)
    assert not (masks[3] & ~pair).any()  # both parts, joined by a one-pixel bridge
    assert (pair & ~masks[3]).sum() < 0.1 * masks[3].sum()
    filled = masks[4].copy()
    filled[215:245, 35:65] = True
    np.testing.assert_array_equal(line_mask(lines[4], h), filled)
    (plain,) = read_labels(labels[1])
    np.testing.assert_array_equal(line_mask(plain, (40, 50)), masks[5])


def test_png_export_has_class_maps(project):
    from segany.formats import read_label_map

    client, *_ = project
    classes = {c["name"]: c["id"] for c in client.get("/api/classes").json()}
    out, folder = _export(client, format="png")
    meta = json.loads((folder / "classes.json").read_text())
    assert meta["background"] == 0
    assert [c["name"] for c in meta["classes"]] == [*classes, "unlabelled"]
    instances = read_label_map(folder / "000000_coins_labels.png")
    kinds = read_label_map(folder / "000000_coins_classes.png")
    unlabelled = max(classes.values()) + 1
    want = [classes["coin"], classes["coin"], unlabelled, classes["pair"], classes["ring"]]
    for i, class_id in enumerate(want, start=1):
        assert (instances == i).any() and set(np.unique(kinds[instances == i])) == {class_id}
    assert ((kinds == 0) == (instances == 0)).all()


def test_import_coco_adds_images_masks_and_classes_once(project, tmp_path, tiny):
    """A COCO file (RLE and polygons) from another tool goes into a new project: its images
    registered, categories as classes, masks unreviewed with origin 'imported'."""
    source, image, _, _, masks = project
    _, rle_folder = _export(source, format="coco")
    _, poly_folder = _export(source, format="coco", polygons=True)
    target = make_client(tmp_path / "target", tiny)
    root = target.app.state.segany.project.root
    (root / "incoming").mkdir()
    for name in ("coins.png", "plain.png"):
        shutil.copyfile(
            source.app.state.segany.project.root / "images" / name, root / "incoming" / name
        )
    shutil.copyfile(rle_folder / "instances.json", root / "incoming" / "rle.json")
    shutil.copyfile(poly_folder / "instances.json", root / "incoming" / "poly.json")
    body = {"annotations": "incoming/rle.json", "author": "importer"}
    r = target.post("/api/import/coco", json=body).json()
    assert r == {"images": 2, "masks": 6, "duplicates": 0, "classes": 4, "missing": []}
    (coins,) = [im for im in target.get("/api/images").json()["images"] if im["masks"] == 5]
    got = target.get(f"/api/images/{coins['id']}/masks").json()
    for m, want in zip(got, masks, strict=False):
        np.testing.assert_array_equal(decode_rle(m["rle"]), want)
    assert {(m["origin"], m["review"], m["author"]) for m in got} == {
        ("imported", "unreviewed", "importer")
    }
    assert [m["label"] for m in got] == ["coin", "coin", "unlabelled", "pair", "ring"]
    # the same masks again, as polygons: duplicates (IoU > 0.7), nothing added
    again = target.post("/api/import/coco", json={"annotations": "incoming/poly.json"}).json()
    assert (again["masks"], again["duplicates"], again["classes"]) == (0, 6, 0)
    # errors: outside the project, a missing image, a size that does not match
    assert target.post("/api/import/coco", json={"annotations": "../x.json"}).status_code == 400
    assert target.post("/api/import/coco", json={"annotations": "nope.json"}).status_code == 404
    data = json.loads((root / "incoming" / "rle.json").read_text())
    data["images"][0]["file_name"] = "gone.png"
    (root / "incoming" / "gone.json").write_text(json.dumps(data))
    r = target.post("/api/import/coco", json={"annotations": "incoming/gone.json"}).json()
    assert r["missing"] == ["gone.png"]
    data["images"][0].update(file_name="coins.png", width=100)
    (root / "incoming" / "size.json").write_text(json.dumps(data))
    r = target.post("/api/import/coco", json={"annotations": "incoming/size.json"})
    assert r.status_code == 400 and "the file says 303×100" in r.json()["detail"]
    data["images"][0]["width"] = 384
    data["annotations"][0]["segmentation"] = [[1, 2, 3]]
    (root / "incoming" / "bad.json").write_text(json.dumps(data))
    r = target.post("/api/import/coco", json={"annotations": "incoming/bad.json"})
    assert r.status_code == 400 and "at least 3 x, y pairs" in r.json()["detail"]
