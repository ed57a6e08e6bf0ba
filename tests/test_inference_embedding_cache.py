"""The on-disk embedding cache: hits skip the encoder, keys separate image/model/precision,
corrupt or half-written entries are never returned, the folder stays bounded (LRU), several
processes share it, and one option turns it off."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL, seeded_model
from test_predictor_parity import _photo

from segany.automatic import MaskGenerator
from segany.inference.embedding_cache import EmbeddingCache, ImageEmbedding
from segany.inference.predictor import Predictor


class EncoderCalls:
    def __init__(self, model):
        self.n = 0
        self.hook = model.image_encoder.register_forward_hook(self._count)

    def _count(self, *args):
        self.n += 1


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def test_second_run_skips_the_encoder_and_gives_the_same_embedding(tmp_path):
    model = seeded_model(SMALL)
    calls = EncoderCalls(model)
    img = _photo(120, 90)
    first = Predictor(model, cache=tmp_path)
    first.set_image(img)
    again = Predictor(model, cache=tmp_path)  # a new predictor, as in a second run
    again.set_image(img)
    assert calls.n == 1
    assert torch.equal(first.get_image_embedding(), again.get_image_embedding())
    assert again.original_size == (120, 90) and again.input_size == first.input_size
    p = [[40, 50]]
    np.testing.assert_array_equal(
        first.predict(point_coords=p, point_labels=[1]).logits,
        again.predict(point_coords=p, point_labels=[1]).logits,
    )
    # stored as safetensors with the checksum in its header, never a pickle
    from safetensors import safe_open

    (entry,) = _entries(tmp_path)
    with safe_open(str(entry), "pt") as f:
        assert set(f.keys()) == {"features"} and len(f.metadata()["sha256"]) == 64


def test_key_separates_image_model_and_precision(tmp_path):
    model = seeded_model(SMALL)
    other = seeded_model(SMALL, seed=1)
    img = _photo(64, 64)
    keys = {
        EmbeddingCache.key(img, model, "fp32"),
        EmbeddingCache.key(img, model, "int8"),
        EmbeddingCache.key(img, other, "fp32"),
        EmbeddingCache.key(img[:, ::-1].copy(), model, "fp32"),
    }
    assert len(keys) == 4
    before = EmbeddingCache.key(img, model, "fp32")
    with torch.no_grad():
        model.mask_decoder.iou_token.weight.add_(1)  # any weight change is another model
    assert EmbeddingCache.key(img, model, "fp32") != before


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_entry_is_dropped_and_recomputed(tmp_path, damage):
    model = seeded_model(SMALL)
    img = _photo(80, 100)
    Predictor(model, cache=tmp_path).set_image(img)
    (entry,) = _entries(tmp_path)
    data = bytearray(entry.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x40  # inside the tensor bytes: only the checksum can tell
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a safetensors file")
    entry.write_bytes(bytes(data))
    cache = EmbeddingCache(tmp_path)
    assert cache.get(EmbeddingCache.key(img, model, "fp32")) is None
    assert not entry.exists()  # dropped
    calls = EncoderCalls(model)
    p = Predictor(model, cache=cache)
    p.set_image(img)
    assert calls.n == 1 and entry.exists()
    fresh = Predictor(model, cache=False)
    fresh.set_image(img)
    assert torch.equal(p.get_image_embedding(), fresh.get_image_embedding())


def test_bounded_size_evicts_least_recently_used(tmp_path):
    model = seeded_model(SMALL)
    feats = torch.zeros(1, 256, 16, 16)
    one = 256 * 16 * 16 * 4
    cache = EmbeddingCache(tmp_path, max_bytes=int(2.5 * one))
    entry = ImageEmbedding(feats, (10, 10), (256, 256))
    keys = [EmbeddingCache.key(_photo(20 + i, 20), model, "fp32") for i in range(3)]
    cache.put(keys[0], entry)
    cache.put(keys[1], entry)
    old = os.path.getmtime(cache.path(keys[1])) - 100
    os.utime(cache.path(keys[0]), (old - 100, old - 100))
    os.utime(cache.path(keys[1]), (old, old))
    assert cache.get(keys[0]) is not None  # a read makes keys[0] the most recently used
    cache.put(keys[2], entry)
    assert [cache.get(k) is not None for k in keys] == [True, False, True]
    assert sum(p.stat().st_size for p in _entries(tmp_path)) <= cache.max_bytes


def test_off_with_one_option_and_on_from_the_environment(tmp_path, monkeypatch):
    model = seeded_model(SMALL)
    monkeypatch.setenv("SEGANY_CACHE", str(tmp_path / "env"))
    assert Predictor(model, cache=False).disk_cache is None
    on = Predictor(model)
    assert on.disk_cache is not None and on.disk_cache.directory == tmp_path / "env"
    on.set_image(_photo(40, 40))
    assert len(_entries(tmp_path / "env")) == 1
    monkeypatch.delenv("SEGANY_CACHE")
    assert Predictor(model).disk_cache is None


def test_mask_generator_uses_the_same_cache(tmp_path):
    model = seeded_model(SMALL)
    calls = EncoderCalls(model)
    img = _photo(64, 80)
    Predictor(model, cache=tmp_path).set_image(img)
    out = MaskGenerator(model, points_per_side=4, cache=tmp_path).generate(img)
    assert calls.n == 1
    assert len(out) == len(MaskGenerator(model, points_per_side=4, cache=False).generate(img))


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from segany.inference.embedding_cache import ImageEmbedding, EmbeddingCache
    folder, key, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cache = EmbeddingCache(folder)
    entry = ImageEmbedding(torch.full((1, 256, 64, 64), value), (5, 5), (1024, 1024))
    for _ in range(15):
        cache.put(key, entry)
    """
)


def test_two_processes_writing_the_same_key(tmp_path):
    key = "0" * 64
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), key, str(v)], env=env)
        for v in (1.0, 2.0)
    ]
    cache = EmbeddingCache(tmp_path)
    seen = set()
    while any(w.poll() is None for w in writers):
        got = cache.get(key)
        if got is not None:
            values = torch.unique(got.features)
            assert len(values) == 1  # never a mix of two writes, never a partial file
            seen.add(float(values[0]))
    assert all(w.returncode == 0 for w in writers)
    final = cache.get(key)
    assert final is not None and float(final.features[0, 0, 0, 0]) in (1.0, 2.0)
    assert seen <= {1.0, 2.0}
    assert not list(tmp_path.glob("*.tmp"))  # no writer left a temporary file behind
