"""EfficientViT-SAM (l0, l1, l2, xl0, xl1: the EfficientViT family) against the official code as
packaged on PyPI (``efficientsam`` 1.0.0: ``efficientsam.models.efficientvit``), on the same
seeded weights, which perturb every tensor (BatchNorm running statistics included).

The official models are built as its model zoo builds them (``create_efficientvit_sam_model``,
which sets every norm's eps to 1e-6). Tolerances (fp32): embeddings within 1e-4 of the
reference's largest magnitude (measured 1.1e-6 to 2.6e-6 over the five variants at 64, 256 and
full size; segany's convolutions run in channels-last memory, whose kernels round differently:
in the reference's layout the backbones are bit-equal and the embeddings within 2.4e-7); the
folded fast path within 1e-5 of the module (measured ~1e-6).

Inputs are small where the result does not depend on the size (the neck resizes every input to
64×64): 256 px reaches the linear form of the attention in every variant (8×8 tokens > 32) and,
in xl's last stage (4×4), the quadratic one; 64 px gives l0's attention the quadratic form.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import SMALL, max_rel_err, perturb_
from PIL import Image
from skimage import data

from segany import Predictor, build_sam, load_model
from segany.checkpoints import infer_config, load_into, read_weights
from segany.checkpoints.shapes import check_config_limits, expected_shapes
from segany.config import SamConfig
from segany.errors import CheckpointError
from segany.modeling.efficientvit import EFFICIENTVIT, EfficientViTConfig
from segany.modeling.efficientvit.fused import fused_forward
from segany.modeling.families import encoder_config_from_dict
from segany.modeling.tinyvit import TINYVIT
from segany.modeling.vit import VIT
from segany.models import EFFICIENTVIT_SAM_L0, EFFICIENTVIT_SAM_XL0, VARIANTS, VIT_B, VIT_T

TOL = 1e-4
NAMES = ("l0", "l1", "l2", "xl0", "xl1")


def official(name: str):
    """The package's model ``efficientvit-sam-<name>`` with seeded weights on every tensor."""
    from efficientsam.sam_model_zoo import create_efficientvit_sam_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_efficientvit_sam_model(f"efficientvit-sam-{name}", pretrained=False)
    return perturb_(model, 0).eval()


def ours_from(ref: torch.nn.Module, name: str):
    """segany's model of the same variant with the reference's state dict, loaded strictly."""
    model = build_sam(VARIANTS[f"efficientvit_sam_{name}"])
    model.load_state_dict(ref.state_dict(), strict=True)
    return model.eval()


def _images(side: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, side, side, generator=gen)


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def l0():
    ref = official("l0")
    return ours_from(ref, "l0"), ref


@pytest.mark.parametrize("name", NAMES)
def test_variant_matches_official(name):
    ref = official(name)
    cfg = VARIANTS[f"efficientvit_sam_{name}"]
    assert expected_shapes(cfg) == _shapes(ref)  # the same keys with the same shapes
    assert infer_config(ref.state_dict()) == cfg  # detected from the official weights
    ours = ours_from(ref, name)
    x = _images(256)
    with torch.no_grad():
        want = ref.image_encoder(x)
        got = ours.image_encoder(x)
        fast = EFFICIENTVIT.fast_forward(ours.image_encoder, x)
    assert got.shape == (1, 256, 64, 64)
    assert max_rel_err(got, want) < TOL
    assert max_rel_err(fast, got) < 1e-5
    del ref, ours


def test_attention_quadratic_form_and_batches(l0):
    # 64 px: 2×2 tokens in the last stage, fewer than the head width (the quadratic form)
    ours, ref = l0
    x = _images(64, batch=2)
    with torch.no_grad():
        want = ref.image_encoder(x)
        assert max_rel_err(ours.image_encoder(x), want) < TOL
        assert max_rel_err(EFFICIENTVIT.fast_forward(ours.image_encoder, x), want) < TOL


def test_l0_full_size(l0):
    ours, ref = l0
    x = _images(512)
    with torch.no_grad():
        assert max_rel_err(ours.image_encoder(x), ref.image_encoder(x)) < TOL


def test_fast_forward_follows_the_weights_and_training(l0):
    ours = build_sam(EFFICIENTVIT_SAM_L0)
    ours.load_state_dict(l0[0].state_dict())
    encoder, x = ours.image_encoder, _images(64)
    with torch.no_grad():
        before = fused_forward(encoder, x)
        encoder.backbone.stages[3].op_list[1].main.point_conv.norm.running_mean.add_(0.5)
        after = fused_forward(encoder, x)  # the folded copy is remade for the new statistics
        assert not torch.allclose(before, after)
        assert max_rel_err(after, encoder(x)) < 1e-5
    encoder.train()
    try:  # batch statistics: no folding; the module's own forward runs, gradients reach it
        out = fused_forward(encoder, _images(64, batch=2))
        out.sum().backward()
        assert encoder.neck.middle.op_list[0].main.spatial_conv.conv.weight.grad is not None
    finally:
        encoder.eval()


def test_precision_copies_run_through_the_family(l0):
    """bf16 (a bf16 copy of the encoder; attention and the neck's resize run in fp32 inside)
    and int8 (which quantises Linear layers: this encoder has none, so its copy computes in
    fp32) both go through the family's fast path."""
    from segany.inference.precision import encode

    x = _images(64)
    with torch.inference_mode():
        exact = encode(l0[0], x, "fp32").double().flatten()
        for precision in ("bf16", "int8"):
            got = encode(l0[0], x, precision)
            assert got.dtype == torch.float32 and got.shape == (1, 256, 64, 64)
            cos = torch.nn.functional.cosine_similarity(got.double().flatten(), exact, dim=0)
            assert float(cos) >= 0.999, precision


def test_config_json_round_trip():
    for name in NAMES:
        cfg = VARIANTS[f"efficientvit_sam_{name}"]
        enc = cfg.encoder
        assert isinstance(enc, EfficientViTConfig)
        data_ = enc.to_dict()
        assert data_["family"] == "efficientvit" and data_["frame_size"] == 1024
        assert encoder_config_from_dict(data_) == enc
        assert SamConfig.from_json(cfg.to_json()) == cfg
        assert (cfg.frame_size, cfg.embedding_size) == (1024, 64)
    assert EFFICIENTVIT_SAM_L0.image_size == 512 and EFFICIENTVIT_SAM_XL0.image_size == 1024
    with pytest.raises(ValueError, match="unknown 'efficientvit' encoder config fields"):
        encoder_config_from_dict({**EFFICIENTVIT_SAM_L0.encoder.to_dict(), "heads": 3})
    with pytest.raises(ValueError, match="multiple of the backbone's stride"):
        dataclasses.replace(EFFICIENTVIT_SAM_L0.encoder, image_size=500)
    with pytest.raises(ValueError, match="stage 4's blocks must be one of"):
        dataclasses.replace(EFFICIENTVIT_SAM_L0.encoder, blocks=("res", "fmb", "fmb", "mb", "x"))
    with pytest.raises(ValueError, match="neck_stages must name distinct backbone stages"):
        dataclasses.replace(EFFICIENTVIT_SAM_L0.encoder, neck_stages=(4, 5))


def test_detection_between_families():
    evit = expected_shapes(EFFICIENTVIT_SAM_L0)
    assert VIT.detect(evit) is None and TINYVIT.detect(evit) is None
    assert EFFICIENTVIT.detect(expected_shapes(VIT_B)) is None
    assert EFFICIENTVIT.detect(expected_shapes(VIT_T)) is None
    huge = dataclasses.replace(EFFICIENTVIT_SAM_L0.encoder, widths=(32, 64, 128, 256, 10**6))
    with pytest.raises(CheckpointError, match="encoder.widths.*for each element"):
        check_config_limits(dataclasses.replace(EFFICIENTVIT_SAM_L0, encoder=huge))


def test_bad_weights_say_what_is_wrong(l0):
    state = l0[1].state_dict()
    broken = {k: v for k, v in state.items() if "stages.4.op_list.1.local_module" not in k}
    with pytest.raises(CheckpointError, match="no 'image_encoder.backbone.stages.4.op_list.1"):
        infer_config(broken)
    renumbered = {k.replace("stages.2.", "stages.7."): v for k, v in state.items()}
    with pytest.raises(CheckpointError, match=r"backbone stages numbered \[0, 1, 3, 4, 7\]"):
        infer_config(renumbered)
    odd_neck = dict(state)
    odd_neck["image_encoder.neck.input_ops.0.op_list.0.conv.weight"] = torch.zeros(256, 100, 1, 1)
    with pytest.raises(CheckpointError, match="neck's input 0 reads 100 channels"):
        infer_config(odd_neck)


def test_official_files_load_detected_and_wrong_variants_name_both(l0, tmp_path):
    ours, ref = l0
    plain, wrapped = tmp_path / "efficientvit_sam_l0.pt", tmp_path / "wrapped.pt"
    torch.save(ref.state_dict(), plain)  # the released files: a state dict ...
    torch.save({"state_dict": ref.state_dict()}, wrapped)  # ... or one under "state_dict"
    for path in (plain, wrapped):
        assert read_weights(path).state.keys() == ref.state_dict().keys()
        loaded = load_model(path)
        assert loaded.config == EFFICIENTVIT_SAM_L0 and loaded.config.name == "efficientvit_sam_l0"
        for key, value in ours.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(CheckpointError) as caught:
        load_into(build_sam(VARIANTS["efficientvit_sam_l1"]), plain)
    assert "variant efficientvit_sam_l1 (efficientvit:" in str(caught.value)
    assert "look like efficientvit_sam_l0 (efficientvit:" in str(caught.value)
    with pytest.raises(CheckpointError) as caught:
        load_into(build_sam(SMALL), plain)
    assert "variant test (vit:" in str(caught.value)
    assert "look like efficientvit_sam_l0 (efficientvit:" in str(caught.value)


def test_layer_ids_input_size_and_no_drop_path(l0):
    from segany.train.optim import build_optimizer, set_drop_path
    from segany.train.resize import resize_input

    model = l0[0]
    cfg = EFFICIENTVIT_SAM_L0.encoder
    assert EFFICIENTVIT.num_layers(cfg) == 4
    assert EFFICIENTVIT.layer_id("backbone.stages.0.op_list.0.conv.weight", cfg) == 0
    assert EFFICIENTVIT.layer_id("backbone.stages.3.op_list.2.main.point_conv.norm.bias", cfg) == 3
    assert EFFICIENTVIT.layer_id("neck.middle.op_list.0.main.point_conv.conv.weight", cfg) == 5
    assert EFFICIENTVIT.layer_id("norm.weight", cfg) == 5
    opt = build_optimizer(model, lr=1.0, weight_decay=0.0, layer_decay=0.5)
    assert sorted({g["lr_scale"] for g in opt.param_groups}) == [0.5**k for k in range(6)][::-1]
    with pytest.raises(ValueError, match="no drop path"):
        set_drop_path(model, 0.1)
    smaller = resize_input(model, 256)  # no tensor depends on the input size
    assert smaller.config.encoder == dataclasses.replace(cfg, image_size=256)
    assert (smaller.config.frame_size, smaller.config.embedding_size) == (1024, 64)
    for key, value in model.state_dict().items():
        assert torch.equal(smaller.state_dict()[key], value)
    with torch.no_grad():
        assert smaller.image_encoder(_images(256)).shape == (1, 256, 64, 64)
    with pytest.raises(ValueError, match="multiple of the backbone's stride"):
        EFFICIENTVIT.with_input_size(cfg, 520)


def _photo(h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(data.astronaut()).resize((w, h), Image.BILINEAR))


def test_predictor_matches_the_packages_predictor(l0):
    """The 512-px encoder with prompts, input size and masks in the 1024 frame, as the
    package's ``EfficientViTSamPredictor`` has them. The package's model zoo sets every norm's
    eps to 1e-6, the decoder's LayerNorms too (SAM 1's are torch's 1e-5): the variants' configs
    and the checkpoint detection say so (with 1e-5 the logits differed by ~5e-5 relative and a
    mask pixel flipped)."""
    from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor

    from segany.checkpoints import infer_config

    model = l0[0]
    assert model.config.decoder.norm_eps == 1e-6
    assert infer_config(model.state_dict()).decoder.norm_eps == 1e-6
    norms = [m for m in model.mask_decoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-6 for m in norms)
    ours, theirs = Predictor(model), EfficientViTSamPredictor(l0[1])
    image = _photo(220, 160)
    ours.set_image(image)
    theirs.set_image(image)
    assert ours.input_size == tuple(theirs.input_size)
    assert max_rel_err(ours.get_image_embedding(), theirs.features) < TOL
    rng = np.random.default_rng(1)
    points = np.stack([rng.uniform(0, 160, 3), rng.uniform(0, 220, 3)], 1)
    prompts = {
        "point": dict(point_coords=points[:1], point_labels=np.array([1])),
        "points": dict(point_coords=points, point_labels=np.array([1, 0, 1])),
        "box": dict(box=np.array([20.0, 30.0, 130.0, 200.0])),
    }
    for name, prompt in prompts.items():
        for multimask in (True, False):
            got = ours.predict(multimask_output=multimask, **prompt)
            masks, scores, low = theirs.predict(multimask_output=multimask, **prompt)
            logits = ours.predict(multimask_output=multimask, return_logits=True, **prompt).masks
            ref_logits = theirs.predict(multimask_output=multimask, return_logits=True, **prompt)[0]
            assert max_rel_err(got.logits, low) < TOL, name
            assert max_rel_err(logits, ref_logits) < TOL, name
            assert np.abs(got.scores - scores).max() < TOL, name
            assert got.masks.shape == masks.shape == (3 if multimask else 1, 220, 160)
            np.testing.assert_array_equal(got.masks, masks, err_msg=name)


def _generator_pair(l0):
    """l0's weights with the mask hypernetworks' outputs ×10 and the IoU head's ×3, so
    logits and scores sit where the generator's thresholds act (the seeded logits are within
    ±1 everywhere: stability 0), in segany and in the package."""
    ours = build_sam(EFFICIENTVIT_SAM_L0)
    ours.load_state_dict(l0[0].state_dict())
    with torch.no_grad():
        for mlp in ours.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(10.0)
            mlp.layers[-1].bias.mul_(10.0)
        head = ours.mask_decoder.iou_prediction_head.layers[-1]
        head.weight.mul_(3.0)
        head.bias.mul_(3.0)
    ref = official("l0")
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), ref.eval()


@pytest.mark.parametrize(
    "opts",
    [
        # thresholds through the middle of these weights' scores (IoU -3.7..0.6, stability
        # 0.4..1); NMS off: most masks share the whole image's box (with 0.7 one is left)
        dict(pred_iou_thresh=-1.0, stability_score_thresh=0.55, box_nms_thresh=1.0),
        dict(pred_iou_thresh=-1.0, stability_score_thresh=0.55, box_nms_thresh=1.0)
        | dict(output_mode="coco_rle", min_mask_region_area=30),
    ],
)
def test_generator_same_masks_same_order_as_the_packages(l0, opts):
    """segany's MaskGenerator against the package's ``EfficientViTSamAutomaticMaskGenerator``
    on the same weights: the same records in the same order, masks identical but for a pixel
    whose logit is at the threshold within rounding (the predictor's tolerance). Seen: 67 of
    108 records in both cases, identical. Crops are not compared: these weights' masks cover
    most of every crop, so NMS across crops leaves one (and five encodings per package take
    minutes)."""
    from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator

    from segany import MaskGenerator
    from segany.masks import decode_rle

    ours_model, ref_model = _generator_pair(l0)
    photo = _photo(120, 160)
    opts = dict(points_per_side=6, **opts)
    ours = MaskGenerator(ours_model, **opts).generate(photo)
    theirs = EfficientViTSamAutomaticMaskGenerator(ref_model, **opts).generate(photo)
    assert 5 <= len(theirs) < 108  # the thresholds both keep and drop masks
    assert len(ours) == len(theirs)
    differ = 0
    for rec, ref in zip(ours, theirs, strict=True):  # in the same order
        assert rec.point_coords == ref["point_coords"] and rec.crop_box == ref["crop_box"]
        assert abs(rec.predicted_iou - ref["predicted_iou"]) < TOL
        mask = rec.mask()
        want = ref["segmentation"]
        want = decode_rle(want) if isinstance(want, dict) else want
        pixels = int((mask != want).sum())
        assert pixels <= 2, f"{pixels} pixels differ"
        differ += pixels
        assert abs(rec.area - ref["area"]) <= pixels
        assert abs(rec.stability_score - ref["stability_score"]) <= max(TOL, 1 / max(rec.area, 1))
    assert differ <= 2
