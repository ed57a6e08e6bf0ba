"""Test helpers: small configs, seeded weights, and the same weights in the reference model."""

from __future__ import annotations

import torch

from segany.config import DecoderConfig, PromptConfig
from segany.modeling.vit import ViTConfig
from segany.models import SamConfig, build_sam

# Small enough for fast tests, built from the same modules as the official sizes:
# 2 blocks (one windowed, one global), 16×16 embedding grid, 64×64 low-res masks.
SMALL = SamConfig(
    "test",
    ViTConfig(64, 2, 2, (1,), image_size=256, patch_size=16, window_size=4),
    decoder=DecoderConfig(mlp_dim=256),
)

# The training tests' model: 64 px input, 8×8 embedding, every width small enough that a few
# optimiser steps take a second.
TRAIN_SMALL = SamConfig(
    "test-train",
    ViTConfig(32, 2, 2, (1,), image_size=64, patch_size=8, window_size=4),
    prompt=PromptConfig(embed_dim=32),
    decoder=DecoderConfig(mlp_dim=64, iou_head_hidden_dim=32),
)


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Add seeded noise to every parameter and buffer (zero-initialised ones included), so a
    comparison exercises all weights. LayerNorm weights stay near 1 to keep activations sane."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, t in sorted(model.state_dict(keep_vars=True).items()):
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype)
            if t.dim() == 1 and (t == 1).all():
                t.add_(0.1 * noise)
            else:
                fan = t[0].numel() if t.dim() > 1 else t.numel()
                t.add_(scale * noise / max(fan, 1) ** 0.5)
    return model


def seeded_model(config: SamConfig = SMALL, seed: int = 0):
    """The same weights on every run: seeded initialisation (global RNG left untouched), then
    seeded noise on every tensor."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam(config)
    return perturb_(model, seed).eval()


def reference_model(config: SamConfig, state_dict: dict | None = None):
    """The reference `segment_anything` Sam with the same sizes (and weights, if given)."""
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    enc, dec = config.encoder, config.decoder
    assert isinstance(enc, ViTConfig), "the reference package holds the ViT encoder only"
    grid = config.embedding_size
    dim = config.prompt.embed_dim
    ref = Sam(
        image_encoder=ImageEncoderViT(
            depth=enc.depth,
            embed_dim=enc.embed_dim,
            img_size=enc.image_size,
            mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads,
            patch_size=enc.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(enc.global_attn_indexes),
            window_size=enc.window_size,
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=dec.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=dec.depth,
                embedding_dim=dim,
                mlp_dim=dec.mlp_dim,
                num_heads=dec.num_heads,
            ),
            transformer_dim=dim,
            iou_head_depth=dec.iou_head_depth,
            iou_head_hidden_dim=dec.iou_head_hidden_dim,
        ),
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    )
    if state_dict is not None:
        ref.load_state_dict(state_dict, strict=True)
    return ref.eval()


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference over the largest magnitude of the reference."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def disc_image(h: int, w: int, seed: int, discs: int = 5, radius: tuple[int, int] = (10, 40)):
    """An H×W×3 uint8 dark noisy image with ``discs`` bright discs (radius in ``radius`` px,
    upper bound excluded), seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.ogrid[:h, :w]
    for _ in range(discs):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(*radius)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(120, 255, 3)
    return image
