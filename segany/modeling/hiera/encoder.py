"""The Hiera trunk and SAM 2's FPN neck as one image encoder (``ImageEncoderHiera``).

Parameter names follow the official checkpoints (``image_encoder.trunk.*``,
``image_encoder.neck.convs.N.conv.*``). Two pieces the official model keeps elsewhere live here,
renamed at the loading boundary (``segany.checkpoints.sam2_keys``), because they belong to the
image side of the image path: the decoder's ``conv_s0``/``conv_s1`` (applied once per image to
the high-resolution levels) and ``no_mem_embed`` (added to the embedding when there is no
memory, as for every still image).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segany.modeling.hiera.config import HieraConfig


def _pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """B×H×W×C -> B×(H/s)×(W/s)×C by max-pooling (floor, as ``nn.MaxPool2d``)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)


def _windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B×H×W×C -> (B·n×size×size×C windows, padded (H', W')); zero-padded to whole windows."""
    b, h, w, c = x.shape
    ph, pw = (size - h % size) % size, (size - w % size) % size
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // size, size, wp // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size, size, c), (hp, wp)


def _unwindow(
    x: torch.Tensor, size: int, padded: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of ``_windows``: B·n×size×size×C -> B×H×W×C (padding cropped)."""
    hp, wp = padded
    b = x.shape[0] // ((hp // size) * (wp // size))
    x = x.reshape(b, hp // size, wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    if hp > hw[0] or wp > hw[1]:
        x = x[:, : hw[0], : hw[1], :]
    return x


class HieraMLP(nn.Module):
    """``layers.1(GELU(layers.0(x)))`` (the official key names)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](self.act(self.layers[0](x)))


class MultiScaleAttention(nn.Module):
    """Multi-head attention on B×H×W×C tokens; with ``q_stride`` the queries (and so the
    output grid) are max-pooled by that factor."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int = 0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×H×W×C -> B×H'×W'×C_out (H' = H / q_stride when pooling)."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # B×N×heads×d
        if self.q_stride:
            q = _pool(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


# keys up to which bf16 attention on the CPU is spelled out (windows; not the global blocks)
_SPELLED_OUT_KEYS = 1024


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v, B×heads×Nq×d, B×heads×Nk×d (twice) -> B×heads×Nq×d:
    ``scaled_dot_product_attention`` (the official call), except bf16 windows on the CPU,
    spelled out as two matrix products and a softmax: there the fused kernel was ~1.7-2x
    slower on a Zen 4 without AMX (Hiera-T's windows of 16-196 tokens; at 4096 keys it is
    the faster one)."""
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and k.shape[-2] <= _SPELLED_OUT_KEYS:
        scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
        return torch.matmul(scores.softmax(dim=-1), v)
    return F.scaled_dot_product_attention(q, k, v)


class MultiScaleBlock(nn.Module):
    """Pre-norm block: (windowed or global) attention, then an MLP; a block that changes width
    projects and pools its shortcut too."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        mlp_ratio: float,
        q_stride: int,
        window_size: int,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = HieraMLP(dim_out, int(dim_out * mlp_ratio))
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        self.drop_path = 0.0  # stochastic depth rate in training (set by the family)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path <= 0:
            return x
        keep = 1 - self.drop_path
        mask = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×H×W×C -> B×H'×W'×C_out."""
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = _pool(shortcut, self.q_stride)
        size = self.window_size
        padded = (0, 0)
        if size > 0:
            x, padded = _windows(x, size)
        x = self.attn(x)
        hw = (shortcut.shape[1], shortcut.shape[2])
        if size > 0:
            if self.q_stride:  # the windows shrank with the pooled queries
                size //= self.q_stride
                padded = (
                    hw[0] + (size - hw[0] % size) % size,
                    hw[1] + (size - hw[1] % size) % size,
                )
            x = _unwindow(x, size, padded, hw)
        x = shortcut + self._drop(x)
        return x + self._drop(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """7×7 convolution of stride 4: B×3×S×S -> B×S/4×S/4×C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class HieraTrunk(nn.Module):
    """The four stages: B×3×S×S -> one B×C_i×(S/4/2^i)² map per stage."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *cfg.window_pos_embed_bkg_spatial_size))
        first = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, dim, first, first))
        self.stage_ends = cfg.stage_ends()
        # The first block of stages 2-4 pools its queries.
        pool_blocks = {end + 1 for end in self.stage_ends[:-1]}
        heads, stage = cfg.num_heads, 0
        blocks = []
        for i in range(cfg.depth):
            dim_out = dim
            # The window lags by a block: a stage's first block still uses the previous one's.
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            if i - 1 in self.stage_ends:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    heads,
                    mlp_ratio=cfg.mlp_ratio,
                    q_stride=2 if i in pool_blocks else 0,
                    window_size=window,
                )
            )
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)

    def position_table(self, h: int, w: int) -> torch.Tensor:
        """1×h×w×C: the background table resized bicubically plus the window table tiled."""
        table = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        # (repeat, which equals tile here: the ONNX export of tile adds a rank-checking branch)
        table = table + win.repeat(1, 1, h // win.shape[2], w // win.shape[3])
        return table.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self.position_table(x.shape[1], x.shape[2])
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


class _Lateral(nn.Module):
    """One neck level's 1×1 projection (the official ``convs.N.conv``)."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FpnNeck(nn.Module):
    """Each stage projected to ``out`` channels (``convs[0]`` reads the deepest); the stride-16
    level adds the stride-32 level upsampled (nearest), the two finer levels are lateral only."""

    def __init__(self, dims: tuple[int, ...], out: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_Lateral(d, out) for d in reversed(dims))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Stage maps (fine to coarse) -> the three finest levels B×out×(S/4)², (S/8)², (S/16)²
        (the coarsest only feeds the stride-16 level)."""
        n = len(self.convs) - 1
        top = self.convs[0](feats[n])
        level2 = self.convs[1](feats[n - 1]) + F.interpolate(
            top.float(), scale_factor=2.0, mode="nearest"
        )
        return [self.convs[n](feats[0]), self.convs[n - 1](feats[1]), level2]


class ImageEncoderHiera(nn.Module):
    """SAM 2's image side for still images.

    ``forward``: B×3×S×S normalised images -> B×C×S/16×S/16 embeddings (the neck's stride-16
    level plus ``no_mem_embed``). ``forward_with_early`` also returns the decoder's
    high-resolution features packed in one map (see ``pack_high_res``).
    """

    def __init__(self, cfg: HieraConfig, out_chans: int) -> None:
        super().__init__()
        self.img_size = cfg.image_size
        self.trunk = HieraTrunk(cfg)
        self.neck = FpnNeck(cfg.stage_dims(), out_chans)
        self.conv_s0 = nn.Conv2d(out_chans, out_chans // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(out_chans, out_chans // 4, kernel_size=1)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, out_chans))

    def _levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.neck(self.trunk(x))

    def _embedding(self, level: torch.Tensor) -> torch.Tensor:
        return level + self.no_mem_embed.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._embedding(self._levels(x)[2])

    def forward_with_early(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×3×S×S -> (B×C×h×w embeddings, B×2h×2w×E packed high-res features,
        E = C/2 + C/4)."""
        s0, s1, level2 = self._levels(x)
        return self._embedding(level2), pack_high_res(self.conv_s0(s0), self.conv_s1(s1))


def pack_high_res(s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """The decoder's two high-resolution maps as one B×2h×2w×E map on the stride-8 grid:
    s0 B×C/8×4h×4w (stride 4) is pixel-unshuffled by 2 to B×C/2×2h×2w and set before
    s1 B×C/4×2h×2w, channels last. Exact (a reshuffle); ``unpack_high_res`` inverts it."""
    return torch.cat([F.pixel_unshuffle(s0, 2), s1], dim=1).permute(0, 2, 3, 1).contiguous()


def unpack_high_res(packed: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pack_high_res``'s B×2h×2w×E map -> (s0 B×C/8×4h×4w, s1 B×C/4×2h×2w) for a decoder of
    width C = ``width``."""
    x = packed.permute(0, 3, 1, 2)
    half = width // 2
    return F.pixel_shuffle(x[:, :half], 2), x[:, half:]
