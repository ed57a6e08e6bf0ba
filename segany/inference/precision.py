"""Execution precision of the image encoder: fp32, bf16, fp16, int8, or auto.

- ``fp32``: the official numbers (parity with the reference to ~1e-6).
- ``bf16``: a bf16 copy of the encoder (weights and activations bf16; norms, softmax and
  matmuls accumulate in fp32 inside the kernels), made once per model. Measured on a 2-core
  AMX CPU with vit_b: 1.67 s a 1024-px image where ``torch.autocast`` took 1.93 s (autocast
  casts every chunk's activations and the attention's inputs on every call); embedding cosine
  with fp32's 0.99993 (autocast 0.99997), both within the tolerance tested.
- ``fp16``: the encoder under ``torch.autocast`` (fp16's narrow range is kept out of the residual
  stream, which stays fp32).
- bf16 and fp16 are fast only where the hardware has the matrix units (CPUs with
  AVX512-BF16/AMX, GPUs); elsewhere torch emulates them, several times slower than fp32, so
  asking for one there warns once with the measured alternative.
- ``int8``: dynamic quantisation of the encoder's Linear layers (weights int8, activations
  quantised per call; ``torch.ao.quantization.quantize_dynamic``); attention, norms and the neck
  stay fp32. Serves CPUs without bf16 units.
- ``auto``: bf16 where the hardware has bf16 units, else int8 where a timed probe finds it
  faster than fp32, else fp32; detected once per process (CPU flags, then the probe), never
  assumed. bf16 is the more accurate fast mode; on a CPU with AVX512-BF16 and VNNI but no AMX
  (an AMD Zen 4) int8 was the faster one for vit_b (2.97x against bf16's 2.51x the official
  code's ``set_image``), while bf16 was faster for the light encoders (benchmarks/README.md).

The decoder always runs in fp32: it is cheap, and mask logits near the threshold are sensitive.
"""

from __future__ import annotations

import copy
import time
import warnings
import weakref
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import TypeVar, cast

import torch
from torch import nn

from segany.errors import InputError
from segany.modeling.families import EncoderFamily, family_of_module
from segany.modeling.fused_ops import weights_version

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
# CPU flags (from /proc/cpuinfo) that mean native matrix units for the type. avx512_fp16 alone
# is not enough: on a Xeon with it (and AMX for bf16 only) an fp16 matmul measured 0.97x fp32's
# speed and the vit_b encoder under fp16 autocast 4.2 s, as slow as fp32.
_CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("amx_fp16",)}


class PerformanceWarning(UserWarning):
    """A requested mode runs, but much slower than another one this machine offers."""


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags, or None where /proc/cpuinfo is not readable (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86, ARM
            return frozenset(line.split(":", 1)[1].split())
    return None


def _best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@lru_cache(maxsize=8)
def matmul_speedup(precision: str) -> float:
    """Measured speed of a 512² matmul in ``precision`` ("bf16"/"fp16") relative to fp32 on
    this CPU (> 1: faster). Runs once per process (~0.1 s)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(512, 512, generator=gen)
    b = torch.randn(512, 512, generator=gen)
    ah, bh = a.to(_AUTOCAST[precision]), b.to(_AUTOCAST[precision])
    for x, y in ((a, b), (ah, bh)):  # warm-up
        torch.mm(x, y)
    return _best_time(lambda: torch.mm(a, b)) / _best_time(lambda: torch.mm(ah, bh))


@lru_cache(maxsize=1)
def int8_speedup() -> float:
    """Measured speed of an int8 dynamically quantised Linear (vit_b's MLP shape, 1024 rows)
    relative to fp32 on this CPU (> 1: faster). Runs once per process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lin = nn.Sequential(nn.Linear(768, 3072)).eval()
    quant = quantize_linear_layers(lin)
    x = torch.randn(1024, 768)
    with torch.inference_mode():
        for layer in (lin, quant):  # warm-up
            layer(x)
        return _best_time(lambda: lin(x)) / _best_time(lambda: quant(x))


def runs_fast(precision: str, device: torch.device) -> bool:
    """Whether ``device`` has native units for "bf16"/"fp16" (not emulation)."""
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return precision == "fp16"
    flags = cpu_flags()
    if flags is not None and any(f in flags for f in _CPU_FLAGS[precision]):
        return True
    # No flag (or no flag list): believe a measurement, not the name of the CPU.
    return matmul_speedup(precision) > 1.5


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete mode for ``precision`` on ``device``: "auto" becomes bf16 where it runs
    natively here, else int8 where it measures faster than fp32, else fp32 (see the module's
    notes); a concrete mode stays as asked (warning once if it is emulated)."""
    check_precision(precision)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if runs_fast("bf16", device):
            return "bf16"
        if device.type == "cpu" and int8_available() and int8_speedup() > 1.1:
            return "int8"
        return "fp32"
    if precision in _AUTOCAST and not runs_fast(precision, device):
        _warn_emulated(precision, device.type)
    if precision == "int8" and device.type != "cpu":
        raise InputError(f"precision='int8' runs on the CPU only; this model is on {device}")
    return precision


@cache
def _warn_emulated(precision: str, device_type: str) -> None:
    """Warn once per process and mode (lru_cache remembers it was said)."""
    if device_type == "cpu":
        ratio = matmul_speedup(precision)
        speed = f"{1 / ratio:.1f}x slower than" if ratio < 1 else f"{ratio:.1f}x as fast as"
        alt = resolve_precision("auto", torch.device("cpu"))
        warnings.warn(
            f"precision={precision!r}: this CPU has no {precision} matrix units "
            f"({' / '.join(_CPU_FLAGS[precision])} absent), so torch emulates it; measured here "
            f"a matmul runs {speed} in fp32. Use precision={alt!r} "
            "(or 'auto', which picks a mode this machine runs natively).",
            PerformanceWarning,
            stacklevel=4,
        )
    else:
        warnings.warn(
            f"precision={precision!r} is not native on this {device_type} device; "
            "precision='auto' picks one that is",
            PerformanceWarning,
            stacklevel=4,
        )


def int8_available() -> bool:
    return hasattr(torch.ao, "quantization") and hasattr(torch.ao.quantization, "quantize_dynamic")


def quantize_linear_layers(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every nn.Linear dynamically quantised to int8 (CPU only)."""
    if not int8_available():
        raise InputError("precision='int8' needs torch.ao.quantization, absent from this torch")
    with warnings.catch_warnings():
        # torch marks eager-mode quantisation deprecated; it is still the one CPU int8 path
        # that needs no calibration data.
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(module), {nn.Linear}, dtype=torch.qint8
        )


# model -> {precision: (version of its encoder weights, the encoder's copy)}; dropped with the
# model.
_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[int, nn.Module]]] = (
    weakref.WeakKeyDictionary()
)


def _encoder_copy(model: nn.Module, precision: str) -> nn.Module:
    """The ``precision`` copy of ``model.image_encoder``, made once and remade if its weights
    change."""
    encoder: nn.Module = model.image_encoder  # type: ignore[assignment]
    version = weights_version(encoder)  # parameters and buffers (a norm's statistics)
    copies = _COPIES.setdefault(model, {})
    cached = copies.get(precision)
    if cached is None or cached[0] != version:
        if precision == "int8":
            made = quantize_linear_layers(encoder)
        else:
            made = copy.deepcopy(encoder).to(_AUTOCAST[precision]).requires_grad_(False)
        cached = copies[precision] = (version, made.eval())
    return cached[1]


def int8_encoder(model: nn.Module) -> nn.Module:
    """The int8 copy of ``model.image_encoder`` (dynamically quantised Linear layers)."""
    return _encoder_copy(model, "int8")


def bf16_encoder(model: nn.Module) -> nn.Module:
    """The bf16 copy of ``model.image_encoder``."""
    return _encoder_copy(model, "bf16")


# model -> {precision: its encoder module (the model's own, or the bf16/int8 copy) compiled}.
# Keyed by the model, not the module: the compiled wrapper holds its module, so a weak key on
# the module itself would never be dropped.
_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[str, nn.Module]] = weakref.WeakKeyDictionary()


def _compiled(model: nn.Module, precision: str, encoder: nn.Module) -> nn.Module:
    """``torch.compile(encoder)`` (the plain forward, static shapes), made once per model and
    precision, and again when that precision's copy of the encoder was remade."""
    per_model = _COMPILED.setdefault(model, {})
    compiled = per_model.get(precision)
    if compiled is None or getattr(compiled, "_orig_mod", compiled) is not encoder:
        made = torch.compile(encoder, dynamic=False)
        compiled = per_model[precision] = cast(nn.Module, made)
    return compiled


def encode(
    model: nn.Module, images: torch.Tensor, precision: str, compiled: bool = False
) -> torch.Tensor:
    """B×3×S×S preprocessed images -> B×C×h×w fp32 embeddings, in a resolved ``precision``.
    ``compiled``: run the encoder's forward through ``torch.compile`` (compiled on the first
    call, minutes for vit_b on a small CPU; then reused) instead of the eager chunked path."""

    def run(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if compiled:
            return _compiled(model, precision, encoder)(x)
        family = family_of_module(encoder)  # the family's fast path (ViT: chunked)
        return family.fast_forward(encoder, x) if family is not None else encoder(x)

    return _in_precision(model, images, precision, run).float()


def encode_with_early(
    model: nn.Module, images: torch.Tensor, precision: str, compiled: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode``'s embeddings and the encoder's early feature map B×h×w×E (fp32), which
    SAM-HQ's decoder reads: the family's ``forward_with_early``, in the same modes."""

    def run(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        family = family_of_module(encoder)
        if family is None:
            raise InputError(
                f"{type(encoder).__name__} is no registered encoder family's module, so it has "
                "no early feature map for SAM-HQ's decoder"
            )
        if compiled:
            return _compiled_with_early(model, precision, encoder, family)(x)
        return family.forward_with_early(encoder, x)

    embeddings, early = _in_precision(model, images, precision, run)
    # contiguous: the same memory (and so the same rounding downstream) as a cached copy
    return embeddings.float(), early.float().contiguous()


_T = TypeVar("_T")


def _in_precision(
    model: nn.Module,
    images: torch.Tensor,
    precision: str,
    run: Callable[[nn.Module, torch.Tensor], _T],
) -> _T:
    """``run(encoder, images)`` with the encoder (or its copy) and images of ``precision``."""
    if precision == "int8":
        return run(int8_encoder(model), images)
    if precision == "bf16":
        return run(bf16_encoder(model), images.to(torch.bfloat16))
    encoder = cast(nn.Module, model.image_encoder)
    dtype = _AUTOCAST.get(precision)
    if dtype is None:
        return run(encoder, images)
    with torch.autocast(images.device.type, dtype=dtype):
        return run(encoder, images)


class _WithEarly(nn.Module):
    """The family's ``forward_with_early`` as a module's forward, for ``torch.compile``."""

    def __init__(self, encoder: nn.Module, family: EncoderFamily) -> None:
        super().__init__()
        self.encoder = encoder
        self.family = family

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.family.forward_with_early(self.encoder, x)


def _compiled_with_early(
    model: nn.Module, precision: str, encoder: nn.Module, family: EncoderFamily
) -> nn.Module:
    """``_compiled`` for the forward with the early feature map (SAM-HQ)."""
    per_model = _COMPILED.setdefault(model, {})
    key = f"{precision}+early"
    compiled = per_model.get(key)
    wrapper = getattr(compiled, "_orig_mod", compiled)
    if compiled is None or getattr(wrapper, "encoder", None) is not encoder:
        made = torch.compile(_WithEarly(encoder, family), dynamic=False)
        compiled = per_model[key] = cast(nn.Module, made)
    return compiled
