"""The TinyViT encoder's inference twin: every batch norm folded into its convolution, and GELU
into the convolution or linear layer it follows (``segany.modeling.fused_ops``).

TinyViT's convolutional stage runs at a quarter of the input side with 4x-expanded activations
(256 channels at 256×256 for vit_t), where a separate batch norm and GELU are each one more pass
over 64 MB. Measured on a Zen 4 (AVX-512 bf16, no AMX), vit_t at 1024 px, 2 threads: batch
norm and GELU were ~25 % of the bf16 forward (0.51 s -> 0.43 s with the twin). Equal to the
module's forward within float rounding (tested in ``tests/test_modeling_tinyvit.py``).
Inference only: training, autograd on the weights, hooks and export tracing get the module's
forward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segany.modeling.fused_ops import (
    ConvGelu,
    TwinCache,
    fold_batch_norm,
    linear_gelu,
    shared_copy,
    twin_applies,
)
from segany.modeling.tinyvit.encoder import (
    ConvBN,
    ImageEncoderTinyViT,
    MBConv,
    Mlp,
    PatchEmbed,
    PatchMerging,
)


def _folded(layer: ConvBN) -> nn.Conv2d:
    conv = fold_batch_norm(layer.c, layer.bn)
    if conv is None:
        raise ValueError("TinyViT's batch norms keep running statistics; this one has none")
    return conv


class _ConvsTwin(nn.Module):
    """``MBConv`` (``residual``: gelu(x + conv3(gelu(conv2(gelu(conv1(x))))))) or
    ``PatchMerging`` (conv3(gelu(conv2(gelu(conv1(x)))))) in eval mode."""

    def __init__(self, block: MBConv | PatchMerging, *, residual: bool) -> None:
        super().__init__()
        self.conv1 = ConvGelu(_folded(block.conv1), "none")
        self.conv2 = ConvGelu(_folded(block.conv2), "none")
        self.conv3 = _folded(block.conv3)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.conv2(self.conv1(x)))
        return F.gelu(x + y) if self.residual else y


class _MlpTwin(nn.Module):
    """``Mlp``: fc2(gelu(fc1(norm(x)))), the first layer and its GELU one call."""

    def __init__(self, mlp: Mlp) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = mlp.norm, mlp.fc1, mlp.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_gelu(self.norm(x), self.fc1))


def _twin_modules(module: nn.Module) -> None:
    """Replace, in place under ``module``, every convolutional piece by its twin."""
    for name, child in module.named_children():
        if isinstance(child, MBConv):
            setattr(module, name, _ConvsTwin(child, residual=True))
        elif isinstance(child, Mlp):
            setattr(module, name, _MlpTwin(child))
        elif isinstance(child, PatchMerging):
            setattr(module, name, _ConvsTwin(child, residual=False))
        elif isinstance(child, PatchEmbed):
            first, act, second = child.seq
            assert isinstance(first, ConvBN) and isinstance(second, ConvBN), child
            assert isinstance(act, nn.GELU) and act.approximate == "none", act
            child.seq = nn.Sequential(ConvGelu(_folded(first), "none"), _folded(second))
        elif isinstance(child, ConvBN):  # the attention blocks' depthwise local_conv
            setattr(module, name, _folded(child))
        else:
            _twin_modules(child)


def make_twin(encoder: ImageEncoderTinyViT) -> ImageEncoderTinyViT:
    """A copy of ``encoder`` (eval mode) with folded batch norms and fused GELUs; only the
    folded convolutions get new tensors, every other weight is shared with ``encoder``."""
    twin = shared_copy(encoder)
    _twin_modules(twin)
    return twin


_TWINS = TwinCache(make_twin)  # type: ignore[arg-type]


def forward_with_early(
    encoder: ImageEncoderTinyViT, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encoder.forward_with_early(images)``'s values, through the twin where it applies."""
    if not twin_applies(encoder):
        return encoder.forward_with_early(images)
    twin = _TWINS.get(encoder)
    assert isinstance(twin, ImageEncoderTinyViT)
    return twin.forward_with_early(images)
