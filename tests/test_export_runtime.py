"""The onnxruntime backend (``segany.export.OnnxPredictor``) against the torch Predictor.

Tolerances: fp32 embedding, mask logits, low-res logits and scores within 1e-4 of the torch
Predictor's largest magnitude (max_rel_err); binary masks equal except where the torch logit lies
that close to the threshold. int8 (encoder and decoder weights quantised; a separate test):
embedding cosine similarity with fp32 ≥ 0.999, and for each prompt the IoU of the best mask with
torch fp32's ≥ 0.9 and scores within 0.05.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL, max_rel_err, perturb_, seeded_model
from skimage import data

from segany.checkpoints import load_model
from segany.config import replace_encoder
from segany.errors import InputError
from segany.export.exporters import export_decoder, export_encoder, export_pair
from segany.export.runtime import OnnxPredictor, preprocess_shape, to_input_frame
from segany.inference.predictor import Prediction, Predictor
from segany.transforms import ResizeLongestSide

pytest.importorskip("onnxruntime", reason="the onnx extra is part of .[dev]")

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]
IMAGE = np.ascontiguousarray(data.astronaut()[40:400:2, 20:500:2])  # 180×240×3, a real photo
H, W = IMAGE.shape[:2]
CASES = {
    "one_point": dict(point_coords=[[100, 80]], point_labels=[1]),
    "mixed_points": dict(point_coords=[[100, 80], [30, 30], [200, 120]], point_labels=[1, 0, 1]),
    "box": dict(box=[20, 20, 200, 150]),
    "box_and_point": dict(box=[20, 20, 200, 150], point_coords=[[100, 80]], point_labels=[0]),
    "two_boxes": dict(box=[[20, 20, 200, 150], [0, 0, 50, 60]]),
    "batched_points": dict(point_coords=[[[100, 80]], [[30, 150]]], point_labels=[[1], [1]]),
    "no_prompt": dict(),
}


@pytest.fixture(scope="module")
def model():
    return load_model()  # the bundled model: trained weights, so masks have real shapes


@pytest.fixture(scope="module")
def onnx_dir(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    export_pair(model, folder)
    return folder


@pytest.fixture(scope="module")
def pair(model, onnx_dir):
    ours, torch_predictor = OnnxPredictor.from_dir(onnx_dir, threads=2), Predictor(model)
    ours.set_image(IMAGE)
    torch_predictor.set_image(IMAGE)
    return ours, torch_predictor


# window 4 tiles the 16×16 grid; window 6 pads it to 18×18 (as vit_b's 14 pads 64 to 70)
@pytest.mark.parametrize("window", [4, 6])
def test_encoder_matches_torch_seeded(tmp_path, window):
    model = seeded_model(replace_encoder(SMALL, window_size=window), seed=5)
    path = export_encoder(model, tmp_path / "enc.onnx")
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    (out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model.image_encoder(x)
    assert out.shape == (1, 256, 16, 16)
    assert max_rel_err(out, ref) < TOL


@pytest.mark.parametrize("hw", [(1, 1), (3, 2), (180, 240), (479, 640), (1000, 7), (192, 192)])
def test_numpy_resize_rules_equal_the_torch_transforms(hw, model):
    t = ResizeLongestSide(192)
    assert preprocess_shape(*hw, 192) == t.get_preprocess_shape(*hw, 192)
    pts = np.array([[0.0, 0.0], [hw[1] - 0.5, hw[0] / 3], [hw[1], hw[0]]])
    # float32: what the Predictor hands the model
    expect = t.apply_coords(pts, hw).astype(np.float32)
    np.testing.assert_array_equal(to_input_frame(pts, hw, 192), expect)


def test_preprocess_equals_the_torch_model(onnx_dir, model):
    ours = OnnxPredictor.from_dir(onnx_dir)
    x, input_size = ours.preprocess(IMAGE)
    resized = ResizeLongestSide(model.image_encoder.img_size).apply_image(IMAGE)
    ref = model.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())
    assert input_size == resized.shape[:2]
    np.testing.assert_array_equal(x, ref.numpy())  # same float32 operations: bit-identical


def test_embedding_matches(pair):
    ours, ref = pair
    assert ours.original_size == ref.original_size and ours.input_size == ref.input_size
    assert max_rel_err(ours.get_image_embedding(), ref.get_image_embedding()) < TOL


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_predict_matches_torch(pair, case, multimask):
    ours, ref = pair
    a = ours.predict(multimask_output=multimask, **CASES[case])
    b = ref.predict(multimask_output=multimask, **CASES[case])
    assert isinstance(a, Prediction)
    assert a.masks.shape == b.masks.shape and a.masks.dtype == np.bool_
    assert a.scores.shape == b.scores.shape and a.logits.shape == b.logits.shape
    assert max_rel_err(a.scores, b.scores) < TOL
    assert max_rel_err(a.logits, b.logits) < TOL
    la = ours.predict(multimask_output=multimask, return_logits=True, **CASES[case]).masks
    lb = ref.predict(multimask_output=multimask, return_logits=True, **CASES[case]).masks
    assert max_rel_err(la, lb) < TOL
    near = np.abs(lb) <= TOL * np.abs(lb).max()
    assert not ((a.masks != b.masks) & ~near).any()


def test_mask_input_round_trip(pair):
    ours, ref = pair
    first = ref.predict(**CASES["one_point"])
    prev = first.logits[np.argmax(first.scores)][None]
    a = ours.predict(mask_input=prev, multimask_output=False, **CASES["one_point"])
    b = ref.predict(mask_input=prev, multimask_output=False, **CASES["one_point"])
    assert max_rel_err(a.logits, b.logits) < TOL


@pytest.mark.slow
def test_int8_pipeline_close_to_fp32(model, pair, tmp_path):
    export_pair(model, tmp_path, quantize=True)
    int8 = OnnxPredictor.from_dir(tmp_path, threads=2)
    int8.set_image(IMAGE)
    _, ref = pair
    e, r = int8.get_image_embedding().ravel(), ref.get_image_embedding().numpy().ravel()
    assert float(e @ r / np.linalg.norm(e) / np.linalg.norm(r)) >= 0.999
    for case in ("one_point", "mixed_points", "box", "box_and_point"):
        a, b = int8.predict(**CASES[case]), ref.predict(**CASES[case])
        assert np.abs(a.scores - b.scores).max() < 0.05
        best_a, best_b = a.masks[np.argmax(b.scores)], b.masks[np.argmax(b.scores)]
        iou = (best_a & best_b).sum() / max((best_a | best_b).sum(), 1)
        assert iou >= 0.9, (case, iou)


def test_predictor_hook(model, onnx_dir, pair, tmp_path):
    # Both forms run the files they are given: the folder's pair, or this encoder with another
    # model's decoder (the same model with its decoder perturbed), each matching its torch twin.
    other = copy.deepcopy(model)
    perturb_(other.mask_decoder, seed=3, scale=0.2)
    export_decoder(other, tmp_path / "other.onnx", return_single_mask=False)
    torch_other = Predictor(other)
    torch_other.set_image(IMAGE)
    by_dir = Predictor.from_onnx(onnx_dir, threads=2)
    by_files = Predictor.from_onnx(onnx_dir / "encoder.onnx", tmp_path / "other.onnx", threads=2)
    for ours, ref in ((by_dir, pair[1]), (by_files, torch_other)):
        ours.set_image(IMAGE)
        a, b = ours.predict(**CASES["mixed_points"]), ref.predict(**CASES["mixed_points"])
        assert max_rel_err(a.scores, b.scores) < TOL
        assert max_rel_err(a.logits, b.logits) < TOL
    # The two decoders differ, so the comparison tells which decoder file ran.
    first = pair[1].predict(**CASES["mixed_points"]).logits
    assert max_rel_err(torch_other.predict(**CASES["mixed_points"]).logits, first) > 100 * TOL


def test_errors(onnx_dir, model, tmp_path):
    ours = OnnxPredictor.from_dir(onnx_dir)
    with pytest.raises(InputError, match="no image is set"):
        ours.predict(**CASES["one_point"])
    ours.set_image(IMAGE)
    with pytest.raises(InputError, match="point_labels"):
        ours.predict(point_coords=[[1, 2]], point_labels=[1, 0])
    with pytest.raises(InputError, match="mask_input"):
        ours.predict(mask_input=np.zeros((1, 64, 64)))
    with pytest.raises(InputError, match="not found"):
        OnnxPredictor(tmp_path / "missing.onnx", onnx_dir / "decoder.onnx")
    single = export_decoder(model, tmp_path / "single.onnx", return_single_mask=True)
    with pytest.raises(InputError, match="single mask"):
        OnnxPredictor(onnx_dir / "encoder.onnx", single)
    with pytest.raises(InputError, match="not an encoder"):
        OnnxPredictor(onnx_dir / "decoder.onnx", onnx_dir / "decoder.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot load"):
        OnnxPredictor(tmp_path / "junk.onnx", onnx_dir / "decoder.onnx")


_NO_TORCH = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, _Block())
    import numpy as np
    from segany import Prediction  # the lazy top-level name must not pull torch in either
    from segany.export import OnnxPredictor
    predictor = OnnxPredictor.from_dir(sys.argv[1], threads=1)
    predictor.set_image(np.load(sys.argv[2]))
    p = predictor.predict(point_coords=[[100, 80]], point_labels=[1])
    assert isinstance(p, Prediction)
    np.savez(sys.argv[3], masks=p.masks, scores=p.scores, logits=p.logits)
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch loaded"
    print("ok")
    """
)


def test_runs_without_torch(onnx_dir, pair, tmp_path):
    """The whole pipeline in a subprocess where ``import torch`` fails."""
    np.save(tmp_path / "image.npy", IMAGE)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, onnx_dir, tmp_path / "image.npy", tmp_path / "o.npz"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    out = np.load(tmp_path / "o.npz")
    ref = pair[1].predict(**CASES["one_point"])
    assert max_rel_err(out["scores"], ref.scores) < TOL
    assert max_rel_err(out["logits"], ref.logits) < TOL
