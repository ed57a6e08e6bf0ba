"""The ViT image encoder: patch embedding, windowed/global blocks with decomposed relative
positions, and a neck down to the prompt embedding width.

Tensors inside the trunk are channels-last: ``B×H×W×C`` (H, W counted in patches).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segany.modeling.common import LayerNorm2d, MLPBlock


class PatchEmbed(nn.Module):
    """Non-overlapping patches to vectors: B×3×H×W -> B×(H/p)×(W/p)×C."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # to channels-last


def relative_position_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Table T (size×size×D) with T[i, j] = embedding of the offset i - j.

    ``rel_pos`` holds 2·size-1 offsets; a table trained for another size is resampled linearly.
    """
    span = 2 * size - 1
    if rel_pos.shape[0] != span:
        # 1×D×L -> 1×D×span, then back to span×D
        rel_pos = F.interpolate(rel_pos.t().unsqueeze(0), size=span, mode="linear")[0].t()
    offsets = torch.arange(size, device=rel_pos.device)
    index = offsets[:, None] - offsets[None, :] + (size - 1)
    return rel_pos[index]


class Attention(nn.Module):
    """Multi-head self-attention over a B×H×W×C grid, with decomposed relative positions.

    The bias ``rel_h[q, key_row] + rel_w[q, key_col]`` is built for one block of query rows at a
    time and handed to the fused attention kernel, so the full L×L score matrix of a global
    block (4096² per head at 1024 px) never sits in memory, unlike scores-then-softmax.
    """

    query_chunk = 1024  # rows of queries per fused call; trades peak memory for call overhead

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("relative positions need the attention grid's input_size")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        n = self.num_heads
        # B×H×W×3C -> 3×B×heads×(H·W)×head_dim
        qkv = self.qkv(x).reshape(b, h * w, 3, n, c // n).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.use_rel_pos:
            out = self._rel_pos_attention(q, k, v, h, w)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        # B×heads×(H·W)×D -> B×H×W×C
        out = out.reshape(b, n, h, w, c // n).permute(0, 2, 3, 1, 4).reshape(b, h, w, c)
        return self.proj(out)

    def _rel_pos_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int, w: int
    ) -> torch.Tensor:
        """q, k, v: B×heads×(H·W)×D -> B×heads×(H·W)×D with the relative-position bias."""
        b, n, length, d = q.shape
        q5 = q.reshape(b, n, h, w, d)
        table_h = relative_position_table(h, self.rel_pos_h)  # H×H×D
        table_w = relative_position_table(w, self.rel_pos_w)  # W×W×D
        # rel_h[..., y, x, ky] = q(y, x) · T_h[y, ky]; one column per key row / key column
        rel_h = torch.einsum("bnyxd,ykd->bnyxk", q5, table_h).reshape(b, n, length, h, 1)
        rel_w = torch.einsum("bnyxd,xkd->bnyxk", q5, table_w).reshape(b, n, length, 1, w)
        if length <= self.query_chunk:
            bias = (rel_h + rel_w).reshape(b, n, length, length)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = torch.empty_like(q)
        for s in range(0, length, self.query_chunk):
            rows = slice(s, s + self.query_chunk)
            bias = (rel_h[:, :, rows] + rel_w[:, :, rows]).reshape(b, n, -1, length)
            out[:, :, rows] = F.scaled_dot_product_attention(q[:, :, rows], k, v, attn_mask=bias)
        return out


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B×H×W×C -> (B·nW)×window×window×C, zero-padding H and W up to multiples of ``window``."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.transpose(2, 3).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of ``window_partition``: (B·nW)×window×window×C -> B×H×W×C without the padding."""
    hp, wp = padded
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.transpose(2, 3).reshape(b, hp, wp, -1)
    return x[:, : size[0], : size[1], :].contiguous()


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when ``window_size`` > 0, else global.

    ``drop_path`` (stochastic depth, training only) holds no weights; trainers may set it.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads=num_heads, input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size
        self.drop_path = 0.0

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            size = (y.shape[1], y.shape[2])
            y, padded = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded, size)
        else:
            y = self.attn(y)
        x = x + self._residual(y)
        return x + self._residual(self.mlp(self.norm2(x)))


class ImageEncoderViT(nn.Module):
    """B×3×S×S normalised, padded images -> B×out_chans×(S/p)×(S/p) embeddings."""

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        out_chans: int,
        window_size: int,
        global_attn_indexes: tuple[int, ...],
        in_chans: int = 3,
    ) -> None:
        """A ViT backbone (windowed + global attention blocks) with a convolutional neck.

        Args:
            img_size: side S of the square, padded input (1024 for the official models).
            patch_size: side p of a patch; the embedding grid is S/p on each side.
            embed_dim: width of the transformer blocks (768 / 1024 / 1280 for vit_b/l/h).
            depth: number of transformer blocks.
            num_heads: attention heads per block.
            mlp_ratio: hidden width of each block's MLP as a multiple of ``embed_dim``.
            out_chans: channels of the output embedding (the prompt embedding width, 256).
            window_size: side of the attention windows in windowed blocks (14 official).
            global_attn_indexes: indexes of the blocks that attend over the whole grid.
            in_chans: image channels (3).
        """
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))  # channels-last -> B×C×H×W
