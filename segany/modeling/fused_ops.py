"""Fused operations for the encoders' inference paths: batch norm folded into the convolution
before it, a convolution or linear layer and its GELU in one oneDNN call, and the inference twin
kept per encoder.

A twin is a copy of an encoder, in eval mode, with the same values (to float rounding) and fewer
passes over memory: in eval mode a batch norm is a per-channel affine map, so ``norm(conv(x))``
is one convolution with scaled weights and a bias; a GELU after a convolution or a linear layer
runs as its post-op while the output is still in cache (what ``torch.compile``'s CPU backend
does, without needing a compiler at run time). Users: the twins of
``segany.modeling.efficientvit.fused`` and ``segany.modeling.tinyvit.fused``.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

M = TypeVar("M", bound=nn.Module)

# oneDNN's convolution and linear layer with fused post-ops; absent from builds without oneDNN
_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
_LINEAR_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def pointwise_serves(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the fused oneDNN kernels can compute this call: a CPU tensor in fp32 or bf16 of
    the weights' dtype, no gradient to record, no autocast, no tracing or compiling (those see
    the plain operations)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and weight.dtype == x.dtype
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and not torch.compiler.is_compiling()
        and torch.backends.mkldnn.is_available()
    )


class ConvGelu(nn.Module):
    """``gelu(conv(x), approximate)`` as one oneDNN convolution with GELU as its post-op where
    ``pointwise_serves``; otherwise the two calls. B×C×H×W -> B×C'×H'×W'."""

    def __init__(self, conv: nn.Conv2d, approximate: str) -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU's approximate must be 'none' or 'tanh'; got {approximate!r}")
        if not isinstance(conv.padding, tuple):
            raise ValueError(f"ConvGelu needs numeric padding; got {conv.padding!r}")
        self.conv = conv
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if _POINTWISE is not None and pointwise_serves(x, conv.weight):
            return _POINTWISE(
                x,
                conv.weight,
                conv.bias,
                list(conv.padding),
                list(conv.stride),
                list(conv.dilation),
                conv.groups,
                "gelu",
                [None],
                self.approximate,
            )
        return F.gelu(conv(x), approximate=self.approximate)


def linear_gelu(x: torch.Tensor, linear: nn.Linear, approximate: str = "none") -> torch.Tensor:
    """``gelu(linear(x), approximate)``, B×…×Cin -> B×…×Cout, in one oneDNN call where
    ``pointwise_serves`` (GELU computed on the product while it is in cache: in bf16 on a
    Zen 4, a 16384×128 -> 512 layer with its GELU 16.1 -> 7.2 ms, fp32 32.6 -> 21.9 ms; the
    fp32 products may round differently from ``F.linear``'s, ~3e-6 relative)."""
    # an int8 copy's dynamically quantised layers are not nn.Linear: they run as they are
    if (
        _LINEAR_POINTWISE is not None
        and isinstance(linear, nn.Linear)
        and pointwise_serves(x, linear.weight)
    ):
        return _LINEAR_POINTWISE(x, linear.weight, linear.bias, "gelu", [None], approximate)
    return F.gelu(linear(x), approximate=approximate)


def fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d | None:
    """A new convolution equal to ``norm(conv(x))`` in eval mode (torch's
    ``fuse_conv_bn_weights``, computed in fp32 and stored in the convolution's dtype); None
    where the norm keeps no running statistics. ``conv`` is left as it is."""
    mean, var = norm.running_mean, norm.running_var
    if mean is None or var is None:
        return None
    dtype = conv.weight.dtype
    weight, bias = fuse_conv_bn_weights(
        conv.weight.float(),
        None if conv.bias is None else conv.bias.float(),
        mean.float(),
        var.float(),
        norm.eps,
        norm.weight.float(),
        norm.bias.float(),
    )
    # the same settings, with parameters (and hook dicts) of its own; the copied weights are
    # replaced at once
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=False)
    folded.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=False)
    return folded


def shared_copy(module: M) -> M:
    """A deep copy of ``module`` in eval mode whose parameters and buffers are ``module``'s
    own (shared): a twin replaces only the tensors it folds."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo=shared).eval()


def weights_version(module: nn.Module) -> int:
    """Changes whenever a parameter or buffer (running statistics) is modified in place.
    Tensors made under ``torch.inference_mode`` (a precision copy of the encoder) keep no
    version counter; they count as unchanged (their owner makes a new copy instead)."""
    tensors = [*module.parameters(), *module.buffers()]
    versions = sum(0 if t.is_inference() else t._version for t in tensors)
    return versions + id(tensors[0] if tensors else None)


class TwinCache:
    """Each encoder's twin, made by ``make`` on first use and remade when the encoder's
    weights change; dropped with the encoder."""

    def __init__(self, make: Callable[[nn.Module], nn.Module]) -> None:
        self.make = make
        self._twins: weakref.WeakKeyDictionary[nn.Module, tuple[int, nn.Module]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, encoder: nn.Module) -> nn.Module:
        version = weights_version(encoder)
        cached = self._twins.get(encoder)
        if cached is None or cached[0] != version:
            with torch.no_grad():
                cached = self._twins[encoder] = (version, self.make(encoder))
        return cached[1]


def twin_applies(encoder: nn.Module) -> bool:
    """Whether a twin may stand in for ``encoder``: eval mode, no gradient to reach its
    weights, no hooks on it, no tracing for export."""
    if encoder.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if any(m._forward_hooks or m._forward_pre_hooks for m in encoder.modules()):
        return False
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters()))
