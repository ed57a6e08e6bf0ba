"""segany's Sam against transformers' SamModel after converting weights each way.

Small config (width 64, 2 blocks, 256 px input) with seeded weights on every tensor. Both
directions go through files, as users do: HF ``save_pretrained`` folder -> ``segany.load_model``,
and segany -> ``convert`` to an HF folder -> ``SamModel.from_pretrained``. Tolerance (fp32): the
largest difference within 1e-4 of the largest magnitude, for the image embeddings, IoU scores
and low-res mask logits.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from helpers import SMALL

from segany.checkpoints import convert, load_model, load_state_dict, save_model
from segany.checkpoints.hf import config_from_hf, hf_to_official, official_to_hf
from segany.checkpoints.shapes import check_state_dict, infer_config
from segany.modeling.vit import ViTConfig
from segany.models import VARIANTS, SamConfig, build_sam

TIED = "prompt_encoder.shared_embedding.positional_embedding"
SHARED = "shared_image_embedding.positional_embedding"


def _transformers():
    """Import transformers' SAM with the torchvision stub hidden.

    tests/stubs holds a two-function torchvision stand-in for the reference package; transformers
    would take it for the real one and import parts it lacks. Its availability check is cached,
    so asking it once with the stub out of sight keeps it off for the session."""
    stubs = str(Path(__file__).parent / "stubs")
    saved_path = list(sys.path)
    saved_mods = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torchvision"}
    sys.path[:] = [p for p in sys.path if p != stubs]
    for k in saved_mods:
        del sys.modules[k]
    try:
        from transformers.utils import import_utils

        import_utils.is_torchvision_available.cache_clear()
        assert not import_utils.is_torchvision_available()
        import transformers
        from transformers.models.sam import modeling_sam  # noqa: F401 (import it now)
    finally:
        sys.path[:] = saved_path
        sys.modules.update(saved_mods)
    return transformers


T = _transformers()


def seeded_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Every tensor perturbed: norm gains near 1, small biases and positional tables,
    fan-in-scaled weights, a unit-scale random-Fourier matrix."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = shapes[key]
        x = torch.randn(shape, generator=g)
        if key.endswith(("positional_encoding_gaussian_matrix", "positional_embedding")):
            out[key] = x
        elif len(shape) == 1:
            out[key] = 1 + 0.1 * x if key.endswith(".weight") else 0.1 * x
        elif key.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
            out[key] = 0.1 * x
        else:
            out[key] = x / math.sqrt(math.prod(shape[1:]))
    return out


def hf_config() -> object:
    return T.SamConfig(
        vision_config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=256,
            patch_size=16,
            window_size=4,
            global_attn_indexes=[1],
        ),
        prompt_encoder_config=dict(image_size=256, patch_size=16),
        # The official two-way blocks use LayerNorm's default eps 1e-5; transformers defaults
        # to 1e-6 there (a ~1e-4 relative shift with these weights), so match the official one.
        mask_decoder_config=dict(mlp_dim=256, layer_norm_eps=1e-5),
    )


@pytest.fixture(scope="module")
def hf_to_segany(tmp_path_factory):
    """(HF model with seeded weights, segany model loaded from its save_pretrained folder)."""
    hf = T.SamModel(hf_config()).eval()
    shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    state = seeded_state(shapes, seed=3)
    state[TIED] = state[SHARED]  # one tensor in transformers, tied under two names
    hf.load_state_dict(state, strict=True)
    folder = tmp_path_factory.mktemp("hf") / "sam"
    hf.save_pretrained(folder)
    ours = load_model(folder)
    return hf, ours


@pytest.fixture(scope="module")
def segany_to_hf(tmp_path_factory):
    """(HF model from_pretrained on segany's converted folder, seeded segany model)."""
    ours = build_sam(SMALL)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ours.load_state_dict(seeded_state(shapes, seed=4), strict=True)
    root = tmp_path_factory.mktemp("seg")
    src = save_model(ours, root / "m.safetensors")
    folder = convert(src, root / "hf_folder")[1]
    hf, info = T.SamModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    return hf.eval(), ours


def test_hf_folder_loads_as_the_same_tensors(hf_to_segany):
    hf, ours = hf_to_segany
    assert dataclass_sizes(ours.config) == dataclass_sizes(SMALL)
    official = hf_to_official(hf.state_dict())
    theirs = ours.state_dict()
    assert sorted(official) == sorted(theirs)
    assert all(torch.equal(official[k], theirs[k]) for k in theirs)


def test_key_conversion_round_trips(hf_to_segany):
    hf, _ = hf_to_segany
    state = hf.state_dict()
    back = official_to_hf(hf_to_official(state))
    assert sorted(back) == sorted(k for k in state if k != TIED)  # as save_pretrained writes
    assert all(torch.equal(back[k], state[k]) for k in back)


def test_hf_folder_round_trips_through_official_pth(segany_to_hf, tmp_path):
    hf, ours = segany_to_hf
    hf.save_pretrained(tmp_path / "again")
    pth = convert(tmp_path / "again", tmp_path / "again.pth")[1]
    _, state = load_state_dict(pth)
    ref = ours.state_dict()
    assert sorted(state) == sorted(ref) and all(torch.equal(state[k], ref[k]) for k in ref)


OFFICIAL_HF = {  # what facebook/sam-vit-{base,large,huge} config.json files hold
    "vit_b": {},
    "vit_l": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        global_attn_indexes=[5, 11, 17, 23],
    ),
    "vit_h": dict(
        hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
        global_attn_indexes=[7, 15, 23, 31],
    ),
}  # fmt: skip
HUB_PREPROCESSOR = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


@pytest.mark.parametrize("name", list(OFFICIAL_HF))
def test_official_size_hf_models_map_to_the_variants(name):
    # Shapes only: transformers' SamModel built on the meta device (vit_h would be 2.5 GB).
    config = T.SamConfig(vision_config=OFFICIAL_HF[name])
    assert config_from_hf(config.to_dict(), HUB_PREPROCESSOR) == VARIANTS[name]
    with torch.device("meta"):
        state = hf_to_official(T.SamModel(config).state_dict())
    assert infer_config(state) == VARIANTS[name]
    check_state_dict(VARIANTS[name], state)


def dataclass_sizes(cfg: SamConfig) -> tuple:
    enc = cfg.encoder
    assert isinstance(enc, ViTConfig)
    return (
        enc.embed_dim,
        enc.depth,
        enc.num_heads,
        enc.global_attn_indexes,
        enc.image_size,
        enc.window_size,
        cfg.decoder.mlp_dim,
    )


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-12)
    diff = (a - b).abs().max().item()
    assert diff <= rel * scale, f"max diff {diff:.3g} > {rel} x {scale:.3g}"


# Prompts in the model's 256-px input frame.
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


IMAGE = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(11))  # normalised


@pytest.fixture(scope="module")
def embeddings(request):
    """Per direction: (HF image embedding, segany image embedding) of IMAGE, computed once."""
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(direction: str):
        if direction not in cache:
            hf, ours = request.getfixturevalue(direction)
            with torch.no_grad():
                cache[direction] = (hf.get_image_embeddings(IMAGE), ours.image_encoder(IMAGE))
        return cache[direction]

    return get


def decode_both(hf, ours, emb_hf, emb, case: dict, multimask: bool):
    points, box, mask = case.get("points"), case.get("box"), case.get("mask")
    kw = {}
    if points is not None:
        kw["input_points"] = points[0][:, None]  # HF: B×point_batch×N×2
        kw["input_labels"] = points[1][:, None]
    if box is not None:
        kw["input_boxes"] = box[:, None]  # HF: B×boxes×4
    if mask is not None:
        kw["input_masks"] = mask
    with torch.no_grad():
        out = hf(image_embeddings=emb_hf, multimask_output=multimask, **kw)
        sparse, dense = ours.prompt_encoder(points=points, boxes=box, masks=mask)
        low, iou = ours.mask_decoder(
            emb, ours.prompt_encoder.get_dense_pe(), sparse, dense, multimask
        )
    return (out.iou_scores[:, 0], out.pred_masks[:, 0]), (iou, low)


@pytest.mark.parametrize("direction", ["hf_to_segany", "segany_to_hf"])
def test_image_embeddings_match(embeddings, direction):
    emb_hf, emb = embeddings(direction)
    assert emb.shape == emb_hf.shape == (1, 256, 16, 16)
    close(emb, emb_hf)


@pytest.mark.parametrize("direction", ["hf_to_segany", "segany_to_hf"])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_masks_and_scores_match(request, embeddings, direction, case, multimask):
    hf, ours = request.getfixturevalue(direction)
    emb_hf, emb = embeddings(direction)
    (iou_hf, low_hf), (iou, low) = decode_both(hf, ours, emb_hf, emb, CASES[case], multimask)
    assert low.shape == low_hf.shape == (1, 3 if multimask else 1, 64, 64)
    assert iou.shape == iou_hf.shape == (1, 3 if multimask else 1)
    close(iou, iou_hf)
    close(low, low_hf)
