"""Training datasets: COCO JSON (polygons, RLE, crowd) and SA-1B folders, resized + padded."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from segany.errors import InputError
from segany.masks import encode_rle
from segany.train.datasets import SA1BDataset, open_dataset, prepare
from segany.transforms import preprocess_shape


def test_preprocess_shape_matches_the_official_rounding():
    assert preprocess_shape(303, 384, 192) == (152, 192)
    assert preprocess_shape(400, 200, 100) == (100, 50)


def test_prepare_pads_and_normalises():
    img = np.full((30, 60, 3), 255, np.uint8)
    m = np.zeros((30, 60), bool)
    m[:, :30] = True
    s = prepare(img, [m], 64, pixel_mean=(0.0, 0.0, 0.0), pixel_std=(255.0, 255.0, 255.0))
    assert s.input_size == (32, 64) and s.image.shape == (3, 64, 64)
    assert torch.allclose(s.image[:, :32], torch.ones(3, 32, 64))
    assert float(s.image[:, 32:].abs().sum()) == 0.0  # zero padding below the image
    assert s.masks.shape == (1, 64, 64) and int(s.masks.sum()) == 32 * 32
    flipped = prepare(img, [m], 64, flip=True)
    assert bool(flipped.masks[0, 0, 63]) and not bool(flipped.masks[0, 0, 0])


def test_coco_polygons_rle_and_crowd(tmp_path):
    img = np.zeros((40, 50, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    rle_mask = np.zeros((40, 50), bool)
    rle_mask[5:15, 30:45] = True
    rle = encode_rle(rle_mask)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20]], "iscrowd": 0},
            {"id": 2, "image_id": 1, "segmentation": rle, "iscrowd": 0},
            {"id": 3, "image_id": 1, "segmentation": rle, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    ds = open_dataset(f"{tmp_path / 'ann.json'}:{tmp_path}", 50)
    image, masks = ds.load(0)
    assert len(masks) == 2  # the crowd annotation is skipped
    assert masks[1].sum() == rle_mask.sum() and masks[0][10, 10] and not masks[0][30, 30]
    sample = ds.get(0, np.random.default_rng(0))
    assert sample.masks.shape[1:] == (50, 50)


def test_sa1b_folder_and_mask_subsampling(tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "sa_1.jpg"), img)
    anns = []
    for i in range(5):
        m = np.zeros((32, 32), bool)
        m[i * 6 : i * 6 + 5, :] = True
        anns.append({"id": i, "segmentation": encode_rle(m)})
    rec = {
        "image": {"image_id": 1, "file_name": "sa_1.jpg", "width": 32, "height": 32},
        "annotations": anns,
    }
    (tmp_path / "sa_1.json").write_text(json.dumps(rec))
    ds = SA1BDataset(tmp_path, 32, masks_per_image=3)
    assert ds.get(0, np.random.default_rng(1)).masks.shape == (3, 32, 32)
    with pytest.raises(InputError):
        SA1BDataset(tmp_path / "nothing", 32)
