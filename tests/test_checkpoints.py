"""Loading, saving and converting weights: formats, variant detection, strictness, safety.

Weights are seeded (helpers.perturb_ touches every tensor, zero-initialised ones included), so
a key mix-up or a lost tensor shows as a value difference, not only as a shape error.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch
from helpers import SMALL, perturb_, reference_model, seeded_model

import segany
from segany import checkpoints
from segany.checkpoints import (
    cached_models,
    convert,
    load_into,
    load_model,
    load_state_dict,
    save_model,
    save_state_dict,
)
from segany.checkpoints.hf import official_to_hf
from segany.checkpoints.shapes import check_state_dict, infer_config
from segany.config import replace_encoder
from segany.errors import CheckpointError, InputError
from segany.models import VARIANTS, build_sam


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return seeded_model()


# --- round trips ------------------------------------------------------------------------------


def test_segany_format_keeps_config_and_tensors(model, tmp_path):
    path = save_model(model, tmp_path / "m.safetensors")
    cfg, state = load_state_dict(path)
    assert cfg == SMALL and cfg.name == "test"  # the metadata keeps even the custom name
    assert_same(state, model.state_dict())


def test_round_trip_through_every_format_is_identical(model, tmp_path):
    start = save_model(model, tmp_path / "start.safetensors")
    official = convert(start, tmp_path / "a.pth")[1]
    hf = convert(official, tmp_path / "hf_folder")[1]
    back = convert(hf, tmp_path / "back.safetensors")[1]
    again = convert(back, tmp_path / "again.pt", fmt="official")[1]
    for path in (official, hf, back, again):
        cfg, state = load_state_dict(path)
        assert dataclasses.replace(cfg, name="test") == SMALL
        assert_same(state, model.state_dict())
    assert (hf / "config.json").is_file() and (hf / "model.safetensors").is_file()


def test_half_precision_save_loads_back_as_fp16_values(model, tmp_path):
    path = save_model(model, tmp_path / "half.safetensors", half=True)
    assert (
        path.stat().st_size < 0.6 * save_model(model, tmp_path / "full.safetensors").stat().st_size
    )
    _, state = load_state_dict(path)
    for k, v in model.state_dict().items():
        assert state[k].dtype == torch.float16
        assert torch.equal(state[k], v.half()), k
    loaded = load_model(path)  # fp16 file, fp32 model: values are the fp16 ones, upcast
    assert next(loaded.parameters()).dtype == torch.float32
    ref = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k].half().float()), k


def test_load_model_returns_eval_model_in_dtype(model, tmp_path):
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path, dtype=torch.bfloat16)
    assert not loaded.training
    assert loaded.config == SMALL
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_hf_weights_without_config_json_are_inferred_from_shapes(model, tmp_path):
    # A lone model.safetensors / pytorch_model.bin (no config.json beside it).
    hf_state = official_to_hf(model.state_dict())
    save_state_dict(SMALL, model.state_dict(), tmp_path / "full_hf", "hf")
    lone = tmp_path / "lone"
    lone.mkdir()
    (tmp_path / "full_hf" / "model.safetensors").rename(lone / "weights.safetensors")
    torch.save(hf_state, lone / "weights.bin")
    for path in (lone / "weights.safetensors", lone / "weights.bin"):
        cfg, state = load_state_dict(path)
        assert dataclasses.replace(cfg, name="test") == SMALL and cfg.name == "custom"
        assert_same(state, model.state_dict())


def test_hf_folder_with_pytorch_model_bin(model, tmp_path):
    folder = save_state_dict(SMALL, model.state_dict(), tmp_path / "hf", "hf")
    (folder / "model.safetensors").unlink()
    torch.save(official_to_hf(model.state_dict()), folder / "pytorch_model.bin")
    cfg, state = load_state_dict(folder)
    assert dataclasses.replace(cfg, name="test") == SMALL
    assert_same(state, model.state_dict())


def test_format_and_variant_come_from_content_not_the_name(model, tmp_path):
    # Misleading names: segany safetensors called .pth, HF weights called like the vit_h file.
    misnamed = save_model(model, tmp_path / "sam_vit_h_4b8939.pth")
    assert load_state_dict(misnamed)[0] == SMALL
    lone = tmp_path / "lone"
    lone.mkdir()
    torch.save(official_to_hf(model.state_dict()), lone / "sam_vit_b_01ec64.safetensors")
    cfg, state = load_state_dict(lone / "sam_vit_b_01ec64.safetensors")
    assert cfg.name == "custom" and cfg.encoder.embed_dim == 64
    assert_same(state, model.state_dict())


def test_pixel_statistics_buffers_are_taken_into_the_config(model, tmp_path):
    state = dict(model.state_dict())
    state["pixel_mean"] = torch.tensor([1.0, 2.0, 3.0]).view(-1, 1, 1)
    state["pixel_std"] = torch.tensor([4.0, 5.0, 6.0]).view(-1, 1, 1)
    torch.save(state, tmp_path / "with_stats.pth")
    cfg, loaded = load_state_dict(tmp_path / "with_stats.pth")
    assert cfg.pixel_mean == (1.0, 2.0, 3.0) and cfg.pixel_std == (4.0, 5.0, 6.0)
    assert "pixel_mean" not in loaded
    assert load_model(tmp_path / "with_stats.pth").pixel_mean.flatten().tolist() == [1, 2, 3]


def test_hf_sharded_folder(model, tmp_path):
    import json

    from safetensors.torch import save_file

    hf_state = official_to_hf(model.state_dict())
    save_state_dict(SMALL, model.state_dict(), tmp_path / "hf", "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    keys = sorted(hf_state)
    shards = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2 :]}
    weight_map = {}
    for name, part in shards.items():
        save_file({k: hf_state[k].contiguous() for k in part}, str(tmp_path / "hf" / name))
        weight_map.update(dict.fromkeys(part, name))
    index = {"metadata": {}, "weight_map": weight_map}
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_same(load_state_dict(tmp_path / "hf")[1], model.state_dict())


def test_nested_training_checkpoint_is_unwrapped(model, tmp_path):
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "train.pth")
    assert_same(load_state_dict(tmp_path / "train.pth")[1], model.state_dict())


# --- the reference implementation's own state dicts --------------------------------------------


def test_reference_state_dict_loads_strictly(tmp_path):
    ref = perturb_(reference_model(SMALL), seed=1)
    torch.save(ref.state_dict(), tmp_path / "ref.pth")
    loaded = load_model(tmp_path / "ref.pth")
    assert dataclasses.replace(loaded.config, name="test") == SMALL
    assert_same(loaded.state_dict(), ref.state_dict())


@pytest.mark.slow
def test_full_vit_b_reference_file_is_detected_and_loads(tmp_path):
    # The real vit_b layout end to end (a 375 MB file): the official builder with no checkpoint.
    from segment_anything import build_sam_vit_b

    ref = build_sam_vit_b()
    with torch.no_grad():
        ref.image_encoder.pos_embed.normal_(generator=torch.Generator().manual_seed(0))
    torch.save(ref.state_dict(), tmp_path / "vit_b.pth")
    loaded = load_model(tmp_path / "vit_b.pth")
    assert loaded.config == VARIANTS["vit_b"] and loaded.config.name == "vit_b"
    assert_same(loaded.state_dict(), ref.state_dict())


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_variant_detected_from_shapes(name):
    # Shapes only: the reference builder on the meta device makes the state dict's layout
    # without allocating it (vit_h's fp32 weights would be 2.5 GB on a shared 2-core machine).
    import segment_anything

    with torch.device("meta"):
        ref = segment_anything.sam_model_registry[name]()
    state = ref.state_dict()
    cfg = infer_config(state)
    assert cfg == VARIANTS[name] and cfg.name == name
    check_state_dict(cfg, state)  # also strict against segany's own layout (built on meta)


def test_custom_shapes_are_inferred_and_named_custom():
    cfg = dataclasses.replace(
        replace_encoder(
            SMALL, depth=3, num_heads=4, global_attn_indexes=(0, 2), window_size=5, image_size=320
        ),
        name="x",
        decoder=dataclasses.replace(SMALL.decoder, mlp_dim=128, iou_head_depth=4),
    )
    with torch.device("meta"):
        state = build_sam(cfg).state_dict()
    assert infer_config(state) == dataclasses.replace(cfg, name="custom")


# --- errors -----------------------------------------------------------------------------------


def test_wrong_variant_error_names_expected_variant_and_keys(tmp_path):
    other = dataclasses.replace(replace_encoder(SMALL, depth=3, embed_dim=128), name="deeper")
    path = save_model(seeded_model(other), tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_into(seeded_model(), path)
    msg = str(e.value)
    assert "do not fit SAM variant test (vit: embed 64, depth 2" in msg
    assert "look like deeper (vit: embed 128, depth 3" in msg
    assert "unexpected: [image_encoder.blocks.2." in msg
    assert "mis-shaped: [" in msg and "file 128×3×16×16, model 64×3×16×16" in msg
    assert "... and" in msg  # long lists are cut


def test_missing_and_unexpected_keys_are_named(model, tmp_path):
    state = dict(model.state_dict())
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra.weight"] = torch.zeros(2)
    save_state_dict(SMALL, state, tmp_path / "bad.safetensors", "segany")
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "bad.safetensors")
    msg = str(e.value)
    assert "SAM variant test" in msg
    assert "1 missing: [mask_decoder.iou_token.weight]" in msg
    assert "1 unexpected: [mask_decoder.extra.weight]" in msg


def test_metadata_config_that_does_not_fit_the_tensors(model, tmp_path):
    lying = dataclasses.replace(replace_encoder(SMALL, depth=4), name="liar")
    save_state_dict(lying, model.state_dict(), tmp_path / "liar.safetensors", "segany")
    with pytest.raises(CheckpointError, match=r"(?s)SAM variant liar.*28 missing.*blocks\.2\."):
        load_state_dict(tmp_path / "liar.safetensors")


def test_not_a_sam_state_dict(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="cannot detect the SAM variant.*fc.weight"):
        load_state_dict(tmp_path / "other.pth")


@pytest.mark.parametrize(
    "content", [b"", b"hello world, not weights", b"PK\x03\x04garbage", b"\x10\0\0\0\0\0\0\0{"]
)
def test_garbage_files_give_checkpoint_errors(tmp_path, content):
    path = tmp_path / "junk.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_state_dict(path)


def test_truncated_files_give_checkpoint_errors(model, tmp_path):
    for path in (
        save_model(model, tmp_path / "m.safetensors"),
        convert(tmp_path / "m.safetensors", tmp_path / "m.pth")[1],
    ):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError):
            load_state_dict(path)


class _Payload:
    """Unpickling this calls open(marker, "w"), i.e. creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle2", "pickle5"])
def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    obj = {"image_encoder.pos_embed": _Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(writer[-1])))
    with pytest.raises(CheckpointError, match="refusing to load .*nothing from it was executed"):
        load_state_dict(path)
    with pytest.raises(CheckpointError, match="refusing") as e:
        load_model(path)
    if writer != "pickle5":  # protocol 5 is refused at its first opcode, before any global
        assert "It asks for: io.open" in str(e.value)
    assert not marker.exists()
    # Control: the payload is live; an unsafe load does create the marker.
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())  # noqa: S301 - deliberately unsafe, proves the payload
    assert marker.exists()


def test_no_default_model_names_what_to_pass(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoints.loading, "DEFAULT_MODEL", tmp_path / "segany_tiny.safetensors")
    with pytest.raises(CheckpointError, match="pass a variant name.*vit_b.*or the path"):
        load_model()


def test_unknown_name_or_missing_path():
    with pytest.raises(CheckpointError, match="neither an existing file.*vit_b"):
        load_model("vit_q")


def test_destination_format_needs_a_clear_choice(model, tmp_path):
    src = save_model(model, tmp_path / "m.safetensors")
    with pytest.raises(InputError, match="pass fmt="):
        convert(src, tmp_path / "out.onnx")
    with pytest.raises(InputError, match="unknown weights format"):
        convert(src, tmp_path / "out.pth", fmt="tflite")
    assert (
        load_state_dict(convert(src, tmp_path / "out.bin", fmt="official")[1])[0].name == "custom"
    )


def test_save_model_needs_a_config():
    with pytest.raises(InputError, match="SamConfig"):
        save_model(torch.nn.Linear(2, 2), "/nonexistent/x.safetensors")


def test_cached_models_lists_variants(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGANY_HOME", str(tmp_path))
    (tmp_path / "sam_vit_b_01ec64.pth.part").write_bytes(b"123")
    rows = {r.name: r for r in cached_models()}
    assert {"vit_b", "vit_l", "vit_h", "default"} <= set(rows)
    assert not rows["vit_b"].cached and rows["vit_b"].partial_bytes == 3
    assert rows["vit_h"].num_bytes == 2564550879 and rows["vit_h"].path.parent == tmp_path
    assert "embed 1280" in rows["vit_h"].description


def test_exported_from_package():
    assert segany.load_model is load_model and segany.save_model is save_model
