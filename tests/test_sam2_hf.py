"""transformers' SAM 2 (``Sam2Model`` / ``Sam2VideoModel`` folders) loaded by segany, and
segany's SAM 2 written back in that layout, against transformers' own forward on seeded weights.

Most tests use a small Hiera (width 32, stages 1-1-2-1) at 256 px with the official decoder, so a
model is built, saved and run in about a second; one slow test runs the official SAM 2.1 tiny
through both conversions (official ``.pt`` -> segany -> transformers) against the ``sam2``
package. Both packages get the same normalised pixels (transformers' image processor needs
torchvision, which this environment stubs): the comparison is of the networks and the loading.

Tolerance as the other SAM 2 tests: logits and scores within 3e-6 of the reference's largest
magnitude (measured: embeddings bit-equal, logits ~5e-7).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import max_rel_err, perturb_

from segany.checkpoints import load_model, load_state_dict, save_state_dict
from segany.checkpoints.hf_sam2 import hf_sam2_to_segany, segany_to_hf_sam2
from segany.cli import main
from segany.errors import CheckpointError
from segany.modeling.hiera import unpack_high_res

pytest.importorskip("transformers")


def _transformers():
    """transformers with its SAM 2 modules imported while tests/stubs' torchvision stand-in is
    out of sight (transformers would take it for torchvision and import what it lacks; its
    availability check is cached, so once is enough), as tests/test_hf_parity.py does."""
    stubs = str(Path(__file__).parent / "stubs")
    saved_path = list(sys.path)
    saved_mods = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torchvision"}
    sys.path[:] = [p for p in sys.path if p != stubs]
    for k in saved_mods:
        del sys.modules[k]
    try:
        from transformers.utils import import_utils

        import_utils.is_torchvision_available.cache_clear()
        import transformers
        from transformers.models.sam2 import modeling_sam2  # noqa: F401 (import them now)
        from transformers.models.sam2_video import modeling_sam2_video  # noqa: F401
    finally:
        sys.path[:] = saved_path
        sys.modules.update(saved_mods)
    return transformers


transformers = _transformers()

TOL = 3e-6
SIZE = 256


def _small_config(video: bool = False, **video_kwargs):
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "image_size": [SIZE, SIZE],
        "hidden_size": 32,
        "num_attention_heads": 1,
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [32, 64, 128, 256],
        "num_attention_heads_per_stage": [1, 2, 4, 8],
        "window_size_per_stage": [8, 4, 8, 4],
        "global_attention_blocks": [3],
        "window_positional_embedding_background_size": [4, 4],
    }
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": [256, 128, 64, 32],
        "backbone_feature_sizes": [[SIZE // 4] * 2, [SIZE // 8] * 2, [SIZE // 16] * 2],
    }
    if video:
        return transformers.Sam2VideoConfig(
            vision_config=vision, prompt_encoder_config={"image_size": SIZE}, **video_kwargs
        )
    return transformers.Sam2Config(vision_config=vision, prompt_encoder_config={"image_size": SIZE})


def _seeded(model, seed: int = 0):
    """Seeded noise on every tensor; the prompt encoder's copy of the positional matrix set to
    the shared one, as a converted checkpoint has it."""
    perturb_(model, seed)
    with torch.no_grad():
        pe = model.shared_image_embedding.positional_embedding
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(pe)
    return model.eval()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """(seeded transformers Sam2Model, its save_pretrained folder)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.Sam2Model(_small_config())
    _seeded(model)
    folder = tmp_path_factory.mktemp("hf_sam2") / "small"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def loaded(hf_folder):
    return load_model(hf_folder[1]).eval()


def _pixels(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _prompts():
    """(name, transformers keyword arguments, segany's points or None, boxes, mask input)."""
    g = torch.Generator().manual_seed(2)
    pts = torch.rand(1, 4, 2, generator=g) * SIZE
    labels = torch.tensor([[1, 0, 1, 1]], dtype=torch.int)
    box = torch.tensor([[0.1, 0.2, 0.7, 0.9]]) * SIZE
    mask = torch.randn(1, 1, 4 * SIZE // 16, 4 * SIZE // 16, generator=g) * 4
    one = (pts[:, :1], labels[:, :1])
    return [
        (
            "one_point",
            {"input_points": pts[:, None, :1], "input_labels": labels[:, None, :1]},
            one,
            None,
            None,
        ),
        (
            "points",
            {"input_points": pts[:, None], "input_labels": labels[:, None]},
            (pts, labels),
            None,
            None,
        ),
        ("box", {"input_boxes": box[:, None]}, None, box, None),
        (
            "point_and_mask",
            {
                "input_points": pts[:, None, :1],
                "input_labels": labels[:, None, :1],
                "input_masks": mask,
            },
            one,
            None,
            mask,
        ),
    ]


def _compare(ours, theirs, pixels: torch.Tensor) -> dict[str, float]:
    """Embeddings, high-res features, logits, IoU and object scores of segany's model against
    transformers' on the same pixels and prompts; returns the largest errors."""
    errs: dict[str, float] = {}
    with torch.no_grad():
        ref = theirs(pixel_values=pixels, multimask_output=True).image_embeddings
        # the module's forward: transformers' ops in transformers' order
        emb, packed = ours.image_encoder.forward_with_early(pixels)
        s0, s1 = unpack_high_res(packed, emb.shape[1])
        errs["embedding"] = max_rel_err(emb, ref[-1])
        errs["high_res"] = max(max_rel_err(s0, ref[0]), max_rel_err(s1, ref[1]))
        # what the Predictor runs (hiera.fast: windows a band at a time, so other matmul
        # shapes): the same function, within TOL; the decoder below reads its output
        emb, packed = ours.encode(pixels)
        s0, s1 = unpack_high_res(packed, emb.shape[1])
        errs["fast embedding"] = max_rel_err(emb, ref[-1])
        errs["fast high_res"] = max(max_rel_err(s0, ref[0]), max_rel_err(s1, ref[1]))
        for name, kwargs, points, boxes, mask in _prompts():
            merged = ours.merge_boxes(*(points or (None, None)), boxes)
            for multimask in (True, False):
                out = theirs(pixel_values=pixels, multimask_output=multimask, **kwargs)
                low, iou = ours.decode(emb, packed, merged, mask, multimask)
                logits_err = max_rel_err(low, out.pred_masks[0])
                iou_err = float((iou - out.iou_scores[0]).abs().max())
                near = out.pred_masks[0].abs() <= TOL * out.pred_masks[0].abs().max()
                differ = (low > 0) != (out.pred_masks[0] > 0)
                assert not (differ & ~near).any(), f"{name} multimask={multimask}: masks differ"
                key = f"{name}/{'multi' if multimask else 'single'}"
                errs[f"logits {key}"], errs[f"iou {key}"] = logits_err, iou_err
            sparse, dense = ours.prompt_encoder(points=merged, boxes=None, masks=mask)
            obj = ours.mask_decoder.predict_all(
                emb, ours.prompt_encoder.get_dense_pe(), sparse, dense, packed
            )[2]
            errs[f"object score {name}"] = max_rel_err(obj, out.object_score_logits[0])
    return errs


@pytest.mark.parametrize("size", ["tiny", "small", "base_plus", "large"])
def test_every_published_size_maps_key_for_key(size):
    """Each SAM 2.1 size (built on the meta device, no memory): the config.json segany writes
    builds a transformers Sam2Model whose state dict has exactly segany's tensors under the
    mapped names and shapes; its keys read back as the variant (detected from the shapes) and
    its config as the variant's."""
    from segany.checkpoints.hf_sam2 import config_from_hf_sam2, config_to_hf_sam2
    from segany.checkpoints.shapes import infer_config
    from segany.models import VARIANTS, build_sam

    cfg = VARIANTS[f"sam2.1_hiera_{size}"]
    config = config_to_hf_sam2(cfg)
    kwargs = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    with torch.device("meta"):
        theirs = transformers.Sam2Model(transformers.Sam2Config(**kwargs)).state_dict()
        ours = build_sam(cfg).state_dict()
    assert {k: v.shape for k, v in theirs.items()} == {
        k: v.shape for k, v in segany_to_hf_sam2(ours).items()
    }
    back, video, release = hf_sam2_to_segany(theirs)
    assert not video and release == "2.1"
    assert infer_config(back) == cfg
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in ours.items()}
    assert config_from_hf_sam2(transformers.Sam2Config(**kwargs).to_dict()) == cfg


def test_config_fields_left_out_take_transformers_defaults():
    """A config.json with only its model type is transformers' default, SAM 2.1 tiny."""
    from segany.checkpoints.hf_sam2 import config_from_hf_sam2
    from segany.models import VARIANTS

    assert config_from_hf_sam2({"model_type": "sam2"}) == VARIANTS["sam2.1_hiera_tiny"]
    cfg = config_from_hf_sam2(
        {"model_type": "sam2_video", "enable_occlusion_spatial_embedding": False}
    )
    assert cfg == VARIANTS["sam2_hiera_tiny"]
    with pytest.raises(CheckpointError, match="model_type 'sam'"):
        config_from_hf_sam2({"model_type": "sam"})


def test_folder_loads_with_its_config(hf_folder, loaded):
    _, folder = hf_folder
    cfg = loaded.config
    assert cfg.decoder.sam2 == "2.1" and cfg.encoder.family == "hiera"
    assert (cfg.encoder.embed_dim, cfg.encoder.stages, cfg.image_size) == (32, (1, 1, 2, 1), SIZE)
    assert cfg.encoder.window_spec == (8, 4, 8, 4) and cfg.encoder.global_att_blocks == (3,)
    # every tensor of the file is used, and comes back under transformers' names unchanged
    hf_state = transformers.Sam2Model.from_pretrained(folder).state_dict()
    back = segany_to_hf_sam2(loaded.state_dict())
    assert set(back) == set(hf_state)
    for key, value in back.items():
        torch.testing.assert_close(value, hf_state[key], rtol=0, atol=0, msg=key)


def test_outputs_match_transformers(hf_folder, loaded):
    errs = _compare(loaded, hf_folder[0], _pixels())
    assert errs["embedding"] == 0.0 and errs["high_res"] == 0.0  # same ops in the same order
    bad = {k: v for k, v in errs.items() if v >= TOL}
    assert not bad, bad


def test_written_folder_loads_in_transformers(loaded, hf_folder, tmp_path):
    """segany writes a Sam2Model folder (convert to a folder): transformers loads it with no
    missing, unexpected or mis-shaped key and computes the same outputs bit for bit."""
    out = tmp_path / "written"
    save_state_dict(loaded.config, loaded.state_dict(), out, "hf")
    model, info = transformers.Sam2Model.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model.eval()
    pixels = _pixels(3)
    kwargs = _prompts()[1][1]
    with torch.no_grad():
        a = model(pixel_values=pixels, **kwargs)
        b = hf_folder[0](pixel_values=pixels, **kwargs)
    assert torch.equal(a.pred_masks, b.pred_masks) and torch.equal(a.iou_scores, b.iou_scores)
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["size"] == {"height": SIZE, "width": SIZE}
    # and segany reads its own folder back to the same config
    assert load_state_dict(out)[0] == loaded.config


def test_bare_weights_file_beside_config(hf_folder, loaded, tmp_path):
    _, folder = hf_folder
    cfg, state = load_state_dict(folder / "model.safetensors")
    assert cfg == loaded.config
    # without its config.json the small trunk (not a published one) cannot be read off the shapes
    lone = tmp_path / "model.safetensors"
    lone.write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="published"):
        load_state_dict(lone)


def test_video_folder_image_part(tmp_path):
    """A Sam2VideoModel folder: its image weights load (the video ones set aside); SAM 2.1 when
    it has the occlusion embedding (2.1's no_obj_embed_spatial), else 2.0."""
    for occlusion, release in ((True, "2.1"), (False, "2.0")):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            config = _small_config(video=True, enable_occlusion_spatial_embedding=occlusion)
            video = transformers.Sam2VideoModel(config)
        _seeded(video)
        folder = tmp_path / release
        video.save_pretrained(folder)
        cfg, state = load_state_dict(folder)
        assert cfg.decoder.sam2 == release
        full = video.state_dict()
        ours, aside, got = hf_sam2_to_segany(full)
        assert got == release and aside and all(k not in ours for k in aside)
        assert set(segany_to_hf_sam2(state)) == set(full) - set(aside)


def test_positional_copies_must_agree(hf_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = hf_folder
    state = load_file(folder / "model.safetensors")
    state["prompt_encoder.shared_embedding.positional_embedding"] += 1
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(state, bad / "model.safetensors", {"format": "pt"})
    (bad / "config.json").write_bytes((folder / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="shared_embedding"):
        load_state_dict(bad)


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("vision_config", "fpn_top_down_levels", [1, 2, 3]),
        ("backbone_config", "query_stride", [4, 4]),
        ("backbone_config", "embed_dim_per_stage", [32, 48, 128, 256]),
        ("mask_decoder_config", "dynamic_multimask_stability_thresh", 0.9),
    ],
)
def test_unsupported_config_named(hf_folder, tmp_path, where, field, value):
    _, folder = hf_folder
    config = json.loads((folder / "config.json").read_text())
    if where == "backbone_config":
        config["vision_config"]["backbone_config"][field] = value
    else:
        config[where][field] = value
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").symlink_to(folder / "model.safetensors")
    words = {"dynamic_multimask_stability_thresh": "stability threshold"}
    with pytest.raises(CheckpointError, match=words.get(field, field)):
        load_state_dict(bad)


def test_command_line_convert_and_info(hf_folder, loaded, tmp_path, capsys):
    _, folder = hf_folder
    out = tmp_path / "small.safetensors"
    assert main(["convert", str(folder), str(out), "-q"]) == 0
    assert load_state_dict(out)[0] == loaded.config
    again = tmp_path / "again"
    assert main(["convert", str(out), str(again), "-q"]) == 0
    assert transformers.Sam2Model.from_pretrained(again) is not None
    capsys.readouterr()
    assert main(["info", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "hf" in text and "width 32" in text


@pytest.mark.slow  # ~60 s on the loaded 2 cores: SAM 2.1 tiny at 1024 px run by three packages
def test_official_tiny_through_both_conversions(tmp_path):
    """The official SAM 2.1 tiny (seeded, ``{"model": ...}`` file) converted by segany to a
    transformers folder: transformers loads it strictly and computes what the official
    ``sam2`` package does; segany reading that folder gives the same model it reads from the
    ``.pt`` (tensor for tensor)."""
    pytest.importorskip("hydra")
    pytest.importorskip("sam2")
    from sam2_fixtures import write_sam21_tiny

    official, pt = write_sam21_tiny(tmp_path / "tiny.pt")
    folder = tmp_path / "hf"
    assert main(["convert", str(pt), str(folder), "-q"]) == 0
    model, info = transformers.Sam2Model.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model.eval()
    cfg, state = load_state_dict(folder)
    cfg_pt, state_pt = load_state_dict(pt)
    assert cfg == cfg_pt and cfg.name == "sam2.1_hiera_tiny"
    assert set(state) == set(state_pt)
    assert all(torch.equal(state[k], state_pt[k]) for k in state)

    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    point = torch.tensor([[[300.0, 620.0]]])
    with torch.no_grad():
        out = model(
            pixel_values=pixels,
            input_points=point[:, None],
            input_labels=torch.ones(1, 1, 1, dtype=torch.int),
            multimask_output=True,
        )
        feats = official.forward_image(pixels)
        emb = feats["backbone_fpn"][-1] + official.no_mem_embed.view(1, -1, 1, 1)
        high = feats["backbone_fpn"][:2]  # forward_image has applied conv_s0/s1 already
        sparse, dense = official.sam_prompt_encoder(
            points=(point, torch.ones(1, 1, dtype=torch.int)), boxes=None, masks=None
        )
        low, iou, _, obj = official.sam_mask_decoder(
            image_embeddings=emb,
            image_pe=official.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=False,
            high_res_features=high,
        )
    assert max_rel_err(out.image_embeddings[-1], emb) < TOL
    assert max_rel_err(out.pred_masks[0], low) < TOL
    assert float((out.iou_scores[0] - iou).abs().max()) < TOL
    assert max_rel_err(out.object_score_logits[0], obj) < TOL


def test_drop_in_build_from_a_transformers_folder(hf_folder, loaded):
    """``segany.sam2.build_sam2_hf`` given a local transformers folder (what
    ``huggingface_hub.snapshot_download`` leaves) builds the model from it."""
    from segany.sam2.build_sam import build_sam2_hf

    model = build_sam2_hf(str(hf_folder[1]))
    assert model.config == loaded.config
    ours = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in loaded.state_dict().items())
