"""SAM-HQ from transformers' ``SamHQModel`` folders, against transformers and the official package.

A seeded ``SamHQModel`` (a small ViT: width 64, 3 blocks with the 2nd and 3rd global so the
decoder must read the *first* global block's output, 256 px; every tensor perturbed, the HQ
token, its MLP and the three fusion stacks included) is written with ``save_pretrained`` and
loaded by ``segany.load_model`` with no conversion step. The other direction converts a seeded
segany SAM-HQ model to an HF folder that ``SamHQModel.from_pretrained`` loads with no missing,
unexpected or mis-shaped key. The same weights in ``segment_anything_hq`` (the official package)
give a third opinion, so a wrong name mapping cannot hide behind a symmetric mistake.

Tolerance (fp32), as tests/test_hf_parity.py: the largest difference within 1e-4 of the largest
magnitude, for the image embeddings, the early feature map, the IoU scores and mask logits.

transformers 5.25 does not compute SAM-HQ's masks: its ``SamHQMaskDecoder.forward`` upscales the
image embedding from *before* the two-way transformer (with the dense prompt added, rows and
columns swapped) where the official decoder upscales the transformer's output (the name
``iou_token_out`` takes the transformer's second output and is then overwritten). Its
embeddings, early map and IoU scores are SAM-HQ's. So segany is held to the official package on
the transformers weights (logits and masks), and to transformers' own logits only when it
computes them from the tensor transformers upscales, which still checks every decoder weight's
place; a strict xfail says when transformers changes.

transformers' decoder answers a multimask prompt with SAM's three masks sorted by predicted IoU,
each plus the HQ mask, where SAM-HQ's official decoder (and segany) keeps only the first of
those: the comparison takes transformers' first mask and score. Its two-way blocks' LayerNorm
eps is ``mask_decoder_config.layer_norm_eps`` (1e-6 by default; the official code uses 1e-5):
the seeded model is built with 1e-5, as segany computes whatever the file says
(tests/test_hf_parity.py does the same for SAM).
"""

from __future__ import annotations

import json

import pytest
import torch
from test_hf_parity import SHARED, TIED, T, close, seeded_state
from test_modeling_hq import SMALL_HQ, _compare, _image, reference

from segany.checkpoints import convert, load_model, load_state_dict, save_model
from segany.checkpoints.hf import config_from_hf, hf_to_official, official_to_hf
from segany.checkpoints.shapes import check_state_dict, infer_config
from segany.errors import CheckpointError
from segany.modeling.vit import VIT
from segany.models import SAM_HQ_VIT_B, SAM_HQ_VIT_H, SAM_HQ_VIT_L, build_sam


def hf_hq_config(**decoder) -> object:
    return T.SamHQConfig(
        vision_config=dict(
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=256,
            patch_size=16,
            window_size=4,
            global_attn_indexes=[1, 2],
        ),
        prompt_encoder_config=dict(image_size=256, patch_size=16),
        mask_decoder_config=dict(mlp_dim=256, layer_norm_eps=1e-5, vit_dim=64, **decoder),
    )


def seeded_hf() -> object:
    hf = T.SamHQModel(hf_hq_config()).eval()
    shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    state = seeded_state(shapes, seed=5)
    state[TIED] = state[SHARED]  # one tensor in transformers, tied under two names
    hf.load_state_dict(state, strict=True)
    return hf


@pytest.fixture(scope="module")
def hf_to_segany(tmp_path_factory):
    """(HF SamHQModel with seeded weights, segany model loaded from its save_pretrained folder)."""
    hf = seeded_hf()
    folder = tmp_path_factory.mktemp("hfhq") / "sam_hq"
    hf.save_pretrained(folder)
    return hf, load_model(folder)


@pytest.fixture(scope="module")
def segany_to_hf(tmp_path_factory):
    """(HF SamHQModel from_pretrained on segany's converted folder, seeded segany model)."""
    ours = build_sam(SMALL_HQ)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ours.load_state_dict(seeded_state(shapes, seed=6), strict=True)
    root = tmp_path_factory.mktemp("seghq")
    folder = convert(save_model(ours, root / "m.safetensors"), root / "hf_folder")[1]
    hf, info = T.SamHQModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    return hf.eval(), ours.eval()


def test_folder_loads_as_sam_hq_with_the_same_tensors(hf_to_segany):
    hf, ours = hf_to_segany
    assert ours.is_hq
    assert ours.config.encoder == SMALL_HQ.encoder and ours.config.decoder == SMALL_HQ.decoder
    official = hf_to_official(hf.state_dict())
    theirs = ours.state_dict()
    assert sorted(official) == sorted(theirs)
    assert all(torch.equal(official[k], theirs[k]) for k in theirs)
    # the HQ parts, named here by hand from modeling_sam_hq's SamHQMaskDecoder
    hf_state = hf.state_dict()
    for official, name in HQ_NAMES.items():
        for what in ("weight", "bias"):
            key = f"{official}.{what}"
            if key in theirs or what == "weight":
                assert torch.equal(theirs[key], hf_state[f"{name}.{what}"]), key


HQ_NAMES = {  # official SAM-HQ name -> transformers' SamHQModel name
    "mask_decoder.hf_token": "mask_decoder.hq_token",
    "mask_decoder.hf_mlp.layers.0": "mask_decoder.hq_mask_mlp.proj_in",
    "mask_decoder.hf_mlp.layers.1": "mask_decoder.hq_mask_mlp.layers.0",
    "mask_decoder.hf_mlp.layers.2": "mask_decoder.hq_mask_mlp.proj_out",
    "mask_decoder.compress_vit_feat.0": "mask_decoder.compress_vit_conv1",
    "mask_decoder.compress_vit_feat.1": "mask_decoder.compress_vit_norm",
    "mask_decoder.compress_vit_feat.3": "mask_decoder.compress_vit_conv2",
    "mask_decoder.embedding_encoder.0": "mask_decoder.encoder_conv1",
    "mask_decoder.embedding_encoder.1": "mask_decoder.encoder_norm",
    "mask_decoder.embedding_encoder.3": "mask_decoder.encoder_conv2",
    "mask_decoder.embedding_maskfeature.0": "mask_decoder.mask_conv1",
    "mask_decoder.embedding_maskfeature.1": "mask_decoder.mask_norm",
    "mask_decoder.embedding_maskfeature.3": "mask_decoder.mask_conv2",
}


def test_every_official_key_maps_and_round_trips(hf_to_segany):
    hf, _ = hf_to_segany
    state = hf.state_dict()
    official = hf_to_official(state)
    # every name is one SAM-HQ's official package has, with its shape
    ref = reference(SMALL_HQ, official)
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items() if "pixel_" not in k} == {
        k: tuple(v.shape) for k, v in official.items()
    }
    back = official_to_hf(official)
    assert sorted(back) == sorted(k for k in state if k != TIED)  # as save_pretrained writes
    assert all(torch.equal(back[k], state[k]) for k in back)


def test_bare_weights_file_reads_the_sibling_config(hf_to_segany, tmp_path):
    hf, ours = hf_to_segany
    hf.save_pretrained(tmp_path)
    cfg, state = load_state_dict(tmp_path / "model.safetensors")
    assert cfg.decoder.hq and cfg.encoder == SMALL_HQ.encoder
    assert all(torch.equal(state[k], v) for k, v in ours.state_dict().items())


def test_segany_info_on_the_folder_says_sam_hq(hf_to_segany, tmp_path, capsys):
    from segany.cli import main

    hf, _ = hf_to_segany
    hf.save_pretrained(tmp_path / "sam_hq")
    assert main(["info", str(tmp_path / "sam_hq")]) == 0
    out = capsys.readouterr().out
    assert "format      hf" in out and "input 256; SAM-HQ decoder)" in out, out


def test_segany_folder_round_trips_through_official_pth(segany_to_hf, tmp_path):
    hf, ours = segany_to_hf
    hf.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved["model_type"] == "sam_hq" and saved["mask_decoder_config"]["vit_dim"] == 64
    pth = convert(tmp_path / "again", tmp_path / "again.pth")[1]
    _, state = load_state_dict(pth)
    ref = ours.state_dict()
    assert sorted(state) == sorted(ref) and all(torch.equal(state[k], ref[k]) for k in ref)


# The sizes of transformers' SamHQModel for the three released ViT models (what the
# syscv-community/sam-hq-vit-* config.json files hold, per convert_samhq_to_hf.get_config).
OFFICIAL_HF = {
    SAM_HQ_VIT_B: ({}, 768),
    SAM_HQ_VIT_L: (
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
             global_attn_indexes=[5, 11, 17, 23]),
        1024,
    ),
    SAM_HQ_VIT_H: (
        dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
             global_attn_indexes=[7, 15, 23, 31]),
        1280,
    ),
}  # fmt: skip


@pytest.mark.parametrize("variant", list(OFFICIAL_HF), ids=lambda v: v.name)
def test_released_sizes_map_to_the_variants(variant):
    vision, vit_dim = OFFICIAL_HF[variant]
    config = T.SamHQConfig(vision_config=vision, mask_decoder_config=dict(vit_dim=vit_dim))
    pre = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    assert config_from_hf(config.to_dict(), pre) == variant
    with torch.device("meta"):  # shapes only (vit_h would be 2.5 GB)
        state = hf_to_official(T.SamHQModel(config).state_dict())
    assert infer_config(state) == variant
    check_state_dict(variant, state)


def test_vit_dim_that_is_not_the_encoder_width_is_refused():
    bad = hf_hq_config().to_dict()
    bad["mask_decoder_config"]["vit_dim"] = 32
    with pytest.raises(CheckpointError, match="vit_dim is 32 but the vision encoder is 64"):
        config_from_hf(bad)


IMAGE = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(11))  # normalised
POINTS = torch.tensor([[[40.0, 60.0], [200.5, 30.0], [128.0, 220.0]]])
LABELS = torch.tensor([[1, 0, 1]])
BOX = torch.tensor([[30.0, 40.0, 190.0, 230.0]])
MASK = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(7)) * 3
CASES = {
    "one_point": dict(points=(POINTS[:, :1], LABELS[:, :1])),
    "mixed_points": dict(points=(POINTS, LABELS)),
    "box": dict(box=BOX),
    "box_and_points": dict(points=(POINTS[:, :2], LABELS[:, :2]), box=BOX),
    "points_and_mask": dict(points=(POINTS, LABELS), mask=MASK),
}


@pytest.fixture(scope="module")
def encoded(request):
    """Per direction: HF (embedding, early map) and segany's, of IMAGE, computed once."""
    cache: dict[str, tuple] = {}

    def get(direction: str):
        if direction not in cache:
            hf, ours = request.getfixturevalue(direction)
            with torch.no_grad():
                emb_hf, interm = hf.get_image_embeddings(IMAGE)
                emb, early = VIT.forward_with_early(ours.image_encoder, IMAGE)
            cache[direction] = (emb_hf, interm[0], emb, early)
        return cache[direction]

    return get


@pytest.mark.parametrize("direction", ["hf_to_segany", "segany_to_hf"])
def test_embeddings_and_early_map_match(encoded, direction):
    emb_hf, early_hf, emb, early = encoded(direction)
    assert emb.shape == emb_hf.shape == (1, 256, 16, 16)
    assert early.shape == early_hf.shape == (1, 16, 16, 64)  # B×h×w×E
    close(emb, emb_hf)
    close(early, early_hf)


class _AsTransformers(torch.nn.Module):
    """segany's two-way transformer, but handing the upscaling what transformers 5.25's
    ``SamHQMaskDecoder.forward`` hands it: the image embedding *before* the transformer (dense
    prompt added), its rows and columns swapped (``image_embeddings.transpose(2, 3)`` on a
    B×C×h×w tensor, where SAM's decoder applies it to the transformer's B×HW×C output).
    Prompt tokens (hence IoU scores) are unchanged."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, src, pos, tokens):
        hs, _ = self.inner(src, pos, tokens)
        b, c, h, w = src.shape
        return hs, src.transpose(2, 3).reshape(b, c, h * w).transpose(1, 2)  # -> B×HW×C


_REFERENCE_DECODERS: dict[int, torch.nn.Module] = {}


def _reference_decoder(ours) -> torch.nn.Module:
    """segment_anything_hq's decoder with ``ours``' weights (built once per model)."""
    if id(ours) not in _REFERENCE_DECODERS:
        _REFERENCE_DECODERS[id(ours)] = reference(SMALL_HQ, ours.state_dict()).mask_decoder
    return _REFERENCE_DECODERS[id(ours)]


def _decode_all(hf, ours, encoded, case, multimask, hq_only):
    """(transformers' output, segany's (logits, iou), segany's as transformers computes,
    segment_anything_hq's (logits, iou)) for one prompt case."""
    emb_hf, early_hf, emb, early = encoded
    spec = CASES[case]
    points, box, mask = spec.get("points"), spec.get("box"), spec.get("mask")
    kw = {}
    if points is not None:
        kw["input_points"] = points[0][:, None]  # HF: B×point_batch×N×2
        kw["input_labels"] = points[1][:, None]
    if box is not None:
        kw["input_boxes"] = box[:, None]  # HF: B×boxes×4
    if mask is not None:
        kw["input_masks"] = mask
    decoder, pe = ours.mask_decoder, ours.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        out = hf(
            image_embeddings=emb_hf,
            intermediate_embeddings=[early_hf],
            multimask_output=multimask,
            hq_token_only=hq_only,
            **kw,
        )
        sparse, dense = ours.prompt_encoder(points=points, boxes=box, masks=mask)
        args = (emb, pe, sparse, dense, multimask)
        got = decoder(*args, hq_token_only=hq_only, interm_embeddings=[early])
        inner = decoder.transformer
        decoder.transformer = _AsTransformers(inner)
        try:
            as_hf = decoder(*args, hq_token_only=hq_only, interm_embeddings=[early])
        finally:
            decoder.transformer = inner
        # segment_anything_hq's decoder on segany's tensors and the same weights
        ref = _reference_decoder(ours)(*args, hq_only, [early])
    return out, got, as_hf, ref


# Every case with multimask and hq_token_only on and off for the loaded HF folder; the converted
# direction (the same code both ways) on two of those four.
MATRIX = [
    (direction, case, multimask, hq_only)
    for direction in ("hf_to_segany", "segany_to_hf")
    for case in CASES
    for multimask in (True, False)
    for hq_only in (False, True)
    if direction == "hf_to_segany" or multimask != hq_only
]


@pytest.mark.parametrize(("direction", "case", "multimask", "hq_only"), MATRIX)
def test_hq_masks_and_scores_match(request, encoded, direction, case, multimask, hq_only):
    hf, ours = request.getfixturevalue(direction)
    out, (low, iou), (low_hf_way, _), (low_ref, iou_ref) = _decode_all(
        hf, ours, encoded(direction), case, multimask, hq_only
    )
    assert low.shape == low_ref.shape == (1, 1, 64, 64) and iou.shape == (1, 1)
    # the official package on the same weights: logits and score
    close(low, low_ref)
    close(iou, iou_ref)
    # transformers: B×point_batch×masks×64×64, its first mask/score being SAM-HQ's answer.
    # Its score comes from the prompt tokens alone and agrees; its logits agree once segany
    # computes them from the tensor transformers upscales (see _AsTransformers), so every
    # decoder weight, the HQ parts included, is where transformers reads it.
    close(iou, out.iou_scores[:, 0, :1])
    close(low_hf_way, out.pred_masks[:, 0, :1])


@pytest.mark.xfail(
    strict=True,
    reason="transformers 5.25's SamHQMaskDecoder upscales the image embedding from before the "
    "two-way transformer, rows and columns swapped, where SAM-HQ's official decoder upscales "
    "the transformer's output: its mask logits are not SAM-HQ's (its scores are)",
)
def test_transformers_hq_logits_equal_the_official_ones(hf_to_segany, encoded):
    # Turns into an XPASS (a failure, strict) the day transformers computes SAM-HQ's masks.
    hf, ours = hf_to_segany
    out, _, _, (low_ref, _) = _decode_all(
        hf, ours, encoded("hf_to_segany"), "one_point", False, False
    )
    close(out.pred_masks[:, 0, :1], low_ref)


def test_predictor_matches_the_official_predictor_on_the_hf_weights(hf_to_segany):
    # segany's Predictor on the model loaded from the HF folder, against segment_anything_hq's
    # SamPredictor given the same weights by name: every prompt kind, multimask and
    # hq_token_only on and off, identical binary masks.
    hf, ours = hf_to_segany
    worst = _compare((ours, reference(ours.config, hf_to_official(hf.state_dict()))), _image())
    assert worst < 1e-4
