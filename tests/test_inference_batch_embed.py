"""Predictor.embed_images / set_images: batched encoding equals one image at a time
(tolerance 1e-5 of the largest embedding value: float rounding of a batched matmul)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SMALL, max_rel_err, seeded_model
from test_inference_embedding_cache import EncoderCalls
from test_predictor_parity import _photo

from segany.errors import InputError
from segany.inference.predictor import Predictor


def test_batched_embeddings_equal_single_ones():
    model = seeded_model(SMALL)
    images = [_photo(100, 150), _photo(200, 90), _photo(64, 64)]
    p = Predictor(model)
    calls = EncoderCalls(model)
    got = p.embed_images(images, batch_size=2)
    assert calls.n == 2  # two batches, not three images
    assert not p.is_image_set  # the current image is left alone
    for image, emb in zip(images, got, strict=True):
        p.set_image(image)
        assert emb.original_size == p.original_size and emb.input_size == p.input_size
        assert max_rel_err(emb.features, p.get_image_embedding()) < 1e-5


def test_set_images_then_predict_like_set_image():
    model = seeded_model(SMALL)
    images = [_photo(120, 80), _photo(90, 140)]
    batched, single = Predictor(model), Predictor(model)
    embs = batched.set_images(images)
    single.set_image(images[0])
    prompt = dict(point_coords=[[30, 40]], point_labels=[1])
    a, b = batched.predict(**prompt), single.predict(**prompt)
    assert max_rel_err(a.logits, b.logits) < 1e-4
    batched.set_embedding(embs[1])
    assert batched.original_size == (90, 140)


def test_disk_cache_hits_are_not_encoded(tmp_path):
    model = seeded_model(SMALL)
    images = [_photo(60, 70), _photo(70, 60)]
    Predictor(model, cache=tmp_path).embed_images(images[:1])
    calls = EncoderCalls(model)
    got = Predictor(model, cache=tmp_path).embed_images(images)
    assert calls.n == 1 and len(got) == 2
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_batch_size(bad):
    with pytest.raises(InputError, match="batch_size"):
        Predictor(seeded_model(SMALL)).embed_images([np.zeros((8, 8, 3), np.uint8)], batch_size=bad)
