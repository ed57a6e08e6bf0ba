"""ONNX export and the onnxruntime backend for the family members: SAM-HQ's decoder against
SAM-HQ's own export module (``segment_anything_hq.utils.onnx.SamOnnxModel``, the one its
``scripts/export_onnx_model.py`` exports, with its input names), and the whole pipeline
(encoder + decoder on onnxruntime, ``OnnxPredictor``) against the torch Predictor for SAM-HQ,
MobileSAM's TinyViT and EfficientViT-SAM, on small seeded configs of each family.

Tolerances (fp32), as tests/test_export_runtime.py: logits and scores within 1e-4 of the
reference's largest magnitude; binary masks equal except where the reference logit lies that
close to the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import max_rel_err, seeded_model
from test_modeling_hq import SMALL_HQ, reference
from test_modeling_tinyvit import SMALL_T

from segany.config import DecoderConfig, SamConfig
from segany.errors import InputError
from segany.export.decoder_hq import HQ_DECODER_INPUTS
from segany.export.exporters import decoder_example_inputs, export_decoder, export_pair
from segany.export.runtime import OnnxPredictor
from segany.inference.predictor import Predictor
from segany.modeling.efficientvit import EfficientViTConfig

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is part of .[dev]")

TOL = 1e-4
# SAM-HQ on a small TinyViT (its early map is stage 1's), MobileSAM's TinyViT with SAM's
# decoder, and an EfficientViT-SAM l-model shrunk in width and depth (512 px in a 1024 frame).
SMALL_HQ_T = SamConfig("test-hq-tinyvit", SMALL_T.encoder, decoder=DecoderConfig(hq=True))
SMALL_EVIT = SamConfig(
    "test-efficientvit",
    EfficientViTConfig(
        widths=(8, 16, 32, 64, 128),
        depths=(1, 1, 1, 1, 1),
        blocks=("res", "fmb", "fmb", "mb", "att"),
        expand_ratios=(1, 4, 4, 4, 6),
        fewer_norms=(False, False, False, True, True),
        neck_stages=(4, 3, 2),
        neck_depth=1,
        neck_expand_ratio=1,
        neck_width=64,
        qkv_dim=16,
    ),
    decoder=DecoderConfig(norm_eps=1e-6),
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def _image(h: int = 150, w: int = 200, seed: int = 0) -> np.ndarray:
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = (rng.random((h // 16 + 2, w // 16 + 2, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


PROMPTS = {
    "point": dict(point_coords=[[80, 60]], point_labels=[1]),
    "points": dict(point_coords=[[80, 60], [20, 30], [150, 100]], point_labels=[1, 0, 1]),
    "box": dict(box=[20, 20, 180, 130]),
    "box_and_point": dict(box=[20, 20, 180, 130], point_coords=[[60, 60]], point_labels=[0]),
}


def _same_answers(
    torch_pred: Predictor, onnx_pred: OnnxPredictor, names=tuple(PROMPTS), **extra
) -> None:
    for name in names:
        prompt = PROMPTS[name]
        for multimask in (True, False):
            opts = dict(multimask_output=multimask, **prompt, **extra)
            want = torch_pred.predict(**opts)
            got = onnx_pred.predict(**opts)
            want_full = torch_pred.predict(return_logits=True, **opts).masks
            got_full = onnx_pred.predict(return_logits=True, **opts).masks
            assert got.masks.shape == want.masks.shape, name
            assert max_rel_err(got_full, want_full) < TOL, (name, multimask)
            assert max_rel_err(got.logits, want.logits) < TOL, (name, multimask)
            assert np.abs(got.scores - want.scores).max() < TOL, name
            near = np.abs(want_full) <= TOL * np.abs(want_full).max()
            assert not ((got.masks != want.masks) & ~near).any(), name


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("hq_only", [False, True])
def test_hq_decoder_matches_sam_hq_export_module(tmp_path, multimask, hq_only):
    """SAM-HQ's export script's interface (its input and output names, interm_embeddings as
    a stack of 4 maps of which the first is read) and answers, on onnxruntime."""
    from segment_anything_hq.utils.onnx import SamOnnxModel

    model = seeded_model(SMALL_HQ)
    ref = SamOnnxModel(
        reference(SMALL_HQ, model.state_dict()),
        hq_token_only=hq_only,
        multimask_output=multimask,
    ).eval()
    path = export_decoder(
        model, tmp_path / "hq.onnx", multimask_output=multimask, hq_token_only=hq_only
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(HQ_DECODER_INPUTS)
    assert HQ_DECODER_INPUTS == (
        "image_embeddings",
        "interm_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
        "orig_im_size",
    )  # SAM-HQ's scripts/export_onnx_model.py, in its order
    assert [o.name for o in session.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
    gen = torch.Generator().manual_seed(3)
    example = list(decoder_example_inputs(model))
    example[1] = torch.randn(4, 1, 16, 16, 64, generator=gen)  # the script's 4 maps
    for n_points, has_mask in ((2, 0.0), (5, 1.0)):
        example[2] = torch.rand(1, n_points, 2, generator=gen) * 256
        example[3] = torch.tensor([[1.0, 0.0, 2.0, 3.0, -1.0][:n_points]])
        example[5] = torch.tensor([has_mask])
        example[6] = torch.tensor([180.0, 240.0])
        feed = {k: v.numpy() for k, v in zip(HQ_DECODER_INPUTS, example, strict=True)}
        got = session.run(None, feed)
        with torch.no_grad():
            want = ref(*example)
        for name, a, b in zip(("masks", "iou", "low_res"), got, want, strict=True):
            assert a.shape == tuple(b.shape) and a.shape[1] == 1, name
            assert max_rel_err(torch.from_numpy(a), b) < TOL, name


@pytest.mark.parametrize("config", [SMALL_HQ, SMALL_HQ_T], ids=["vit", "tinyvit"])
def test_hq_pipeline_on_onnxruntime_matches_the_predictor(tmp_path, config):
    """SAM-HQ on a ViT (the early map: the first global block's output) and on a TinyViT
    (stage 1's): the encoder file outputs the early map beside the embedding, the every-token
    decoder file and the runtime give the Predictor's answers, hq_token_only too."""
    model = seeded_model(config)
    encoder, _ = export_pair(model, tmp_path)
    outputs = [o.name for o in ort.InferenceSession(str(encoder)).get_outputs()]
    assert outputs == ["image_embeddings", "interm_embeddings"]
    onnx_pred = OnnxPredictor.from_dir(tmp_path)
    torch_pred = Predictor(model)
    image = _image()
    onnx_pred.set_image(image)
    torch_pred.set_image(image)
    assert onnx_pred.is_hq
    want_early = torch_pred.get_early_features().numpy()
    assert max_rel_err(onnx_pred._early[0], want_early) < TOL  # 1×h×w×E of the stack
    for hq_only in (False, True):  # two prompt kinds: each call upscales HQ masks to 1024
        _same_answers(torch_pred, onnx_pred, ("box_and_point", "point"), hq_token_only=hq_only)


@pytest.mark.parametrize("config", [SMALL_T, SMALL_EVIT], ids=["tinyvit", "efficientvit"])
def test_family_pipeline_on_onnxruntime_matches_the_predictor(tmp_path, config):
    """MobileSAM's TinyViT and EfficientViT-SAM (an encoder reading 512 px for a 1024 frame):
    encoder and decoder exported, run by the onnxruntime backend."""
    model = seeded_model(config)
    export_pair(model, tmp_path)
    onnx_pred = OnnxPredictor.from_dir(tmp_path)
    assert (onnx_pred.encoder_size, onnx_pred.image_size) == (
        model.encoder_size,
        model.image_size,
    )
    torch_pred = Predictor(model)
    image = _image()
    onnx_pred.set_image(image)
    torch_pred.set_image(image)
    emb = torch_pred.get_image_embedding().numpy()
    assert max_rel_err(onnx_pred.get_image_embedding(), emb) < TOL
    assert not onnx_pred.is_hq
    _same_answers(torch_pred, onnx_pred)
    with pytest.raises(InputError, match="hq_token_only=True needs a SAM-HQ"):
        onnx_pred.predict(point_coords=[[5, 5]], point_labels=[1], hq_token_only=True)


def test_hq_files_that_do_not_belong_together(tmp_path):
    hq = seeded_model(SMALL_HQ)
    export_pair(hq, tmp_path / "hq")
    export_pair(seeded_model(SMALL_T), tmp_path / "sam")
    with pytest.raises(InputError, match="SAM-HQ decoder, which reads interm_embeddings"):
        OnnxPredictor(tmp_path / "sam" / "encoder.onnx", tmp_path / "hq" / "decoder.onnx")
    with pytest.raises(InputError, match="choose a SAM-HQ decoder's answer"):
        export_decoder(seeded_model(SMALL_T), tmp_path / "x.onnx", hq_token_only=True)


def test_export_command_writes_a_sam_hq_pair(tmp_path):
    """``segany export-onnx`` on a SAM-HQ file with SAM-HQ's script's flags; a SAM model given
    them is refused (exit 3, one line)."""
    from test_export_cli import segany

    hq, sam = tmp_path / "hq.pth", tmp_path / "sam.pth"
    torch.save(seeded_model(SMALL_HQ).state_dict(), hq)
    torch.save(seeded_model(SMALL_T).state_dict(), sam)
    dec, enc = tmp_path / "decoder.onnx", tmp_path / "encoder.onnx"
    flags = ["--return-single-mask", "--multimask-output", "--hq-token-only"]
    segany("export-onnx", "--model", hq, "-o", dec, "--encoder-output", enc, *flags)
    session = ort.InferenceSession(str(dec), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(HQ_DECODER_INPUTS)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["segany.hq"] == meta["segany.hq_token_only"] == "true"
    assert meta["segany.multimask_output"] == "true"
    outputs = [o.name for o in ort.InferenceSession(str(enc)).get_outputs()]
    assert outputs == ["image_embeddings", "interm_embeddings"]
    proc = segany("export-onnx", "--model", sam, "-o", dec, "--hq-token-only", check=3)
    assert "choose a SAM-HQ decoder's answer" in proc.stderr
