"""Execution precisions: resolution of "auto", the emulation warning, and each fast mode's
deviation from fp32 on a small seeded model.

Stated tolerances (small seeded model, the parity prompts): int8 and bf16 embeddings have a
cosine similarity >= 0.999 with fp32's, and their masks an IoU >= 0.98 with fp32's (mean over
the prompts' masks; the worst single mask >= 0.9).
"""

from __future__ import annotations

import gc
import warnings
import weakref

import numpy as np
import pytest
import torch
from helpers import SMALL, seeded_model
from test_predictor_parity import _cases, _photo

from segany.automatic import MaskGenerator
from segany.errors import InputError
from segany.inference import precision as P
from segany.inference.predictor import Predictor


def test_unknown_precision_is_rejected():
    with pytest.raises(InputError, match="fp32, bf16, fp16, int8, auto"):
        Predictor(seeded_model(SMALL), precision="fp64")


@pytest.mark.parametrize(
    ("flags", "bf16_speedup", "int8_speedup", "want"),
    [
        ({"avx2", "avx512_bf16"}, 0.5, 2.0, "bf16"),  # bf16 units: bf16, even if int8 is fast
        ({"avx2", "amx_bf16"}, 0.5, 2.0, "bf16"),
        ({"avx2"}, 0.125, 2.0, "int8"),  # bf16 emulated, int8 measured faster than fp32
        ({"avx2"}, 0.125, 1.05, "fp32"),  # int8 no faster than fp32 (within 10 %)
        (None, 2.0, 2.0, "bf16"),  # no flag list: a measured bf16 speed-up decides
        (None, 1.2, 0.9, "fp32"),
    ],
)
def test_auto_resolves_to_the_fastest_native_mode(
    monkeypatch, flags, bf16_speedup, int8_speedup, want
):
    monkeypatch.setattr(P, "cpu_flags", lambda: None if flags is None else frozenset(flags))
    monkeypatch.setattr(P, "matmul_speedup", lambda precision: bf16_speedup)
    monkeypatch.setattr(P, "int8_speedup", lambda: int8_speedup)
    assert P.resolve_precision("auto", torch.device("cpu")) == want
    assert Predictor(seeded_model(SMALL), precision="auto").precision == want


def test_emulated_bf16_warns_once_with_the_measured_alternative(monkeypatch):
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(P, "matmul_speedup", lambda precision: 0.125)
    P._warn_emulated.cache_clear()
    model = seeded_model(SMALL)
    try:
        with pytest.warns(P.PerformanceWarning, match=r"8\.0x slower.*precision='(int8|fp32)'"):
            Predictor(model, precision="bf16")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            Predictor(model, precision="bf16")  # said once per process
    finally:
        P._warn_emulated.cache_clear()


def test_fp16_without_amx_fp16_warns_and_points_to_bf16(monkeypatch):
    # A Xeon with avx512_fp16 and AMX for bf16 only: fp16 matmuls run at fp32's speed there.
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512_fp16", "amx_bf16"}))
    monkeypatch.setattr(P, "matmul_speedup", lambda precision: 0.97)
    P._warn_emulated.cache_clear()
    try:
        assert not P.runs_fast("fp16", torch.device("cpu"))
        with pytest.warns(P.PerformanceWarning, match=r"1\.0x slower.*precision='bf16'"):
            P.resolve_precision("fp16", torch.device("cpu"))
    finally:
        P._warn_emulated.cache_clear()


def test_native_bf16_is_detected_from_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert P.runs_fast("bf16", torch.device("cpu"))
    assert P.resolve_precision("auto", torch.device("cpu")) == "bf16"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_fast_mode_deviation_from_fp32(mode):
    model = seeded_model(SMALL)
    image = _photo(173, 301)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.PerformanceWarning)  # bf16 may be emulated here
        fast = Predictor(model, precision=mode)
    exact = Predictor(model)
    exact.set_image(image)
    fast.set_image(image)
    a = exact.get_image_embedding().double().flatten()
    b = fast.get_image_embedding().double().flatten()
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    assert cosine >= 0.999
    assert not torch.equal(a, b)  # the mode really ran
    ious = []
    for prompt in _cases(173, 301).values():
        m_exact = exact.predict(**prompt).masks
        m_fast = fast.predict(**prompt).masks
        ious += [_iou(x, y) for x, y in zip(m_exact, m_fast, strict=True)]
    assert np.mean(ious) >= 0.98 and min(ious) >= 0.9


@pytest.mark.parametrize("make", [P.int8_encoder, P.bf16_encoder])
def test_encoder_copy_is_remade_when_weights_change(make):
    model = seeded_model(SMALL)
    first = make(model)
    assert make(model) is first
    assert first is not model.image_encoder
    with torch.no_grad():
        model.image_encoder.blocks[0].mlp.lin1.weight.mul_(2)
    assert make(model) is not first


def test_bf16_mode_runs_a_bf16_copy_and_leaves_the_model_fp32():
    model = seeded_model(SMALL)
    copy = P.bf16_encoder(model)
    assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    images = torch.randn(1, 3, SMALL.image_size, SMALL.image_size)
    with torch.inference_mode():
        out = P.encode(model, images, "bf16")
    assert out.dtype == torch.float32


def test_mask_generator_precision():
    model = seeded_model(SMALL)
    gen = MaskGenerator(model, points_per_side=4, precision="int8")
    assert gen.predictor.precision == "int8"
    gen.generate(_photo(64, 80))
    with pytest.raises(InputError, match="differs"):
        MaskGenerator(Predictor(model), precision="int8")


@pytest.mark.slow
def test_compiled_encoder_gives_the_eager_embedding():
    model = seeded_model(SMALL)
    image = _photo(120, 160)
    eager = Predictor(model)
    compiled = Predictor(model, compile=True)
    eager.set_image(image)
    compiled.set_image(image)
    a, b = eager.get_image_embedding(), compiled.get_image_embedding()
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    kept = P._COMPILED[model]["fp32"]  # compiled once, kept for the model
    compiled.set_image(image[::-1].copy())
    assert P._COMPILED[model]["fp32"] is kept
    ref = weakref.ref(model.image_encoder)
    del model, eager, compiled, kept
    gc.collect()
    assert ref() is None  # dropped with its model, compiled wrapper and all


def test_cli_precision_choices_are_the_library_modes():
    from segany.cli.common import PRECISION_CHOICES

    assert PRECISION_CHOICES == P.PRECISIONS


def test_compiled_encoders_are_kept_per_precision(monkeypatch):
    made = []

    def fake_compile(module, **kw):  # records what would be compiled; runs it eagerly
        made.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = seeded_model(SMALL)
    images = torch.randn(1, 3, SMALL.image_size, SMALL.image_size)
    with torch.inference_mode():
        for _ in range(2):  # alternating modes compile each once, not once per switch
            P.encode(model, images, "fp32", compiled=True)
            P.encode(model, images, "bf16", compiled=True)
    assert made == [model.image_encoder, P.bf16_encoder(model)]
    with pytest.raises(InputError, match="compile=True differs"):
        MaskGenerator(Predictor(model), compile=True)
