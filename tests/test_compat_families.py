"""The compatibility layer for the family members whose official packages keep SAM's API:
MobileSAM's ``mobile_sam`` (``sam_model_registry["vit_t"]`` in ``segany.segment_anything``)
and SAM-HQ's ``segment_anything_hq`` (``segany.segment_anything_hq``: its registry, whose
``vit_b/l/h`` and ``vit_tiny`` are HQ models, and ``hq_token_only``). Each call is made once
through the reference package and once through segany on the same file of seeded weights.

Tolerances (fp32) as the families' parity tests: logits within 1e-4 of the reference's largest
magnitude, IoU scores within 1e-4, masks equal except where the reference logit is that close
to the threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL, max_rel_err, seeded_model
from test_modeling_hq import SMALL_HQ, structured

import segany.segment_anything as compat
import segany.segment_anything_hq as compat_hq
from segany.errors import CheckpointError, InputError
from segany.models import EFFICIENTVIT_SAM_L0, SAM_HQ_VIT_TINY, VIT_T

TOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # many small ops on 2 shared cores
    yield


def _image(h: int = 150, w: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    from PIL import Image

    coarse = (rng.random((h // 16 + 2, w // 16 + 2, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Official-format files (a plain state dict, as the packages save them) of seeded
    weights: SAM-HQ's vit_tiny, MobileSAM's vit_t and a small SAM."""
    folder = tmp_path_factory.mktemp("families")
    out = {}
    for name, config in (("hq_tiny", SAM_HQ_VIT_TINY), ("vit_t", VIT_T), ("small", SMALL)):
        out[name] = folder / f"{name}.pth"
        torch.save(seeded_model(config).state_dict(), out[name])
    return out


def _same(ours, theirs, ref_logits) -> None:
    """(masks, scores, low-res logits) tuples: logits and scores within TOL, masks equal but
    where the reference logit (``ref_logits``, full size) is that close to 0."""
    masks, scores, low = ours
    assert low.shape == theirs[2].shape and max_rel_err(low, theirs[2]) < TOL
    assert np.abs(np.asarray(scores) - np.asarray(theirs[1])).max() < TOL
    near = np.abs(ref_logits) <= TOL * np.abs(ref_logits).max()
    assert not ((np.asarray(masks) != np.asarray(theirs[0])) & ~near).any()


def test_registries_have_the_packages_keys():
    import mobile_sam
    import segment_anything_hq

    assert set(compat.sam_model_registry) == set(mobile_sam.sam_model_registry)
    assert set(compat_hq.sam_model_registry) == set(segment_anything_hq.sam_model_registry)
    official_baseline = segment_anything_hq.sam_model_registry_baseline
    assert set(compat_hq.sam_model_registry_baseline) == set(official_baseline)
    assert compat_hq.build_sam is compat_hq.build_sam_vit_h
    assert compat_hq.sam_model_registry["default"] is compat_hq.build_sam_vit_h
    assert compat_hq.SamPredictor is compat.SamPredictor
    assert compat_hq.sam_model_registry_baseline["vit_b"] is compat.build_sam_vit_b


def test_hq_builders_build_the_packages_models():
    """Random builds: the package's state dict loads strictly, the same parameters trainable
    (SAM-HQ's builders freeze all but the HQ parts), eval mode; the baseline's vit_tiny is
    MobileSAM's vit_t."""
    import segment_anything_hq

    ours = compat_hq.sam_model_registry["vit_tiny"]()
    theirs = segment_anything_hq.sam_model_registry["vit_tiny"]()
    assert ours.config == SAM_HQ_VIT_TINY and ours.is_hq and not ours.training
    ours.load_state_dict(theirs.state_dict(), strict=True)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert trainable and any("hf_token" in n for n in trainable)
    base = compat_hq.sam_model_registry_baseline["vit_tiny"]()
    official_base = segment_anything_hq.sam_model_registry_baseline["vit_tiny"]()
    assert base.config == VIT_T and not base.is_hq
    base.load_state_dict(official_base.state_dict(), strict=True)


@pytest.mark.slow  # two vit_b-sized models (95 M parameters each) initialised on the CPU
def test_hq_vit_b_builder_takes_the_packages_state_dict():
    import segment_anything_hq

    ours = compat_hq.build_sam_vit_b()
    assert ours.config.name == "sam_hq_vit_b"
    ours.load_state_dict(segment_anything_hq.build_sam_vit_b().state_dict(), strict=True)


def test_hq_notebook_calls_match_the_package(files):
    """SAM-HQ's demo calls on its vit_tiny file: predict with hq_token_only by keyword and in
    its place, predict_torch with boxes, Sam.forward with hq_token_only in its place."""
    import segment_anything_hq

    ours_model = compat_hq.sam_model_registry["vit_tiny"](checkpoint=str(files["hq_tiny"]))
    ref_model = segment_anything_hq.sam_model_registry["vit_tiny"](checkpoint=files["hq_tiny"])
    # The package's builder switches to eval mode before loading the file, so TinyViT's cached
    # attention biases stay the initial zeros until eval() runs again (its README's calls do):
    # embeddings 6e-3 off the file's weights until then. segany's loader has no such cache.
    ref_model.eval()
    image = _image()
    ours, theirs = compat_hq.SamPredictor(ours_model), segment_anything_hq.SamPredictor(ref_model)
    ours.set_image(image)
    theirs.set_image(image)
    assert max_rel_err(ours.features, theirs.features) < TOL
    point = (np.array([[80.0, 60.0]]), np.array([1]))
    box = np.array([20.0, 30.0, 150.0, 140.0])
    for hq_only in (False, True):
        for multimask in (True, False):
            got = ours.predict(*point, None, None, multimask, False, hq_only)
            ref = theirs.predict(*point, None, None, multimask, False, hq_only)
            ref_full = theirs.predict(*point, None, None, multimask, True, hq_only)[0]
            assert got[0].shape[0] == 1  # SAM-HQ answers one mask per prompt
            _same(got, ref, ref_full)
        got = ours.predict(box=box, hq_token_only=hq_only)
        ref = theirs.predict(box=box, hq_token_only=hq_only)
        _same(got, ref, theirs.predict(box=box, hq_token_only=hq_only, return_logits=True)[0])
        boxes = torch.tensor([[10.0, 20, 190, 140], [50, 5, 120, 100]])
        boxes = theirs.transform.apply_boxes_torch(boxes, image.shape[:2])
        a = ours.predict_torch(None, None, boxes, None, True, True, hq_only)
        b = theirs.predict_torch(None, None, boxes, None, True, True, hq_only)
        for x, y in zip(a, b, strict=True):
            assert x.shape == y.shape and max_rel_err(x, y) < TOL
    # Sam.forward, the official batched call, hq_token_only in its place
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous()
    resized = theirs.transform.apply_image_torch(tensor[None].float())[0]
    batch = [
        {
            "image": resized,
            "original_size": image.shape[:2],
            "boxes": theirs.transform.apply_boxes_torch(
                torch.from_numpy(box[None]), image.shape[:2]
            ),
        }
    ]
    with torch.inference_mode():
        got_out = ours_model(batch, False, True)
        ref_out = ref_model(batch, False, True)
    for key in ("low_res_logits", "iou_predictions"):
        assert max_rel_err(got_out[0][key], ref_out[0][key]) < TOL, key


def test_hq_generator_gives_the_packages_dicts():
    import segment_anything_hq

    ours_model, ref_model = structured(SMALL_HQ)
    image = _image(120, 160)
    opts = dict(points_per_side=8, pred_iou_thresh=0.9, stability_score_thresh=0.67)
    opts.update(box_nms_thresh=1.0)  # as tests/test_modeling_hq.py: these masks overlap
    ours = compat_hq.SamAutomaticMaskGenerator(ours_model, **opts).generate(image)
    theirs = segment_anything_hq.SamAutomaticMaskGenerator(ref_model, **opts).generate(image)
    assert len(ours) == len(theirs) >= 20  # seen: 33
    differ = 0
    for rec, ref in zip(ours, theirs, strict=True):  # the same order
        assert isinstance(rec, dict) and list(rec) == list(ref)
        differ += int((rec["segmentation"] != ref["segmentation"]).sum())
        assert rec["point_coords"] == ref["point_coords"]
        assert abs(rec["predicted_iou"] - ref["predicted_iou"]) < TOL
    assert differ <= 2  # only at the threshold, if any (seen: none)


def test_mobile_sam_notebook_calls_match_the_package(files):
    import mobile_sam

    ours_model = compat.sam_model_registry["vit_t"](checkpoint=files["vit_t"])
    ref_model = mobile_sam.sam_model_registry["vit_t"](checkpoint=str(files["vit_t"]))
    ref_model.eval()  # refreshes TinyViT's cached attention biases, as the README's calls do
    image = _image()
    ours, theirs = compat.SamPredictor(ours_model), mobile_sam.SamPredictor(ref_model)
    ours.set_image(image)
    theirs.set_image(image)
    point = dict(point_coords=np.array([[80.0, 60.0], [30, 100]]), point_labels=np.array([1, 0]))
    for multimask in (True, False):
        got = ours.predict(**point, multimask_output=multimask)
        ref = theirs.predict(**point, multimask_output=multimask)
        ref_full = theirs.predict(**point, multimask_output=multimask, return_logits=True)[0]
        assert got[0].shape == ref[0].shape
        _same(got, ref, ref_full)


def test_hq_token_only_refused_for_sam_models(files):
    predictor = compat.SamPredictor(compat.sam_model_registry["vit_t"](checkpoint=files["vit_t"]))
    predictor.set_image(_image(64, 64))
    with pytest.raises(InputError, match="hq_token_only=True needs a SAM-HQ model"):
        predictor.predict(np.array([[10.0, 10.0]]), np.array([1]), None, None, True, False, True)


@pytest.mark.parametrize(
    "file, registry, key, held, wanted, where",
    [
        (
            "hq_tiny",
            compat.sam_model_registry,
            "vit_t",
            "SAM-HQ 'sam_hq_vit_tiny'",
            "MobileSAM 'vit_t'",
            "segany.segment_anything_hq.sam_model_registry['vit_tiny']",
        ),
        (
            "vit_t",
            compat_hq.sam_model_registry,
            "vit_tiny",
            "MobileSAM 'vit_t'",
            "SAM-HQ 'sam_hq_vit_tiny'",
            "segany.segment_anything.sam_model_registry['vit_t']",
        ),
        (
            "hq_tiny",
            compat_hq.sam_model_registry,
            "vit_b",
            "SAM-HQ 'sam_hq_vit_tiny'",
            "SAM-HQ 'sam_hq_vit_b'",
            "segany.segment_anything_hq.sam_model_registry['vit_tiny']",
        ),
        (
            "vit_t",
            compat_hq.sam_model_registry_baseline,
            "vit_b",
            "MobileSAM 'vit_t'",
            "SAM 'vit_b'",
            "segany.segment_anything.sam_model_registry['vit_t']",
        ),
        ("small", compat_hq.sam_model_registry, "vit_b", "the custom", "SAM-HQ", "load_model"),
    ],
)
def test_another_familys_checkpoint_names_both(files, file, registry, key, held, wanted, where):
    with pytest.raises(CheckpointError) as caught:
        registry[key](checkpoint=files[file])
    message = str(caught.value)
    assert f"holds {held}" in message and f"not {wanted}" in message and where in message


def test_efficientvit_checkpoint_given_to_a_sam_builder(tmp_path):
    # a random l0 (the file's format is what matters here, not its weights)
    path = tmp_path / "efficientvit_sam_l0.pt"
    torch.save({"state_dict": seeded_model(EFFICIENTVIT_SAM_L0).state_dict()}, path)
    with pytest.raises(CheckpointError) as caught:
        compat.sam_model_registry["vit_b"](checkpoint=path)
    message = str(caught.value)
    assert "EfficientViT-SAM 'efficientvit_sam_l0'" in message and "not SAM 'vit_b'" in message
    assert "segany.load_model (variant 'efficientvit_sam_l0')" in message
