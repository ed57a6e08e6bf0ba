"""SAM 2's ONNX export (the decoder with the web-demo interface plus ``high_res_feats_0/1``, the
encoder with the two maps as outputs) and the onnxruntime backend, on a small seeded SAM 2
(Hiera of width 32, stages 1-1-2-1, at 256 px, with the official decoder).

Tolerances (fp32), as tests/test_export_families.py: logits and scores within 1e-4 of the
reference's largest magnitude; binary masks equal except where the reference logit lies that
close to the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import max_rel_err, seeded_model
from test_export_families import PROMPTS, _image, _same_answers

from segany.config import DecoderConfig, SamConfig
from segany.errors import InputError
from segany.export.decoder_sam2 import SAM2_DECODER_INPUTS, Sam2OnnxDecoder
from segany.export.exporters import decoder_example_inputs, export_decoder, export_pair
from segany.export.runtime import OnnxPredictor
from segany.inference.predictor import Predictor
from segany.modeling.hiera import unpack_high_res
from segany.modeling.hiera.config import HieraConfig

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is part of .[dev]")

TOL = 1e-4
SMALL_SAM2 = SamConfig(
    "test-sam2",
    HieraConfig(32, 1, (1, 1, 2, 1), (3,), (8, 4, 8, 4), (4, 4), image_size=256),
    decoder=DecoderConfig(sam2="2.1"),
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def model():
    return seeded_model(SMALL_SAM2)


@pytest.fixture(scope="module")
def pair(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam2_onnx")
    export_pair(model, folder)
    return folder


def _feed(model, points: np.ndarray, labels: np.ndarray, mask: bool, seed: int = 0):
    """Decoder inputs (torch) for one prompt set in the S×S frame, a padding point last."""
    g = torch.Generator().manual_seed(seed)
    emb, s0, s1 = decoder_example_inputs(model)[:3]
    coords = torch.cat([torch.as_tensor(points, dtype=torch.float32), torch.zeros(1, 2)])[None]
    labs = torch.cat([torch.as_tensor(labels, dtype=torch.float32), torch.tensor([-1.0])])[None]
    mask_input = torch.randn(1, 1, 64, 64, generator=g) * 4
    has = torch.tensor([1.0 if mask else 0.0])
    return (emb, s0, s1, coords, labs, mask_input, has, torch.tensor([200.0, 300.0]))


def _cases():
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 256, (4, 2))
    return {
        "point": (pts[:1], np.array([1]), False),
        "points": (pts, np.array([1, 0, 1, 0]), False),
        "box": (np.array([[30.0, 40.0], [200.0, 220.0]]), np.array([2, 3]), False),
        "box_point_mask": (
            np.concatenate([[[30.0, 40.0], [200.0, 220.0]], pts[:1]]),
            np.array([2, 3, 0]),
            True,
        ),
    }


@pytest.mark.parametrize("single", [False, True])
def test_decoder_module_is_the_models_decode(model, single):
    """The traceable module answers as the model itself: ``Sam2.decode`` then one bilinear
    resize (every token, or SAM 2's single-mask answer with its stability fallback)."""
    module = Sam2OnnxDecoder(model, return_single_mask=single).eval()
    fell_back = 0
    for name, (pts, labels, mask) in _cases().items():
        feed = _feed(model, pts, labels, mask)
        masks, scores, low = module(*feed)
        emb, s0, s1, coords, labs, mask_input, has, size = feed
        packed = torch.cat([torch.nn.functional.pixel_unshuffle(s0, 2), s1], 1).permute(0, 2, 3, 1)
        with torch.no_grad():  # (the prompt encoder adds the padding point itself)
            sparse, dense = model.prompt_encoder(
                points=(coords[:, :-1], labs[:, :-1].int()),
                boxes=None,
                masks=mask_input if mask else None,
            )
            all_low, all_iou, _ = model.mask_decoder.predict_all(
                emb, model.prompt_encoder.get_dense_pe(), sparse, dense, packed.contiguous()
            )
            want_low, want_iou = all_low, all_iou
            if single:
                want_low, want_iou = model.mask_decoder.select(all_low, all_iou, False)
                fell_back += int(not torch.equal(want_low, all_low[:, :1]))
            want = model.postprocess_masks(want_low, (256, 256), (200, 300))
        assert torch.equal(low, want_low) and torch.equal(scores, want_iou), name
        assert max_rel_err(masks, want) < 1e-6, name
    if single:
        assert fell_back, "no case exercised the stability fallback"


@pytest.mark.parametrize("single", [False, True])
def test_exported_decoder_on_onnxruntime(model, tmp_path, single):
    path = export_decoder(model, tmp_path / "d.onnx", return_single_mask=single)
    session = ort.InferenceSession(str(path))
    assert tuple(i.name for i in session.get_inputs()) == SAM2_DECODER_INPUTS
    module = Sam2OnnxDecoder(model, return_single_mask=single).eval()
    for name, (pts, labels, mask) in _cases().items():  # N = 2 to 4 points, one file
        feed = _feed(model, pts, labels, mask)
        want = module(*feed)
        inputs = dict(zip(SAM2_DECODER_INPUTS, (t.numpy() for t in feed), strict=True))
        got = session.run(None, inputs)
        for a, b in zip(got, want, strict=True):
            assert a.shape == tuple(b.shape), name
            assert max_rel_err(torch.from_numpy(a), b) < TOL, name


def test_pipeline_on_onnxruntime_matches_the_predictor(model, pair):
    """Encoder and every-token decoder exported, run by OnnxPredictor: the embedding, the two
    high-res maps and every prompt's answer (multimask and SAM 2's single mask) as the torch
    Predictor gives them, on a non-square image (stretched to the frame)."""
    onnx_pred = OnnxPredictor.from_dir(pair)
    assert onnx_pred.is_sam2 and not onnx_pred.is_hq
    torch_pred = Predictor(model)
    image = _image(150, 200)
    onnx_pred.set_image(image)
    torch_pred.set_image(image)
    assert onnx_pred.input_size == (256, 256)
    emb = torch_pred.get_image_embedding().numpy()
    assert max_rel_err(onnx_pred.get_image_embedding(), emb) < TOL
    s0, s1 = unpack_high_res(torch_pred.get_early_features(), 256)
    assert max_rel_err(onnx_pred._high_res["high_res_feats_0"], s0) < TOL
    assert max_rel_err(onnx_pred._high_res["high_res_feats_1"], s1) < TOL
    _same_answers(torch_pred, onnx_pred)
    # a mask fed back, and a batch of boxes
    low = torch_pred.predict(**PROMPTS["point"]).logits[:1]
    for opts in (
        dict(mask_input=low, **PROMPTS["points"]),
        dict(box=[[20, 20, 180, 130], [50, 10, 120, 90]]),
    ):
        for multimask in (True, False):
            want = torch_pred.predict(multimask_output=multimask, return_logits=True, **opts)
            got = onnx_pred.predict(multimask_output=multimask, return_logits=True, **opts)
            assert max_rel_err(got.masks, want.masks) < TOL
            assert np.abs(got.scores - want.scores).max() < TOL


def test_files_that_do_not_belong_together(model, pair, tmp_path):
    from test_modeling_tinyvit import SMALL_T

    export_pair(seeded_model(SMALL_T), tmp_path / "sam")
    with pytest.raises(InputError, match="SAM 2 decoder, which reads high_res_feats_0"):
        OnnxPredictor(tmp_path / "sam" / "encoder.onnx", pair / "decoder.onnx")
    with pytest.raises(InputError, match="choose a SAM-HQ decoder's answer"):
        export_decoder(model, tmp_path / "x.onnx", hq_token_only=True)
    with pytest.raises(InputError, match="needs a SAM 2 model"):
        Sam2OnnxDecoder(seeded_model(SMALL_T), return_single_mask=True)


def test_export_command_on_a_sam2_file(model, tmp_path):
    """``segany export-onnx`` on a SAM 2 file writes the pair; ``segany segment --backend
    onnx`` runs it."""
    from test_export_cli import segany

    from segany.checkpoints import save_model

    weights = save_model(model, tmp_path / "sam2.safetensors")
    dec, enc = tmp_path / "onnx" / "decoder.onnx", tmp_path / "onnx" / "encoder.onnx"
    segany("export-onnx", "--model", weights, "-o", dec, "--encoder-output", enc, "-q")
    names = [i.name for i in ort.InferenceSession(str(dec)).get_inputs()]
    assert names == list(SAM2_DECODER_INPUTS)
    outputs = [o.name for o in ort.InferenceSession(str(enc)).get_outputs()]
    assert outputs == ["image_embeddings", "high_res_feats_0", "high_res_feats_1"]
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(_image(150, 200)).save(photo)
    out = tmp_path / "out"
    segany(
        "segment", photo, "--point", "80,60", "-o", out, "--backend", "onnx",
        "--onnx-dir", tmp_path / "onnx", "-q",
    )  # fmt: skip
    assert any(out.iterdir())


@pytest.mark.slow  # ~60 s on the loaded 2 cores: SAM 2.1 tiny at 1024 px traced and run twice
def test_tiny_pipeline_full_size(tmp_path):
    """The published SAM 2.1 tiny layout at 1024 px (windows that need padding, the real
    decoder sizes): the exported pair on onnxruntime gives the Predictor's answers."""
    from segany.models import VARIANTS

    model = seeded_model(VARIANTS["sam2.1_hiera_tiny"])
    export_pair(model, tmp_path)
    onnx_pred = OnnxPredictor.from_dir(tmp_path)
    torch_pred = Predictor(model)
    image = _image(300, 420)
    onnx_pred.set_image(image)
    torch_pred.set_image(image)
    emb = torch_pred.get_image_embedding().numpy()
    assert max_rel_err(onnx_pred.get_image_embedding(), emb) < TOL
    _same_answers(torch_pred, onnx_pred)
