"""EfficientViT's building blocks: convolution layers and blocks, the residual wrapper and the
multi-scale ReLU linear attention, each B×C×H×W -> B×C'×H'×W'.

Attribute names follow the official checkpoint (``conv``/``norm`` in a layer, ``main`` in a
residual, ``spatial_conv``/``point_conv``, ``inverted_conv``/``depth_conv``, ``conv1``/``conv2``,
``qkv``/``aggreg``/``proj``, ``context_module``/``local_module``, ``op_list``), so the official
``efficientvit_sam_*.pt`` loads strictly. Every activation is GELU's tanh approximation (what
the official models are built with).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class ConvLayer(nn.Module):
    """A convolution ("same" padding), then optionally batch norm and GELU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 3,
        *,
        eps: float,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout, eps=eps) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return gelu(x) if self.act else x


class ResBlock(nn.Module):
    """Two 3×3 convolutions (the first strided, GELU between)."""

    def __init__(
        self, cin: int, cout: int, *, stride: int, expand: float, fewer_norm: bool, eps: float
    ) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.conv1 = ConvLayer(
            cin, mid, 3, stride=stride, bias=fewer_norm, norm=not fewer_norm, act=True, eps=eps
        )
        self.conv2 = ConvLayer(mid, cout, 3, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FusedMBConv(nn.Module):
    """Fused inverted residual: an expanding (strided) 3×3 convolution, GELU, a 1×1 projection."""

    def __init__(
        self, cin: int, cout: int, *, stride: int, expand: float, fewer_norm: bool, eps: float
    ) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.spatial_conv = ConvLayer(
            cin, mid, 3, stride=stride, bias=fewer_norm, norm=not fewer_norm, act=True, eps=eps
        )
        self.point_conv = ConvLayer(mid, cout, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """Inverted residual: a 1×1 expansion, a (strided) depthwise 3×3, a 1×1 projection, GELU
    after the first two."""

    def __init__(
        self, cin: int, cout: int, *, stride: int, expand: float, fewer_norm: bool, eps: float
    ) -> None:
        super().__init__()
        mid = round(cin * expand)
        some = dict(bias=fewer_norm, norm=not fewer_norm, act=True, eps=eps)
        self.inverted_conv = ConvLayer(cin, mid, 1, **some)  # type: ignore[arg-type]
        self.depth_conv = ConvLayer(mid, mid, 3, stride=stride, groups=mid, **some)  # type: ignore[arg-type]
        self.point_conv = ConvLayer(mid, cout, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


def local_block(
    kind: str, cin: int, cout: int, *, stride: int, expand: float, fewer_norm: bool, eps: float
) -> nn.Module:
    """A convolution block by its official name ("res", "fmb" or "mb")."""
    block = {"res": ResBlock, "fmb": FusedMBConv, "mb": MBConv}[kind]
    return block(cin, cout, stride=stride, expand=expand, fewer_norm=fewer_norm, eps=eps)


class Residual(nn.Module):
    """``main(x) + x`` (``shortcut``), or ``main(x)`` alone where the shape changes."""

    def __init__(self, main: nn.Module, *, shortcut: bool) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.shortcut else self.main(x)


class OpSequential(nn.Module):
    """Modules run in order, kept under ``op_list`` (the official container's name)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class Resize(nn.Module):
    """Bicubic resize to ``size``×``size`` (identity when already that size); no weights."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        # bicubic has no half-precision kernel everywhere: resize in fp32, as the official does
        size = (self.size, self.size)
        return F.interpolate(x.float(), size, mode="bicubic", align_corners=False).to(x.dtype)


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention: B×C×H×W -> B×C×H×W.

    ``qkv`` makes each head's queries, keys and values (heads = C // ``dim``, packed per head
    as [q, k, v], ``dim`` channels each); each aggregation branch mixes them over a scale×scale
    neighbourhood (depthwise) and within each of q, k, v of a head (grouped 1×1), giving more
    heads. Attention per head is ReLU(q)·ReLU(k) normalised over the keys, computed in linear
    form (keys and values summed first) when there are more tokens than ``dim``, as the official
    code does. ``proj`` maps all heads' outputs back to C channels.
    """

    def __init__(self, width: int, *, dim: int, scales: tuple[int, ...], eps: float) -> None:
        super().__init__()
        self.dim = dim
        heads = width // dim
        total = heads * dim
        self.qkv = ConvLayer(width, 3 * total, 1, norm=False, eps=eps)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.proj = ConvLayer(total * (1 + len(scales)), width, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)
        out = attend(qkv, self.dim).to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last):  # keep the encoder's layout
            out = out.contiguous(memory_format=torch.channels_last)
        return self.proj(out)


#: Added to the linear attention's normaliser (the official value).
ATTENTION_EPS = 1e-15


def attend(qkv: torch.Tensor, dim: int) -> torch.Tensor:
    """B×(G·3·dim)×H×W, per head [q, k, v] -> B×(G·dim)×H×W fp32: per head, the values
    averaged with weights ReLU(q)·ReLU(k) over the keys. In fp32 whatever the input (the
    normaliser's eps vanishes in fp16), as the official code does."""
    b, _, h, w = qkv.shape
    # B×(G·3·D)×H×W -> B×G×3D×N: one row block per head
    qkv = qkv.float().reshape(b, -1, 3 * dim, h * w)
    q, k, v = F.relu(qkv[:, :, :dim]), F.relu(qkv[:, :, dim : 2 * dim]), qkv[:, :, 2 * dim :]
    if h * w > dim:
        # linear form: [v; 1]·kᵀ (D+1)×D, then ·q; the last row is the normaliser Σ_n k·q
        vk = torch.matmul(F.pad(v, (0, 0, 0, 1), value=1.0), k.transpose(-1, -2))
        out = torch.matmul(vk, q)
        out = out[:, :, :-1] / (out[:, :, -1:] + ATTENTION_EPS)
    else:
        weights = torch.matmul(k.transpose(-1, -2), q)  # B×G×N(keys)×N(queries)
        weights = weights / (weights.sum(dim=2, keepdim=True) + ATTENTION_EPS)
        out = torch.matmul(v, weights)
    return out.reshape(b, -1, h, w)


class EfficientViTBlock(nn.Module):
    """Linear attention, then an inverted residual (biases on its first two convolutions, a
    norm after the last), each with a residual connection."""

    def __init__(
        self, width: int, *, dim: int, expand: float, scales: tuple[int, ...], eps: float
    ) -> None:
        super().__init__()
        self.context_module = Residual(
            LiteMLA(width, dim=dim, scales=scales, eps=eps), shortcut=True
        )
        self.local_module = Residual(
            MBConv(width, width, stride=1, expand=expand, fewer_norm=True, eps=eps), shortcut=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))
