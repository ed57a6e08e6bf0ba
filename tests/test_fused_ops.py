"""The inference twins' pieces (``segany.modeling.fused_ops``): a convolution or a linear layer
with its GELU in one oneDNN call, and batch norm folded into the convolution, each against the
plain calls."""

from __future__ import annotations

import pytest
import torch
from helpers import max_rel_err
from torch import nn
from torch.nn import functional as F

from segany.modeling.fused_ops import (
    ConvGelu,
    TwinCache,
    fold_batch_norm,
    linear_gelu,
    pointwise_serves,
    twin_applies,
)


def _conv(groups: int, stride: int, dtype: torch.dtype, *, bias: bool = True) -> nn.Conv2d:
    gen = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(16, 32 if groups == 1 else 16, 3, stride, 1, groups=groups, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
        if bias:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    return conv.to(dtype).requires_grad_(False)


def _images(dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(2, 16, 24, 20, generator=torch.Generator().manual_seed(4)).to(dtype)
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("groups,stride", [(1, 1), (1, 2), (16, 2)])
def test_conv_gelu_equals_the_two_calls(approximate, dtype, groups, stride):
    """Dense and depthwise, strided, fp32 and bf16, exact and tanh GELU."""
    conv, x = _conv(groups, stride, dtype), _images(dtype)
    fused = ConvGelu(conv, approximate)
    # the fused kernel is what runs here (oneDNN is in every x86 CPU build of torch)
    assert pointwise_serves(x, conv.weight)
    with torch.inference_mode():
        want = F.gelu(conv(x), approximate=approximate).float()
        got = fused(x).float()
    # fp32: the same products summed in another order; bf16: one rounding of each output
    tol = 2e-6 if dtype == torch.float32 else 1e-2
    assert got.shape == want.shape and max_rel_err(got, want) < tol
    if dtype == torch.float32:  # the approximation asked for is the one computed
        other = "tanh" if approximate == "none" else "none"
        with torch.inference_mode():
            assert max_rel_err(got, F.gelu(conv(x), approximate=other).float()) > 10 * tol


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_gelu_equals_the_two_calls(approximate, dtype):
    gen = torch.Generator().manual_seed(6)
    linear = nn.Linear(48, 80).to(dtype).requires_grad_(False)
    x = torch.randn(2, 7, 5, 48, generator=gen).to(dtype)
    with torch.inference_mode():
        assert pointwise_serves(x, linear.weight)
        want = F.gelu(linear(x), approximate=approximate).float()
        got = linear_gelu(x, linear, approximate).float()
        # a non-contiguous input (a permuted view)
        got_t = linear_gelu(x.transpose(1, 2), linear, approximate).float()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert got.shape == (2, 7, 5, 80) and max_rel_err(got, want) < tol
    assert max_rel_err(got_t, want.transpose(1, 2)) < tol
    linear.weight.requires_grad_(True)  # the two calls, and the gradient reaches the weights
    linear_gelu(x.float(), linear.float(), approximate).sum().backward()
    assert linear.weight.grad is not None


def test_linear_gelu_takes_an_int8_layer_as_it_is():
    from segany.inference.precision import quantize_linear_layers

    linear = nn.Linear(48, 80).eval()
    quant = quantize_linear_layers(nn.Sequential(linear))[0]
    x = torch.randn(30, 48, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        got = linear_gelu(x, quant)  # type: ignore[arg-type]
        assert torch.equal(got, F.gelu(quant(x)))


def test_conv_gelu_falls_back_where_the_kernel_cannot_serve():
    conv, x = _conv(1, 1, torch.float32), _images(torch.float32)
    fused = ConvGelu(conv, "none")
    conv.weight.requires_grad_(True)
    assert not pointwise_serves(x, conv.weight)
    fused(x).sum().backward()  # the two calls ran: the gradient reaches the weights
    assert conv.weight.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert not pointwise_serves(x, conv.weight)
        assert fused(x).dtype == torch.bfloat16  # autocast's convolution, then GELU
    with pytest.raises(ValueError, match="approximate must be"):
        ConvGelu(conv, "erf")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fold_batch_norm(bias, dtype):
    gen = torch.Generator().manual_seed(5)
    conv = _conv(1, 2, torch.float32, bias=bias)
    norm = nn.BatchNorm2d(32, eps=1e-3).eval()
    with torch.no_grad():
        for t in (norm.weight, norm.bias, norm.running_mean):
            t.copy_(torch.randn(32, generator=gen))
        norm.running_var.copy_(torch.rand(32, generator=gen) + 0.1)
    x = _images(torch.float32)
    with torch.no_grad():
        want = norm(conv(x))
        folded = fold_batch_norm(conv.to(dtype), norm)
    assert folded is not None and folded is not conv
    assert folded.weight.dtype == dtype and folded.bias is not None
    assert conv.bias is None if not bias else conv.bias is not folded.bias  # conv untouched
    with torch.no_grad():
        got = folded(x.to(dtype)).float()
    assert max_rel_err(got, want) < (2e-6 if dtype == torch.float32 else 2e-2)
    assert fold_batch_norm(conv, nn.BatchNorm2d(32, track_running_stats=False)) is None


def test_twin_cache_remakes_the_twin_when_weights_change():
    made = []

    def make(module: nn.Module) -> nn.Module:
        made.append(module)
        return nn.Identity()

    cache, encoder = TwinCache(make), nn.Conv2d(3, 4, 1)
    first = cache.get(encoder)
    assert cache.get(encoder) is first and len(made) == 1
    with torch.no_grad():
        encoder.weight.add_(1.0)
    assert cache.get(encoder) is not first and len(made) == 2
    assert twin_applies(encoder.eval().requires_grad_(False))
    assert not twin_applies(encoder.train())
    encoder.eval().requires_grad_(True)
    assert not twin_applies(encoder)
    with torch.no_grad():
        assert twin_applies(encoder)
        handle = encoder.register_forward_hook(lambda *a: None)
        assert not twin_applies(encoder)
        handle.remove()
