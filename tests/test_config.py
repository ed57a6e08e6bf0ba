"""The composable config reads what earlier segany wrote: the flat config JSON (format 1, as the
bundled model still carries it) gives the same config and the same model, bit for bit, as the
nested form (format 2); generator defaults travel beside the config, not in it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import SMALL, seeded_model
from safetensors import safe_open
from safetensors.torch import save_file

from segany import Predictor, load_model, save_model
from segany.checkpoints.loading import DEFAULT_MODEL
from segany.config import SamConfig, split_config_json
from segany.errors import InputError
from segany.modeling.vit import ViTConfig
from segany.train.recipes import TINY

# SMALL as segany wrote it before encoder families (every field at the top level).
FLAT_SMALL = {
    "name": "test",
    "encoder_embed_dim": 64,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "image_size": 256,
    "patch_size": 16,
    "window_size": 4,
    "mlp_ratio": 4.0,
    "prompt_embed_dim": 256,
    "decoder_depth": 2,
    "decoder_num_heads": 8,
    "decoder_mlp_dim": 256,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
    "pixel_mean": [123.675, 116.28, 103.53],
    "pixel_std": [58.395, 57.12, 57.375],
    "mask_threshold": 0.0,
    "generator_defaults": {"pred_iou_thresh": 0.7},
    "extra": {},
}


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def _outputs(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    predictor = Predictor(model, cache=False)
    predictor.set_image(image)
    out = predictor.predict(point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1]))
    emb = predictor.get_image_embedding().numpy()
    return emb, out.scores, out.logits


def test_the_flat_json_reads_into_the_nested_config():
    cfg, defaults = split_config_json(json.dumps(FLAT_SMALL))
    assert cfg == SMALL and isinstance(cfg.encoder, ViTConfig)
    assert defaults == {"pred_iou_thresh": 0.7}
    assert SamConfig.from_json(SMALL.to_json()) == SMALL
    nested = json.loads(SMALL.to_json())
    assert nested["encoder"]["family"] == "vit" and "generator_defaults" not in nested
    with pytest.raises(InputError, match="unknown SamConfig fields"):
        SamConfig.from_json(json.dumps({**FLAT_SMALL, "bogus": 1}))
    with pytest.raises(InputError, match="generator_defaults may set"):
        split_config_json(json.dumps({**FLAT_SMALL, "generator_defaults": {"points": 3}}))


def test_a_format_1_file_builds_the_same_model_as_format_2(tmp_path):
    model = seeded_model(SMALL, seed=4)
    new = save_model(model, tmp_path / "new.safetensors")
    assert _metadata(new)["segany.format_version"] == "2"
    old = tmp_path / "old.safetensors"
    meta = {"format": "pt", "segany.config": json.dumps(FLAT_SMALL), "segany.format_version": "1"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(old), metadata=meta)
    a, b = load_model(old), load_model(new)
    assert a.config == b.config == SMALL
    assert a.generator_defaults == {"pred_iou_thresh": 0.7} and b.generator_defaults == {}
    for x, y in zip(_outputs(a), _outputs(b), strict=True):
        assert np.array_equal(x, y)


def test_the_bundled_file_keeps_its_flat_config_and_thresholds(tmp_path):
    meta = _metadata(DEFAULT_MODEL)
    flat = json.loads(meta["segany.config"])
    assert meta["segany.format_version"] == "1" and "encoder_embed_dim" in flat
    bundled = load_model()
    enc = bundled.config.encoder
    assert isinstance(enc, ViTConfig)
    assert (enc.embed_dim, enc.depth, enc.image_size) == (
        flat["encoder_embed_dim"],
        flat["encoder_depth"],
        flat["image_size"],
    )
    assert bundled.config.encoder == ViTConfig(**{**TINY.encoder.__dict__, "image_size": 384})
    assert bundled.generator_defaults == flat["generator_defaults"]
    # saved again it is a format 2 file with the thresholds beside the config; same outputs
    again = load_model(save_model(bundled, tmp_path / "again.safetensors"))
    assert again.config == bundled.config
    assert again.generator_defaults == bundled.generator_defaults
    assert "segany.generator_defaults" in _metadata(tmp_path / "again.safetensors")
    for x, y in zip(_outputs(bundled), _outputs(again), strict=True):
        assert np.array_equal(x, y)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in bundled.state_dict().items())
