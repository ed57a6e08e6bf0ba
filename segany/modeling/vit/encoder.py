"""The ViT image encoder: patch embedding, windowed/global blocks with decomposed relative
positions, and a neck down to the prompt embedding width.

Tensors inside the trunk are channels-last: ``B×H×W×C`` (H, W counted in patches).
"""

from __future__ import annotations

from typing import cast

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


def resample_offsets(rel_pos: torch.Tensor, span: int) -> torch.Tensor:
    """A relative-position table L×D resampled linearly to span×D (as the official code does
    to a table trained for another grid size)."""
    if rel_pos.shape[0] == span:
        return rel_pos
    # L×D -> 1×D×L -> 1×D×span, then back to span×D
    return F.interpolate(rel_pos.t().unsqueeze(0), size=span, mode="linear")[0].t()


def relative_position_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Table T (size×size×D) with T[i, j] = embedding of the offset i - j.

    ``rel_pos`` holds 2·size-1 offsets; a table trained for another size is resampled linearly.
    """
    rel_pos = resample_offsets(rel_pos, 2 * size - 1)
    offsets = torch.arange(size, device=rel_pos.device)
    index = offsets[:, None] - offsets[None, :] + (size - 1)
    return rel_pos[index]


class Attention(nn.Module):
    """Multi-head self-attention over a B×H×W×C grid, with decomposed relative positions.

    The bias ``rel_h[q, key_row] + rel_w[q, key_col]`` is built for a block of (head, query
    rows) at a time and handed to the fused attention kernel: the full L×L score matrix of a
    global block (4096² per head at 1024 px) never sits in memory, unlike scores-then-softmax.
    The block (4 MB: 256 query rows × 4096 keys of one head) is a trade: smaller blocks stay
    in a core's L2 cache but give the kernel few query rows to split between threads and pay
    its per-call cost more often. Measured with 2 threads on a Xeon with 2 MB of L2, one vit_b
    global attention (fp32 / bf16): 1 MB blocks 0.40 / 0.20 s, 4 MB 0.32 / 0.14 s, 8 MB
    0.30 / 0.13 s, 64 MB 0.42 / 0.22 s; the bundled model's whole encoder (2304 tokens) in fp32
    is fastest at 2–4 MB (1 MB 0.138 s, 4 MB 0.132 s, 8 MB 0.150 s).
    Under autograd (training) the bias is built whole and attention runs in one call, which
    holds an L×L bias per head as the official code's scores do.
    """

    bias_block_bytes = 4 << 20  # size of one block of bias values (see above)

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
        """B×H×W×C -> B×H×W×C."""
        b, h, w, _ = x.shape
        # B×H×W×3C -> 3×B×heads×(H·W)×head_dim, one copy
        q, k, v = self.split_heads(self.qkv(x).view(b, h * w, -1)).contiguous()
        out = self.attend_heads(q, k, v, (h, w))
        # B×heads×(H·W)×D -> B×H×W×C
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))

    def split_heads(self, qkv: torch.Tensor) -> torch.Tensor:
        """B×L×3C (q, k, v side by side) -> 3×B×heads×L×head_dim (a view)."""
        b, length, c3 = qkv.shape
        n = self.num_heads
        return qkv.view(b, length, 3, n, c3 // (3 * n)).permute(2, 0, 3, 1, 4)

    def attend_heads(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Attention over grids of ``grid`` = (H, W) tokens: q, k, v B×heads×(H·W)×D ->
        B×heads×(H·W)×D (contiguous inputs run fastest)."""
        if not self.use_rel_pos:
            return F.scaled_dot_product_attention(q, k, v)
        h, w = grid
        b, n, length, d = q.shape
        table_h = relative_position_table(h, self.rel_pos_h)  # H×H×D
        table_w = relative_position_table(w, self.rel_pos_w)  # W×W×D
        # rel_h[g, q, ky] = q(y, x) · T_h[y, ky]; one column per key row / key column.
        # g runs over (image, head) pairs: G = B·heads.
        groups = b * n
        q5 = q.view(b, n, h, w, d)
        rel_h = torch.einsum("bnyxd,ykd->bnyxk", q5, table_h).reshape(groups, length, h, 1)
        rel_w = torch.einsum("bnyxd,xkd->bnyxk", q5, table_w).reshape(groups, length, 1, w)
        # 1×G×L×D: the fused (flash) kernel takes 4-D inputs only; 3-D ones run unfused
        q3, k3, v3 = (t.reshape(1, groups, length, d) for t in (q, k, v))
        # one block: `per` groups × `rows` query rows × all keys, about bias_block_bytes
        rows = min(length, max(1, self.bias_block_bytes // (4 * length)))
        per = max(1, self.bias_block_bytes // (4 * rows * length))
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        # Under autograd every block's slice would cost, in the backward, a zero gradient the
        # size of the whole input plus an add: quadratic in the blocks (a tiny model's
        # encoder backward at 384 px measured 3.7x slower). Training takes the one call.
        training = torch.is_grad_enabled() and (q.requires_grad or table_h.requires_grad)
        if exporting or training or (rows >= length and per >= groups):  # one call
            bias = (rel_h + rel_w).reshape(1, groups, length, length)
            return F.scaled_dot_product_attention(q3, k3, v3, attn_mask=bias).view(b, n, length, d)
        out = q3.new_empty(1, groups, length, d)
        for g in range(0, groups, per):
            gs = slice(g, g + per)
            for s in range(0, length, rows):
                rs = slice(s, s + rows)
                bias = (rel_h[gs, rs] + rel_w[gs, rs]).flatten(2)  # per×rows×L
                out[:, gs, rs] = F.scaled_dot_product_attention(
                    q3[:, gs, rs], k3[:, gs], v3[:, gs], attn_mask=bias.unsqueeze(0)
                )
        return out.view(b, n, length, d)


def windowed_attention(attn: Attention, x: torch.Tensor, window: int) -> torch.Tensor:
    """``attn`` within non-overlapping window×window tiles of a B×H×W×C grid -> B×H×W×C.

    The official model zero-pads the normalised grid up to whole windows before the attention's
    linear layers. A zero token's q, k, v are what ``attn.qkv`` gives for a zero vector (its
    bias), so here the linear layers run on the real tokens only and the padding gets that
    value: the same values (to float rounding) with about a fifth less work at 1024 px
    (64 → 70 tokens a side).
    """
    b, h, w, c = x.shape
    # windows per column / row; written with positive operands because an ONNX export traces
    # // as integer division, which truncates (-(-16 // 6) would give 2, not 3)
    nh, nw = (h + window - 1) // window, (w + window - 1) // window
    hp, wp = nh * window, nw * window
    qkv = attn.qkv(x)  # B×H×W×3C
    if (hp, wp) != (h, w):
        grid = qkv.new_empty(b, hp, wp, qkv.shape[-1])
        grid[:, :h, :w] = qkv
        zero_token = attn.qkv(x.new_zeros(1, c))[0]  # 3C
        grid[:, h:] = zero_token
        grid[:, :h, w:] = zero_token
        qkv = grid
    n = attn.num_heads
    d = qkv.shape[-1] // (3 * n)
    # B×(nh·win)×(nw·win)×3C -> 3×(B·nh·nw)×heads×win²×D in one copy
    tiles = qkv.view(b, nh, window, nw, window, 3, n, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
    q, k, v = tiles.reshape(3, b * nh * nw, n, window * window, d)
    out = attn.attend_heads(q, k, v, (window, window))  # (B·nh·nw)×heads×win²×D
    # -> B×(nh·win)×(nw·win)×C, then the padding cut off
    out = out.view(b, nh, nw, n, window, window, d).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(b, hp, wp, n * d)
    if (hp, wp) != (h, w):
        out = out[:, :h, :w].contiguous()
    return attn.proj(out)


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
            y = windowed_attention(self.attn, y, self.window_size)
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

    def first_global_block(self) -> int:
        """Index of the first block that attends over the whole grid (SAM-HQ's early feature
        map is its output); ``ValueError`` when every block is windowed."""
        for i, block in enumerate(self.blocks):
            if cast(Block, block).window_size == 0:
                return i
        raise ValueError("this ViT has no global-attention block, so no early feature map")

    def forward_with_early(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×3×S×S -> (``forward``'s B×C×h×w embeddings, the B×h×w×E output of the first
        global-attention block)."""
        first = self.first_global_block()
        x = self.patch_embed(x) + self.pos_embed
        early = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == first:
                early = x
        return self.neck(x.permute(0, 3, 1, 2)), early
