"""``segany export-onnx`` and ``segany segment --backend onnx``, through the real command.

The bundled model keeps these fast; the segment comparison uses the torch backend's JSON from
the same run as the reference (scores within 1e-4, identical mask areas up to pixels whose
logits lie within 1e-4 of the threshold, which the small photo does not have).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import max_rel_err
from PIL import Image
from skimage import data

from segany.checkpoints import load_model
from segany.export.decoder import DECODER_INPUTS, SamOnnxDecoder
from segany.export.exporters import decoder_example_inputs

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is part of .[dev]")

ROOT = Path(__file__).resolve().parents[1]


def segany(*args, check: int | None = 0):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "segany", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    if check is not None:
        assert proc.returncode == check, proc.stderr
    return proc


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[40:400:2, 20:500:2])).save(path)
    return path


def test_export_onnx_writes_both_files(tmp_path):
    dec, enc = tmp_path / "out" / "decoder.onnx", tmp_path / "out" / "encoder.onnx"
    proc = segany(
        "export-onnx", "-o", dec, "--encoder-output", enc, "--return-single-mask", "--json"
    )
    summary = json.loads(proc.stdout)
    assert summary["decoder"] == str(dec) and summary["encoder"] == str(enc)
    session = ort.InferenceSession(str(dec), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["segany.return_single_mask"] == "true" and meta["segany.kind"] == "decoder"
    assert [o.name for o in session.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
    enc_session = ort.InferenceSession(str(enc), providers=["CPUExecutionProvider"])
    assert enc_session.get_inputs()[0].shape == [1, 3, 384, 384]
    assert enc_session.get_outputs()[0].shape == [1, 128, 48, 48]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind
    # Both files compute what the bundled model (the default -m) computes.
    model = load_model()
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    (embedding,) = enc_session.run(None, {"image": x.numpy()})
    inputs = decoder_example_inputs(model, 3)
    outputs = session.run(None, {k: v.numpy() for k, v in zip(DECODER_INPUTS, inputs, strict=True)})
    with torch.no_grad():
        want_embedding = model.image_encoder(x)
        want = SamOnnxDecoder(model, return_single_mask=True)(*inputs)
    assert max_rel_err(embedding, want_embedding) < 1e-4
    for got, expected in zip(outputs, want, strict=True):
        assert max_rel_err(got, expected) < 1e-4


@pytest.mark.slow
def test_export_onnx_quantized_and_opset(tmp_path):
    import onnx

    segany("export-onnx", "-o", tmp_path / "f.onnx", "-q")
    segany("export-onnx", "-o", tmp_path / "q.onnx", "--quantize", "--opset", "16", "-q")
    assert (tmp_path / "q.onnx").stat().st_size < (tmp_path / "f.onnx").stat().st_size
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert {o.domain: o.version for o in model.opset_import}[""] == 16


def test_bad_names_are_input_errors(tmp_path, photo, capsys):
    from segany.cli import main

    assert main(["export-onnx", "-o", str(tmp_path / "decoder.txt")]) == 3
    assert "end in .onnx" in capsys.readouterr().err
    argv = ["segment", str(photo), "-o", str(tmp_path / "x"), "-p", "9,9"]
    assert main([*argv, "--onnx-dir", str(tmp_path / "missing")]) == 3
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_segment_onnx_backend_matches_torch(photo, tmp_path):
    prompt = ("--point", "100,80", "--point", "30,30,0", "--multimask", "--no-overlay", "-q")
    segany("segment", photo, "-o", tmp_path / "torch", *prompt)
    segany("segment", photo, "-o", tmp_path / "onnx", "--backend", "onnx", *prompt)
    from segany.checkpoints import load_model
    from segany.export import export_pair

    export_pair(load_model(), tmp_path / "pair")
    segany("segment", photo, "-o", tmp_path / "dir", "--onnx-dir", tmp_path / "pair", *prompt)
    ref = json.loads((tmp_path / "torch" / "astronaut.json").read_text())
    for run in ("onnx", "dir"):
        got = json.loads((tmp_path / run / "astronaut.json").read_text())
        assert len(got["masks"]) == len(ref["masks"]) == 3
        for a, b in zip(got["masks"], ref["masks"], strict=True):
            assert abs(a["score"] - b["score"]) < 1e-4
            assert a["area"] == b["area"] and a["bbox"] == b["bbox"]
