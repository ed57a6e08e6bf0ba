"""Every writer in segany.formats read back by its reader (and by pycocotools for COCO)."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segany.atomic import atomic_open
from segany.errors import InputError
from segany.formats import (
    coco_dataset,
    coco_image_masks,
    coco_results,
    find_images,
    label_map,
    label_map_to_masks,
    mask_polygons,
    polygons_to_mask,
    read_coco,
    read_image,
    read_label_map,
    read_mask_folder,
    read_mask_png,
    read_metadata_csv,
    read_polygon_masks,
    read_polygons,
    read_sa1b,
    render_overlay,
    sa1b_document,
    write_coco,
    write_label_map,
    write_mask_folder,
    write_mask_png,
    write_overlay,
    write_polygons,
    write_sa1b,
)
from segany.formats.metadata import HEADER
from segany.masks import decode_rle, encode_rle, mask_to_uncompressed_rle

H, W = 24, 32


def blob_masks(n: int = 4, seed: int = 0) -> np.ndarray:
    """n×H×W masks: rectangles of different sizes, one with a hole, one nested in another."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, H, W), dtype=bool)
    for i in range(n):
        y0, x0 = rng.integers(0, H // 2), rng.integers(0, W // 2)
        masks[i, y0 : y0 + 4 + 3 * i, x0 : x0 + 5 + 3 * i] = True
    masks[-1, 2:20, 2:26] = True
    masks[-1, 8:12, 10:14] = False  # a hole
    return masks


def records(masks: np.ndarray, mode: str = "binary_mask") -> list[dict]:
    out = []
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if mode == "coco_rle":
            seg = encode_rle(m)
        elif mode == "uncompressed_rle":
            import torch

            seg = mask_to_uncompressed_rle(torch.from_numpy(m[None]))[0]
        else:
            seg = m
        out.append(
            {
                "segmentation": seg,
                "area": int(m.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)), int(np.ptp(ys))],
                "predicted_iou": np.float32(0.9 - 0.01 * i),
                "point_coords": [[float(xs[0]) + 0.5, float(ys[0]) + 0.5]],
                "stability_score": 0.97 - 0.02 * i,
                "crop_box": [0, 0, W, H],
            }
        )
    return out


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------- SA-1B


@pytest.mark.parametrize("mode", ["binary_mask", "coco_rle", "uncompressed_rle"])
def test_sa1b_round_trip(tmp_path, mode):
    masks = blob_masks()
    doc = sa1b_document(records(masks, mode), file_name="a.jpg", width=W, height=H, image_id=7)
    path = tmp_path / "a.json"
    write_sa1b(path, doc)
    back = read_sa1b(path)
    assert back.image == {"image_id": 7, "width": W, "height": H, "file_name": "a.jpg"}
    np.testing.assert_array_equal(back.masks(), masks)
    ann = back.annotations[1]
    assert list(ann) == [
        "id",
        "segmentation",
        "bbox",
        "area",
        "predicted_iou",
        "stability_score",
        "crop_box",
        "point_coords",
    ]  # the SA-1B files' order
    assert [a["id"] for a in back.annotations] == [0, 1, 2, 3]
    assert isinstance(ann["segmentation"]["counts"], str)
    assert ann["segmentation"]["size"] == [H, W]
    assert ann["predicted_iou"] == pytest.approx(0.89)
    assert leftovers(tmp_path) == []


def test_sa1b_empty_and_errors(tmp_path):
    doc = sa1b_document([], file_name="e.png", width=W, height=H)
    write_sa1b(tmp_path / "e.json", doc)
    assert read_sa1b(tmp_path / "e.json").masks().shape == (0, H, W)
    with pytest.raises(InputError, match="image is 10×10"):
        sa1b_document(records(blob_masks()), file_name="x", width=10, height=10)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not a JSON file"):
        read_sa1b(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match="not an SA-1B file"):
        read_sa1b(tmp_path / "list.json")


# ------------------------------------------------------------------------------- COCO


def test_coco_reads_in_pycocotools(tmp_path):
    m1, m2 = blob_masks(3, seed=1), blob_masks(2, seed=2)
    docs = [
        sa1b_document(records(m1), file_name="a.jpg", width=W, height=H, image_id=0),
        sa1b_document(records(m2, "coco_rle"), file_name="b.jpg", width=W, height=H),
    ]
    dataset = coco_dataset(docs)
    path = tmp_path / "coco.json"
    write_coco(path, dataset)
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2]  # ids renumbered: the given ones are not unique
    assert min(coco.getAnnIds()) == 1
    for image_id, masks in ((1, m1), (2, m2)):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        np.testing.assert_array_equal(np.stack([coco.annToMask(a) for a in anns]), masks)
        np.testing.assert_array_equal(coco_image_masks(read_coco(path), image_id), masks)
    # The same masks as detections: loadRes accepts both forms and COCOeval scores them perfect.
    assert len(coco.loadRes(dataset["annotations"]).getAnnIds()) == 5
    detections = coco.loadRes(coco_results(dataset))
    ev = COCOeval(coco, detections, "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_coco_categories_from_labels_and_pycocotools_boxes(tmp_path):
    m1, m2 = blob_masks(3, seed=3), blob_masks(2, seed=4)
    docs = [
        sa1b_document(records(m1), file_name="a.jpg", width=W, height=H, image_id=1),
        sa1b_document(records(m2), file_name="b.jpg", width=W, height=H, image_id=2),
    ]
    for ann, label in zip(
        docs[0].annotations + docs[1].annotations,
        ["penny", "dime", None, "penny", " "],
        strict=True,
    ):
        if label is not None:
            ann["label"] = label
    dataset = coco_dataset(docs)
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    assert names == {1: "dime", 2: "object", 3: "penny"}  # sorted; unlabelled and blank: object
    got = [names[a["category_id"]] for a in dataset["annotations"]]
    assert got == ["penny", "dime", "object", "penny", "object"]
    write_coco(tmp_path / "c.json", dataset)
    coco = COCO(str(tmp_path / "c.json"))
    assert len(coco.getAnnIds(catIds=[3])) == 2
    for ann in dataset["annotations"]:
        mask = np.asfortranarray(decode_rle(ann["segmentation"]).astype(np.uint8))
        want = mask_utils.toBbox(mask_utils.encode(mask)).tolist()
        assert ann["bbox"] == want  # COCO's own box, not SA-1B's one pixel narrower
    sa1b_box = docs[0].annotations[0]["bbox"]
    assert dataset["annotations"][0]["bbox"][2] == sa1b_box[2] + 1
    unlabelled = coco_dataset([sa1b_document(records(m1), file_name="a.jpg", width=W, height=H)])
    assert unlabelled["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]


def test_coco_keeps_distinct_image_ids(tmp_path):
    docs = [
        sa1b_document(records(blob_masks(1)), file_name=f"{i}.jpg", width=W, height=H, image_id=i)
        for i in (5, 9)
    ]
    dataset = coco_dataset(docs)
    assert [im["id"] for im in dataset["images"]] == [5, 9]
    assert dataset["annotations"][0]["score"] == pytest.approx(0.9)
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(InputError, match="not a COCO"):
        read_coco(tmp_path / "x.json")


# ------------------------------------------------------------------------------- PNG + CSV


def test_metadata_csv_matches_the_official_layout(tmp_path):
    recs = records(blob_masks(2))
    write_mask_folder(tmp_path / "m", recs)
    text = (tmp_path / "m" / "metadata.csv").read_text()
    lines = text.split("\n")
    assert (
        lines[0]
        == ",".join(HEADER)
        == (
            "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
            "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
        )
    )
    r = recs[1]
    expected = [1, r["area"], *r["bbox"], *r["point_coords"][0], r["predicted_iou"].item()]
    expected += [r["stability_score"], *r["crop_box"]]
    assert lines[2] == ",".join(str(v) for v in expected)
    assert not text.endswith("\n")  # amg.py joins lines with "\n" and adds none at the end
    rows = read_metadata_csv(tmp_path / "m" / "metadata.csv")
    assert rows[1]["area"] == r["area"] and isinstance(rows[1]["area"], int)


def test_mask_folder_round_trip_and_stale_masks(tmp_path):
    masks = blob_masks(4)
    write_mask_folder(tmp_path, records(masks))
    back, rows = read_mask_folder(tmp_path)
    np.testing.assert_array_equal(back, masks)
    assert [r["id"] for r in rows] == [0, 1, 2, 3]
    png = np.asarray(Image.open(tmp_path / "0.png"))
    assert png.dtype == np.uint8 and set(np.unique(png)) == {0, 255}
    write_mask_folder(tmp_path, records(masks[:2]))  # a re-run with fewer masks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.png", "1.png", "metadata.csv"]


def test_mask_png_reads_other_encodings(tmp_path):
    m = blob_masks(1)[0]
    write_mask_png(tmp_path / "m.png", m)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png"), m)
    Image.fromarray(np.stack([m * 200] * 3, axis=2).astype(np.uint8)).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_mask_png(tmp_path / "c.png"), m)
    with pytest.raises(InputError, match="H×W"):
        write_mask_png(tmp_path / "x.png", np.zeros(4, bool))


def test_label_map_small_masks_on_top(tmp_path):
    big = np.zeros((H, W), bool)
    big[:, :] = True
    small = np.zeros((H, W), bool)
    small[3:6, 3:6] = True
    mid = np.zeros((H, W), bool)
    mid[0:10, 0:10] = True
    masks = np.stack([small, big, mid])
    labels = label_map(masks)
    assert labels.dtype == np.uint16
    assert labels[4, 4] == 1 and labels[8, 8] == 3 and labels[20, 20] == 2
    write_label_map(tmp_path / "l.png", labels)
    back = read_label_map(tmp_path / "l.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    visible = label_map_to_masks(back, 3)
    np.testing.assert_array_equal(visible[0], small)
    np.testing.assert_array_equal(visible[2], mid & ~small)
    # Many labels survive the 16-bit PNG (an 8-bit file would wrap at 256).
    many = np.arange(300 * 2, dtype=np.uint16).reshape(20, 30) + 60000
    write_label_map(tmp_path / "m.png", many)
    np.testing.assert_array_equal(read_label_map(tmp_path / "m.png"), many)
    with pytest.raises(InputError, match="at most 65535"):
        label_map(np.zeros((65536, 1, 1), bool))


# ------------------------------------------------------------------------------- polygons


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - 12) ** 2 + (xx - 16) ** 2 <= r * r


def _nested() -> np.ndarray:
    m = _disk(10) & ~_disk(6)
    m |= _disk(2)  # an island inside the hole
    return m


def _pixel() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[5, 7] = True
    return m


def _diagonal() -> np.ndarray:
    return np.eye(H, W, dtype=bool)


def _noise() -> np.ndarray:
    return np.random.default_rng(3).random((H, W)) < 0.5


@pytest.mark.parametrize(
    "make, n_polygons, n_holes",
    [
        (lambda: np.zeros((H, W), bool), 0, 0),
        (_pixel, 1, 0),
        (_diagonal, 1, 0),
        (lambda: _disk(8), 1, 0),
        (lambda: _disk(9) & ~_disk(4), 1, 1),
        (_nested, 2, 1),
        (lambda: np.ones((H, W), bool), 1, 0),
        (_noise, None, None),
    ],
)
def test_polygons_round_trip_exactly(make, n_polygons, n_holes):
    mask = make()
    polygons = mask_polygons(mask)
    if n_polygons is not None:
        assert len(polygons) == n_polygons
        assert sum(len(p) - 1 for p in polygons) == n_holes
    np.testing.assert_array_equal(polygons_to_mask(polygons, (H, W)), mask)


def test_polygons_file_is_geojson(tmp_path):
    masks = np.stack([_disk(9) & ~_disk(4), _pixel(), _nested()])
    doc = sa1b_document(records(masks), file_name="p.png", width=W, height=H, image_id=3)
    write_polygons(tmp_path / "p.geojson", doc)
    data = json.loads((tmp_path / "p.geojson").read_text())
    assert data["type"] == "FeatureCollection" and data["image"]["image_id"] == 3
    ring_lists = [f["geometry"]["coordinates"] for f in data["features"]]
    for polygons in ring_lists:
        for polygon in polygons:
            for ring in polygon:
                assert len(ring) >= 4 and ring[0] == ring[-1]
    assert len(ring_lists[0][0]) == 2  # outer ring + one hole
    assert data["features"][0]["properties"]["area"] == int(masks[0].sum())
    np.testing.assert_array_equal(read_polygon_masks(tmp_path / "p.geojson"), masks)
    image, shapes = read_polygons(tmp_path / "p.geojson")
    assert image["width"] == W and len(shapes) == 3


# ------------------------------------------------------------------------------- overlay


def test_overlay_draws_masks_points_and_boxes(tmp_path):
    image = np.full((H * 4, W * 4, 3), 100, np.uint8)
    mask = np.zeros(image.shape[:2], bool)
    mask[10:40, 10:40] = True
    prompts = {"points": [[80, 60], [100, 20]], "labels": [1, 0], "boxes": [[50, 50, 120, 90]]}
    out = render_overlay(image, mask[None], **prompts)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[25, 25] != 100).any() and (out[70, 5] == 100).all()
    r, g, b = (int(v) for v in out[60, 80])
    assert g > 150 and r < 100  # foreground point green
    r, g, b = (int(v) for v in out[20, 100])
    assert r > 150 and g < 100  # background point red
    assert (out[50, 85] != 100).any()  # box edge
    np.testing.assert_array_equal(out, render_overlay(image, mask[None], **prompts))
    write_overlay(tmp_path / "o.png", image, mask[None], **prompts)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), out)  # lossless
    with pytest.raises(InputError, match="uint8"):
        render_overlay(image.astype(np.float32))


def _whole_image_overlay(image, masks, alpha=0.45):
    """The overlay's masks drawn over the whole image each (what render_overlay did before it
    cropped to each mask's box): the reference its cropped drawing must equal."""
    import cv2

    from segany.formats.overlay import mask_colors

    out = image.astype(np.float32)
    colors = mask_colors(len(masks))
    layer = []
    for i in np.argsort(-masks.reshape(len(masks), -1).sum(axis=1), kind="stable"):
        m = masks[i]
        out[m] = out[m] * (1 - alpha) + colors[i].astype(np.float32) * alpha
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        layer.append((contours, tuple(int(c) for c in colors[i])))
    canvas = np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    thickness = max(1, round(min(image.shape[:2]) / 400))
    for contours, color in layer:
        cv2.drawContours(canvas, contours, -1, color, thickness)
    return canvas


def test_overlay_drawn_by_mask_boxes_equals_the_whole_image_drawing():
    """Masks touching every image edge, with holes, overlapping, one empty: the overlay drawn
    within each mask's box equals the whole-image drawing, from arrays or from COCO RLEs."""
    from segany.masks import encode_rles

    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (900, 1300, 3), dtype=np.uint8)
    masks = np.zeros((7, 900, 1300), bool)
    masks[0, :300, :200] = True  # top-left corner
    masks[1, 850:, 1000:] = True  # bottom-right corner
    masks[2, 100:700, 400:1300] = True
    masks[2, 300:400, 600:700] = False  # a hole
    masks[3] = rng.random((900, 1300)) > 0.995  # scattered pixels
    masks[4, 450:452, 10:1290] = True  # a thin line
    yy, xx = np.mgrid[:900, :1300]
    masks[5] = (yy - 500) ** 2 + (xx - 640) ** 2 < 200**2
    # masks[6] stays empty
    want = _whole_image_overlay(image, masks)
    np.testing.assert_array_equal(render_overlay(image, masks), want)
    np.testing.assert_array_equal(render_overlay(image, encode_rles(masks)), want)
    with pytest.raises(InputError, match="900×1300"):
        render_overlay(image, encode_rles(masks[:, :800]))


# ------------------------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half of the new")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []
    with atomic_open(tmp_path / "sub" / "new.txt") as f:
        f.write("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "sub" / "new.txt").st_mode)
    assert mode & 0o044  # readable by others like any file open() creates (usual umask)


# ------------------------------------------------------------------------------- images


def test_read_image_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)
    assert read_image(tmp_path / "rgb.png").flags.writeable  # torch.as_tensor warns otherwise
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    assert read_image(tmp_path / "gray.png").shape == (H, W, 3)
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[..., 1], rgb[..., 0])
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg")
    assert read_image(tmp_path / "rgb.jpg").shape == (H, W, 3)


def test_read_image_errors(tmp_path):
    # The path checks are segany.images.check_image_path's, the Predictor's own.
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputError, match="broken symbolic link"):
        read_image(tmp_path / "dangling.png")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "text.jpg")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")


def test_find_images(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"")
    found = find_images([tmp_path, tmp_path / "notes.txt"])
    assert [p.name for p in found] == ["a.JPG", "b.png", "notes.txt"]
    assert [p.name for p in find_images([tmp_path], recursive=True)][-1] == "c.png"
    with pytest.raises(InputError, match="no such file"):
        find_images([tmp_path / "nope"])
