"""The TinyViT image encoder (MobileSAM): a convolutional stem and stage, windowed-attention
stages with a depthwise convolution between attention and MLP, and SAM's neck.

Attribute names follow the official checkpoint (``patch_embed.seq.0.c``, ``layers.N.blocks.M``,
``attn.attention_biases``, ``neck.K``), so ``mobile_sam.pt`` loads strictly. Layouts: the
convolutional parts take B×C×H×W; the attention stages carry B×H×W×C (channels-last, H and W
in grid cells), the layout their linear layers and windows want.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segany.modeling.common import LayerNorm2d


class ConvBN(nn.Module):
    """A bias-free convolution followed by batch norm ("same" padding): B×Cin×H×W ->
    B×Cout×H/stride×W/stride (sides rounded up)."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, *, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


def _residual(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole branch per sample with probability ``rate``."""
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(keep)
    return x * mask / keep


class PatchEmbed(nn.Module):
    """Two stride-2 3×3 convolutions: B×3×S×S -> B×C×S/4×S/4."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        # index 1 is the activation, so the second convolution is ``seq.2`` as in the file
        self.seq = nn.Sequential(
            ConvBN(in_chans, dim // 2, 3, stride=2), nn.GELU(), ConvBN(dim // 2, dim, 3, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (expand 1×1, depthwise 3×3, project 1×1): B×C×H×W -> same."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)
        nn.init.zeros_(self.conv3.bn.weight)  # a fresh block starts as the identity
        self.drop_path = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + _residual(self.conv3(y), self.drop_path, self.training))


class PatchMerging(nn.Module):
    """Downsampling between stages: 1×1, depthwise 3×3 with ``stride``, 1×1.
    B×C×H×W -> B×Cout×H/stride×W/stride."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


def window_bias_index(window: int) -> torch.Tensor:
    """win²×win² index into a head's table of window² biases: the bias of a query/key pair
    depends only on their distance (|dy|, |dx|), stored at |dy|·window + |dx| (the official
    table's order). Tokens are numbered row by row inside the window."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Multi-head attention inside window×window tiles, with a learned bias per head and
    distance. ``qkv`` packs, per head, that head's query, key and value side by side."""

    def __init__(self, dim: int, *, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        # Derived from the window alone, so not part of the weights (nor of the official file).
        self.bias_index: torch.Tensor
        self.register_buffer("bias_index", window_bias_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×H×W×C -> B×H×W×C: each token attends to the tokens of its window.

        The grid is padded at the bottom and right to whole windows, as the official model
        does with zero tokens before normalising. A zero token normalises to the norm's bias,
        so its q, k, v are ``qkv(norm(0))``: the linear layers run on the real tokens only and
        the padding is filled with that one value (padding tokens are attended to, as there).
        """
        b, h, w, c = x.shape
        win, n = self.window, self.num_heads
        nh, nw = (h + win - 1) // win, (w + win - 1) // win
        hp, wp = nh * win, nw * win
        qkv = self.qkv(self.norm(x))  # B×H×W×3C
        if (hp, wp) != (h, w):
            grid = qkv.new_empty(b, hp, wp, 3 * c)
            grid[:, :h, :w] = qkv
            pad_token = self.qkv(self.norm(x.new_zeros(1, c)))[0]  # 3C
            grid[:, h:] = pad_token
            grid[:, :h, w:] = pad_token
            qkv = grid
        d = c // n
        # B×(nh·win)×(nw·win)×(heads·3·D) -> 3×(B·nh·nw)×heads×win²×D, windows in row order
        tiles = qkv.view(b, nh, win, nw, win, n, 3, d).permute(6, 0, 1, 3, 5, 2, 4, 7)
        q, k, v = tiles.reshape(3, b * nh * nw, n, win * win, d)
        bias = self.attention_biases[:, self.bias_index]  # heads×win²×win²
        # The official formula, spelled out: with a bias, scaled_dot_product_attention falls
        # back to its reference path on the CPU, which also checks every row for -inf (2.5x
        # slower on these windows, fp32 and bf16 alike)
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(d**-0.5).add_(bias.to(q.dtype))
        out = torch.matmul(scores.softmax(dim=-1), v)
        # (B·nh·nw)×heads×win²×D -> B×(nh·win)×(nw·win)×C, then the padding cut off
        # (reshape: a kernel may hand back its output as a strided view)
        out = out.reshape(b, nh, nw, n, win, win, d).permute(0, 1, 4, 2, 5, 3, 6)
        out = out.reshape(b, hp, wp, c)
        if (hp, wp) != (h, w):
            out = out[:, :h, :w]
        return self.proj(out)


class Mlp(nn.Module):
    """Pre-norm MLP: B×…×C -> B×…×C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, a depthwise convolution (mixing across windows), an MLP; residuals
    around attention and MLP. B×H×W×C -> B×H×W×C."""

    def __init__(
        self, dim: int, *, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads=num_heads, window=window)
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + _residual(self.attn(x), self.drop_path, self.training)
        # the convolution reads B×C×H×W: a permuted view (channels-last memory), no copy
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + _residual(self.mlp(x), self.drop_path, self.training)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks, then the merge into stage 1. B×C×H×W -> B×C'×H'×W'."""

    def __init__(self, dim: int, *, depth: int, expand_ratio: float, merge: PatchMerging) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1..: TinyViT blocks, then (except the last stage) the merge into the next.
    B×H×W×C -> B×H'×W'×C'."""

    def __init__(self, blocks: list[TinyViTBlock], merge: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:  # convolutions read B×C×H×W
            x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class ImageEncoderTinyViT(nn.Module):
    """B×3×S×S normalised, padded images -> B×out_chans×(S/stride)×(S/stride) embeddings."""

    def __init__(
        self,
        *,
        img_size: int,
        embed_dims: tuple[int, ...],
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        window_sizes: tuple[int, ...],
        merge_strides: tuple[int, ...],
        out_chans: int,
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        """A TinyViT backbone with SAM's neck (see ``TinyViTConfig`` for the sizes' meaning).

        Args:
            img_size: side S of the square, padded input (1024 for MobileSAM).
            embed_dims: width of each stage (stage 0 convolutional).
            depths: blocks per stage.
            num_heads: attention heads of each attention stage (stages 1..).
            window_sizes: attention window side of each attention stage.
            merge_strides: stride of the downsampling into each stage after the first.
            out_chans: channels of the output embedding (the prompt width, 256).
            mlp_ratio: MLP width of the attention blocks as a multiple of the stage width.
            mbconv_expand_ratio: hidden width of stage 0's blocks as a multiple of its width.
            local_conv_size: kernel of the depthwise convolution inside attention blocks.
            num_classes: outputs of the unused ImageNet head kept from pretraining (0: none).
            in_chans: image channels (3).
        """
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        merges = [
            PatchMerging(embed_dims[i], embed_dims[i + 1], merge_strides[i])
            for i in range(len(merge_strides))
        ]
        stages: list[nn.Module] = [
            ConvStage(
                embed_dims[0], depth=depths[0], expand_ratio=mbconv_expand_ratio, merge=merges[0]
            )
        ]
        for i in range(1, len(embed_dims)):
            blocks = [
                TinyViTBlock(
                    embed_dims[i],
                    num_heads=num_heads[i - 1],
                    window=window_sizes[i - 1],
                    mlp_ratio=mlp_ratio,
                    local_conv_size=local_conv_size,
                )
                for _ in range(depths[i])
            ]
            stages.append(AttentionStage(blocks, merges[i] if i < len(merges) else None))
        self.layers = nn.ModuleList(stages)
        last = embed_dims[-1]
        self.norm_head = nn.LayerNorm(last)
        self.head = nn.Linear(last, num_classes) if num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(last, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_early(x)[0]

    def forward_with_early(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×3×S×S -> (B×C×h×w embeddings, the B×h'×w'×E output of stage 1, merge included:
        SAM-HQ's early feature map, on the embedding's grid for the official sizes). The early
        map is a tensor the forward makes anyway, so ``forward`` costs nothing more for it."""
        # Channels-last memory from the start: oneDNN's convolutions (the depthwise ones
        # above all) run ~2× faster on it on the CPU, and the permutes between the
        # convolutions' B×C×H×W and the attention stages' B×H×W×C become views. The whole
        # encoder measured 1.11 s -> 0.86 s at 1024 px, 2 threads (the official: 1.03 s).
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.layers[0](self.patch_embed(x))  # B×C1×H1×W1
        x = x.permute(0, 2, 3, 1)  # channels-last for the attention stages
        early = x = self.layers[1](x)
        for stage in self.layers[2:]:
            x = stage(x)
        return self.neck(x.permute(0, 3, 1, 2)), early  # channels-last -> B×C×H×W

    def all_blocks(self) -> list[nn.Module]:
        """Every block in order, stage by stage (MBConv and TinyViT blocks)."""
        return [block for stage in self.layers for block in stage.blocks]  # type: ignore[union-attr]
