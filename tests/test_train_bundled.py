"""The bundled segany-tiny model loads and keeps the quality its model card states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segany.checkpoints import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no bundled model")

CARD = Path(__file__).resolve().parents[1] / "MODEL_CARD.md"


def _stated() -> dict:
    """The figures MODEL_CARD.md states, from its machine-readable line."""
    for line in CARD.read_text().splitlines():
        if line.startswith("<!-- quality:"):
            return json.loads(line[len("<!-- quality:") : -len("-->")])
    raise AssertionError("MODEL_CARD.md has no '<!-- quality: {...} -->' line")


def test_bundled_model_is_tiny_and_loads_into_the_reference_modules():
    import sys

    import torch

    from segany.checkpoints import load_model, load_state_dict

    model = load_model()
    cfg = model.config
    assert cfg.name == "tiny" and DEFAULT_MODEL.stat().st_size < 25e6
    sys.path.insert(0, str(Path(__file__).parent / "stubs"))
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    emb = cfg.image_size // cfg.patch_size
    ref = Sam(
        image_encoder=ImageEncoderViT(
            depth=cfg.encoder_depth,
            embed_dim=cfg.encoder_embed_dim,
            img_size=cfg.image_size,
            mlp_ratio=cfg.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=cfg.encoder_num_heads,
            patch_size=cfg.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=cfg.encoder_global_attn_indexes,
            window_size=cfg.window_size,
            out_chans=cfg.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(cfg.image_size, cfg.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_num_heads,
            ),
            transformer_dim=cfg.prompt_embed_dim,
            iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
    )
    _, state = load_state_dict(DEFAULT_MODEL)
    ref.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def test_bundled_model_reaches_its_stated_quality_on_fresh_scenes():
    import torch

    from segany.checkpoints import load_model
    from segany.train.quality import measure, synthetic_samples

    torch.manual_seed(0)
    stated = _stated()
    # 30 fresh scenes from a seed neither training nor the card's measurement used.
    result = measure(load_model(), synthetic_samples(30, seed=777))
    # A small set scatters around the card's figure: allow a margin of 0.06.
    assert result["point_miou"] >= stated["synthetic_point_miou"] - 0.06
    assert result["box_miou"] >= stated["synthetic_box_miou"] - 0.06
