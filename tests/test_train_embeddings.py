"""Training from cached image embeddings (frozen encoder) is the same training, only cheaper;
the evaluation's corrective clicks are available to the round loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TRAIN_SMALL, perturb_

from segany.errors import InputError
from segany.models import build_sam
from segany.train import prompts
from segany.train.datasets import SA1BDataset, open_datasets
from segany.train.embeddings import EmbeddingCache, build_cache, open_cache
from segany.train.synth import SynthConfig, write_sa1b
from segany.train.trainer import TrainConfig, Trainer

SYNTH = SynthConfig(long_side=64, min_short_side=48, min_objects=3, max_objects=6, min_area=30)


def _model(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam(TRAIN_SMALL)
    return perturb_(model, seed, scale=0.2)


def _config(tmp_path, name: str, **kw) -> TrainConfig:
    base = dict(
        out_dir=str(tmp_path / name),
        steps=3,
        batch_size=2,
        masks_per_image=3,
        rounds=5,
        freeze="encoder",
        progress=False,
        device="cpu",
        amp=False,
        warmup_steps=1,
        val_every=1000,
        ckpt_every=1000,
    )
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_sa1b(root / "a", 3, seed=5, cfg=SYNTH)
    write_sa1b(root / "b", 2, seed=6, cfg=SYNTH)
    return root


@pytest.mark.parametrize("click_mode", ["uniform", "mixed"])
def test_cached_embeddings_train_exactly_like_the_images(tmp_path, scenes, click_mode):
    """Same seeded model, same data: three steps on the cache give the losses, gradients and
    weights of three steps on the images (fp32 cache; the masks and flips drawn alike)."""
    data = open_datasets(
        [str(scenes / "a"), str(scenes / "b")], TRAIN_SMALL.image_size, masks_per_image=3, flip=True
    )
    assert len(data) == 5
    cache = open_cache(_model(), data, tmp_path / "cache.safetensors")
    # Rebuild in fp32 so that the comparison is exact (the default stores fp16).
    build_cache(_model(), data, tmp_path / "c32.safetensors", dtype=torch.float32)
    cache = EmbeddingCache(tmp_path / "c32.safetensors", masks_per_image=3)
    runs = {}
    for name, source in (("images", data), ("cache", cache)):
        trainer = Trainer(_model(), _config(tmp_path, name, click_mode=click_mode), source)
        losses = [trainer.train_step()["loss"] for _ in range(3)]
        runs[name] = (losses, trainer.model.mask_decoder.state_dict())
    np.testing.assert_allclose(runs["cache"][0], runs["images"][0], rtol=1e-4, atol=1e-6)
    for key, value in runs["images"][1].items():
        torch.testing.assert_close(runs["cache"][1][key], value, rtol=1e-4, atol=1e-5)
    assert runs["images"][0][0] != runs["images"][0][2]  # the steps differ: a real comparison


def test_fp16_cache_is_close_and_holds_every_mask(tmp_path, scenes):
    data = SA1BDataset(scenes / "a", TRAIN_SMALL.image_size, masks_per_image=3, flip=True)
    model = _model()
    cache = open_cache(model, data, tmp_path / "c.safetensors")
    assert len(cache) == 3 and cache.flips == (False, True)
    image, masks = data.load(1)
    emb = cache.embeddings[2].float()  # image 1, not flipped
    x = data.get(1).image  # no rng: first masks, no flip
    with torch.no_grad():
        want = model.image_encoder(x[None])[0]
    torch.testing.assert_close(emb, want, rtol=0, atol=2e-3 * float(want.abs().max()))
    full = cache._masks(2)
    assert full.shape[0] == len(masks)  # every mask kept, the draw happens per step
    flipped = cache._masks(3)
    h, w = cache.sizes[3]
    assert torch.equal(flipped[:, :h, :w], full[:, :h, :w].flip(-1))


def test_cache_refuses_other_weights_and_other_data(tmp_path, scenes):
    data = SA1BDataset(scenes / "a", TRAIN_SMALL.image_size, masks_per_image=3, flip=True)
    path = tmp_path / "c.safetensors"
    open_cache(_model(0), data, path)
    with pytest.raises(InputError, match="another image encoder"):
        open_cache(_model(1), data, path)
    with pytest.raises(InputError, match="flips"):
        open_cache(_model(0), data, path, flips=(False,))
    with pytest.raises(InputError, match="frozen image encoder"):
        Trainer(_model(0), _config(tmp_path, "x", freeze="none"), EmbeddingCache(path))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a cache")
    with pytest.raises(InputError, match="not a readable embedding cache"):
        EmbeddingCache(bad)


def test_center_error_points_follow_the_evaluation_protocol():
    from segany.evaluate.prompts import next_click

    gt = torch.zeros(3, 20, 20, dtype=torch.bool)
    gt[:, 4:16, 4:16] = True
    pred = gt.clone()
    pred[0, 4:16, 4:9] = False  # missed strip: a positive click in it
    pred[1, 0:3, :] = True  # spill above: a negative click
    pts, lbl = prompts.center_error_points(pred, gt)
    assert lbl.tolist() == [1.0, 0.0, -1.0]
    for i in range(2):
        x, y, label = next_click(gt[i].numpy(), pred[i].numpy())
        assert pts[i].tolist() == [x, y] and label == lbl[i]
    assert not pred[0, int(pts[0, 1]), int(pts[0, 0])] and gt[0, int(pts[0, 1]), int(pts[0, 0])]


def test_click_mode_is_checked(tmp_path, scenes):
    data = SA1BDataset(scenes / "a", TRAIN_SMALL.image_size)
    with pytest.raises(InputError, match="click_mode"):
        Trainer(_model(), _config(tmp_path, "x", click_mode="random"), data)


def test_cli_trains_from_a_cache(tmp_path, scenes):
    import subprocess
    import sys

    from segany.checkpoints import save_model

    weights = tmp_path / "m.safetensors"
    save_model(_model(), weights)
    cache = tmp_path / "cache.safetensors"
    cmd = [sys.executable, "-m", "segany", "train", str(scenes / "a"), str(scenes / "b")]
    cmd += ["-m", str(weights), "-o", str(tmp_path / "run"), "--freeze", "encoder"]
    cmd += ["--cache-embeddings", str(cache), "--steps", "2", "--batch-size", "2"]
    cmd += ["--rounds", "3", "--click-mode", "center", "--no-amp", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert cache.exists() and EmbeddingCache(cache).source_images == 5
    # The run trained the decoder and left the frozen encoder as the given weights had it.
    from segany.checkpoints import load_model

    given, trained = _model(), load_model(tmp_path / "run" / "checkpoint.safetensors")
    for key, value in given.image_encoder.state_dict().items():
        assert torch.equal(trained.image_encoder.state_dict()[key], value), key
    decoder = trained.mask_decoder.state_dict()
    assert any(not torch.equal(decoder[k], v) for k, v in given.mask_decoder.state_dict().items())
    cmd[cmd.index("encoder")] = "none"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--freeze" in done.stderr
