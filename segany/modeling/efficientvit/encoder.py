"""The EfficientViT-SAM image encoder: EfficientViT's large backbone, the SAM neck and a channel
LayerNorm (``backbone``, ``neck``, ``norm``: the official checkpoint's names).

B×3×S×S normalised, padded images -> B×C×G×G embeddings (G = ``embedding_size``, 64 for the
official models whatever S: the neck resizes its inputs to the grid).
"""

from __future__ import annotations

import torch
from torch import nn

from segany.modeling.common import LayerNorm2d
from segany.modeling.efficientvit.config import ATTENTION_BLOCKS, EfficientViTConfig
from segany.modeling.efficientvit.ops import (
    ConvLayer,
    EfficientViTBlock,
    OpSequential,
    Residual,
    Resize,
    local_block,
)


class Backbone(nn.Module):
    """EfficientViT's large backbone: ``stages[i]`` halves the side and gives ``widths[i]``
    channels. B×3×S×S -> the list of every stage's output, B×widths[i]×S/2^(i+1)×S/2^(i+1)."""

    def __init__(self, cfg: EfficientViTConfig, in_chans: int = 3) -> None:
        super().__init__()
        eps, w = cfg.norm_eps, cfg.widths
        stem: list[nn.Module] = [ConvLayer(in_chans, w[0], 3, stride=2, act=True, eps=eps)]
        for _ in range(cfg.depths[0]):
            block = local_block(
                cfg.blocks[0],
                w[0],
                w[0],
                stride=1,
                expand=cfg.expand_ratios[0],
                fewer_norm=cfg.fewer_norms[0],
                eps=eps,
            )
            stem.append(Residual(block, shortcut=True))
        stages = [OpSequential(stem)]
        for i in range(1, len(w)):
            kind, expand, fewer = cfg.blocks[i], cfg.expand_ratios[i], cfg.fewer_norms[i]
            # The stride-2 entry block: an inverted residual (fused where the stage's blocks
            # are) expanding four times the stage's ratio.
            down = local_block(
                kind if kind in ("mb", "fmb") else "mb",
                w[i - 1],
                w[i],
                stride=2,
                expand=4 * expand,
                fewer_norm=fewer,
                eps=eps,
            )
            ops: list[nn.Module] = [Residual(down, shortcut=False)]
            for _ in range(cfg.depths[i]):
                if kind in ATTENTION_BLOCKS:
                    scales = (3,) if kind == "att@3" else (5,)
                    ops.append(
                        EfficientViTBlock(
                            w[i], dim=cfg.qkv_dim, expand=expand, scales=scales, eps=eps
                        )
                    )
                else:
                    block = local_block(
                        kind, w[i], w[i], stride=1, expand=expand, fewer_norm=fewer, eps=eps
                    )
                    ops.append(Residual(block, shortcut=True))
            stages.append(OpSequential(ops))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class SamNeck(nn.Module):
    """The chosen stages' outputs, each projected to ``neck_width`` (1×1 + BN) and resized to
    the embedding grid, summed, refined by residual blocks, projected to ``out_chans``.
    Stage outputs -> B×out_chans×G×G."""

    def __init__(self, cfg: EfficientViTConfig, out_chans: int) -> None:
        super().__init__()
        eps, width = cfg.norm_eps, cfg.neck_width
        self.stages = cfg.neck_stages
        self.input_ops = nn.ModuleList(
            OpSequential([ConvLayer(cfg.widths[s], width, 1, eps=eps), Resize(cfg.embedding_size)])
            for s in cfg.neck_stages
        )
        self.middle = OpSequential(
            [
                Residual(
                    local_block(
                        cfg.neck_block,
                        width,
                        width,
                        stride=1,
                        expand=cfg.neck_expand_ratio,
                        fewer_norm=False,
                        eps=eps,
                    ),
                    shortcut=True,
                )
                for _ in range(cfg.neck_depth)
            ]
        )
        self.output_ops = nn.ModuleList(
            [OpSequential([ConvLayer(width, out_chans, 1, bias=True, norm=False, eps=eps)])]
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        parts = [op(features[s]) for s, op in zip(self.stages, self.input_ops, strict=True)]
        # summed right to left, a + (b + c), the official order (float addition is not
        # associative)
        total = parts[-1]
        for part in reversed(parts[:-1]):
            total = part + total
        return self.output_ops[0](self.middle(total))


class ImageEncoderEfficientViT(nn.Module):
    """B×3×S×S normalised, padded images -> B×out_chans×G×G embeddings."""

    def __init__(self, cfg: EfficientViTConfig, *, out_chans: int, in_chans: int = 3) -> None:
        """An EfficientViT-SAM encoder with ``cfg``'s sizes (see ``EfficientViTConfig``) whose
        embeddings have ``out_chans`` channels (the prompt width, 256)."""
        super().__init__()
        self.img_size = cfg.image_size
        self.backbone = Backbone(cfg, in_chans)
        self.neck = SamNeck(cfg, out_chans)
        self.norm = LayerNorm2d(out_chans, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last memory throughout: oneDNN's convolutions, the depthwise ones above
        # all, run faster on it on the CPU (2 threads: l0 at 512 px 0.41 -> 0.31 s, xl0 at
        # 1024 px 1.76 -> 1.38 s; the official code 0.39 and 1.77 s in the same runs).
        x = x.contiguous(memory_format=torch.channels_last)
        return self.norm(self.neck(self.backbone(x))).contiguous()
