"""The EfficientViT encoder's inference twin: batch norm folded into the convolutions before it,
and GELU into the convolution it follows.

In eval mode a batch norm is a per-channel affine map, so ``norm(conv(x))`` is one convolution
with scaled weights and a bias: the twin skips one pass over every activation the backbone and
the neck make. Where a convolution is followed by GELU, the twin runs both in one oneDNN call
(the activation as the convolution's post-op, applied while the output is still in cache):
GELU on the 4x-expanded activations was a quarter of l0's time in bf16. It is a copy of the
encoder (made once per encoder and remade when its weights change), run in channels-last memory
like the encoder itself. Equal to ``forward`` within float rounding (~1.5e-6 relative in fp32;
tested in ``tests/test_modeling_efficientvit.py``). Measured on 2 threads: folding, l0 at 512 px
0.31 -> 0.27 s, xl0 at 1024 px 1.38 -> 1.35 s (the official code 0.39 and 1.77 s in the same
runs); the GELU post-op, l0 on a Zen 4 (AVX-512 bf16, no AMX) fp32 0.468 -> 0.415 s and bf16
0.298 -> 0.230 s.
"""

from __future__ import annotations

import torch
from torch import nn

from segany.modeling.efficientvit.encoder import ImageEncoderEfficientViT
from segany.modeling.efficientvit.ops import ConvLayer
from segany.modeling.fused_ops import (
    ConvGelu,
    TwinCache,
    fold_batch_norm,
    shared_copy,
    twin_applies,
)


def fold_batch_norms(encoder: ImageEncoderEfficientViT) -> ImageEncoderEfficientViT:
    """A copy of ``encoder`` (eval mode) whose convolutions carry their batch norms and whose
    convolutions followed by GELU run as one call (``ConvGelu``). Only the folded convolutions
    get new tensors: every other weight is the encoder's own, shared (xl1's copy would
    otherwise hold another 800 MB)."""
    folded = shared_copy(encoder)
    for layer in folded.modules():
        if isinstance(layer, ConvLayer) and layer.norm is not None:
            conv = fold_batch_norm(layer.conv, layer.norm)
            if conv is not None:
                layer.conv, layer.norm = conv, None
    _fuse_activations(folded)
    return folded


def _fuse_activations(module: nn.Module) -> None:
    """Every norm-free ``ConvLayer`` with GELU in ``module`` replaced by a ``ConvGelu`` on the
    same convolution (the encoder's activation, GELU's tanh form), in place."""
    for name, child in module.named_children():
        if isinstance(child, ConvLayer) and child.act and child.norm is None:
            setattr(module, name, ConvGelu(child.conv, "tanh"))
        else:
            _fuse_activations(child)


_TWINS = TwinCache(fold_batch_norms)  # type: ignore[arg-type]


def fused_forward(encoder: ImageEncoderEfficientViT, images: torch.Tensor) -> torch.Tensor:
    """``encoder(images)`` through its folded copy: B×3×S×S -> B×C×G×G. Runs the encoder
    itself in training mode (batch statistics), when a gradient must reach its weights, with
    hooks on it, or while tracing for export."""
    if not twin_applies(encoder):
        return encoder(images)
    return _TWINS.get(encoder)(images)
