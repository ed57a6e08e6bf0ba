# ruff: noqa: E501 - one table row per line reads best
"""Hostile and careless inputs through the Python API, table-driven.

Each row: an id, its category, a call, and what must happen: an exception type with a fragment
of its message (the error names what was expected), or ``OK`` (a valid input that must work).
Categories follow the hardening issue: ``bound`` (would allocate or run without limit),
``silent`` (was accepted silently and gave garbage), ``clear`` (needs a clear typed error) and
``valid`` (was refused although valid). ``test_every_bound_in_limits_has_a_row`` ties the table
to ``segany.limits``: each bound stated there has a row whose error names its value.
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import SMALL, seeded_model
from safetensors import safe_open

from segany import limits
from segany.automatic import MaskGenerator
from segany.checkpoints import convert, load_model, save_model
from segany.config import SamConfig
from segany.errors import CheckpointError, InputError
from segany.formats import label_map, read_coco
from segany.formats.images import find_images
from segany.formats.sa1b import parse_sa1b
from segany.images import read_image, to_rgb_uint8
from segany.inference.predictor import Predictor
from segany.masks import decode_rle

OK = "ok"
EMB = (1, SMALL.prompt.embed_dim, SMALL.embedding_size, SMALL.embedding_size)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> dict[str, Any]:
    model = seeded_model()
    predictor = Predictor(model)
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    folder = tmp_path_factory.mktemp("fuzz")
    files = _hostile_files(folder, model)
    return {"model": model, "p": predictor, "dir": folder, **files}


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` (pixel data absent): a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _hostile_files(folder: Path, model: Any) -> dict[str, Path]:
    from safetensors.torch import save_file

    out = {}
    out["random"] = folder / "random.pth"
    out["random"].write_bytes(np.random.default_rng(1).bytes(4096))
    out["png"] = folder / "image.pth"
    out["png"].write_bytes(_png_header(4, 4))
    out["json"] = folder / "config.pth"
    out["json"].write_text('{"model_type": "sam"}')
    out["empty"] = folder / "empty.pth"
    out["empty"].write_bytes(b"")
    out["bomb_side"] = folder / "wide.png"
    out["bomb_side"].write_bytes(_png_header(40000, 10))
    out["bomb_pixels"] = folder / "bomb.png"
    out["bomb_pixels"].write_bytes(_png_header(20000, 20000))
    out["fifo"] = folder / "pipe.png"
    os.mkfifo(out["fifo"])
    out["dangling"] = folder / "gone.png"
    os.symlink(folder / "nowhere.png", out["dangling"])
    out["loop"] = folder / "loop.png"
    os.symlink("loop.png", out["loop"])
    # A 1-block file whose metadata claims a 64-block encoder, and one claiming 32768 wide.
    save_model(model, folder / "small.safetensors")
    cfg = json.loads(_metadata(folder / "small.safetensors")["segany.config"])
    tensors = {"image_encoder.pos_embed": torch.zeros(1, 2, 2, 8)}
    for name, claim in (("deep", {"depth": 64}), ("wide", {"embed_dim": 32768})):
        lie = {**cfg, "encoder": {**cfg["encoder"], **claim}}
        meta = {"segany.config": json.dumps(lie), "segany.format_version": "2"}
        out[name] = folder / f"{name}.safetensors"
        save_file(tensors, str(out[name]), metadata=meta)
    big = {"image": {"height": 10, "width": 10}, "annotations": []}
    out["coco_big"] = folder / "big_coco.json"
    out["coco_big"].write_text(
        json.dumps({"images": [{"id": 1, "height": 10**6, "width": 10}], "annotations": []})
    )
    out["sa1b_doc"] = folder / "doc.json"
    out["sa1b_doc"].write_text(json.dumps(big))
    # The segany file with its format version replaced (a version is a whole number >= 1).
    real = _metadata(folder / "small.safetensors")
    with safe_open(str(folder / "small.safetensors"), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    for name, version in (
        ("v_abc", "abc"),
        ("v_neg", "-1"),
        ("v_zero", "0"),
        ("v_big", "9" * 5000),
    ):
        out[name] = folder / f"{name}.safetensors"
        save_file(state, str(out[name]), metadata={**real, "segany.format_version": version})
    out["a_file"] = folder / "a_file"
    out["a_file"].write_text("not a folder")
    out["zip_no_pickle"] = folder / "photos.pth"
    with zipfile.ZipFile(out["zip_no_pickle"], "w") as z:
        z.writestr("photos/readme.txt", "hello")
    out["zip_damaged"] = folder / "cut.pth"
    torch.save(state, out["zip_damaged"])
    out["zip_damaged"].write_bytes(out["zip_damaged"].read_bytes()[:5000])
    return out


def _zip_bomb(folder: Path) -> Path:
    """A .pth zip (4.6 MB) whose pickle member inflates to 1 GiB of zeros."""
    path = folder / "bomb.pth"
    if not path.exists():
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            with z.open("archive/data.pkl", "w", force_zip64=True) as member:
                for _ in range(64):
                    member.write(bytes(1 << 24))
    return path


def _bomb_refused_unread(ctx: dict[str, Any]) -> None:
    # Refused from the zip's directory alone: torch.load (which inflates it) never runs.
    from unittest import mock

    with mock.patch("torch.load", side_effect=AssertionError("torch.load ran")) as loader:
        with pytest.raises(CheckpointError, match="zip bomb"):
            load_model(_zip_bomb(ctx["dir"]))
    assert not loader.called


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def _gen(ctx: dict[str, Any], **kw: Any) -> MaskGenerator:
    return MaskGenerator(ctx["model"], **kw)


def _emb(value: float = 0.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full(EMB, value, dtype=dtype)


def _sa1b(size: list[int], image: tuple[int, int] = (10, 10)) -> dict[str, Any]:
    seg = {"size": size, "counts": "0"}
    return {
        "image": {"height": image[0], "width": image[1]},
        "annotations": [{"segmentation": seg}],
    }


def _thin(ctx: dict[str, Any]) -> Any:
    p = Predictor(ctx["model"])
    p.set_image(np.full((1, 1000, 3), 128, np.uint8))  # 1000:1, resized side < 0.5 px
    masks, _, _ = p.predict(point_coords=[[500, 0]], point_labels=[1])
    assert masks.shape == (3, 1, 1000)


def _raised(pixels: int, call: Any = None) -> Any:
    """``call()`` with the pixel limit raised to ``pixels`` (``segany.limits.pixel_limit``)."""
    with limits.pixel_limit(pixels):
        return call() if call is not None else None


def _predict(ctx: dict[str, Any], **kw: Any) -> Any:
    return ctx["p"].predict(**kw)


def _torch(ctx: dict[str, Any], *args: Any) -> Any:
    return ctx["p"].predict_torch(*args)


def _set_emb(ctx: dict[str, Any], emb: Any, size: Any, input_size: Any = None) -> Any:
    p = Predictor(ctx["model"])
    p.set_image_embedding(emb, size, input_size)
    return p


def _big_endian(ctx: dict[str, Any]) -> None:
    image = (np.arange(20 * 30 * 3).reshape(20, 30, 3) * 50).astype(">u2")
    native = image.astype("<u2")
    assert np.array_equal(to_rgb_uint8(image), to_rgb_uint8(native))
    p, q = Predictor(ctx["model"]), Predictor(ctx["model"])
    p.set_image(image)
    q.set_image(native)
    assert torch.equal(p.get_image_embedding(), q.get_image_embedding())


def _predictor_of_a_path(ctx: dict[str, Any]) -> None:
    # A path or name is loaded as load_model would (from_pretrained style): the same answers.
    path = save_model(ctx["model"], ctx["dir"].parent / "by_path.safetensors")
    image = np.random.default_rng(2).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    answers = []
    for p in (Predictor(str(path)), Predictor(path), Predictor(ctx["model"])):
        p.set_image(image)
        answers.append(p.predict(point_coords=[[3.0, 4.0]], point_labels=[1]).logits)
    assert all(np.array_equal(a, answers[-1]) for a in answers)


def _bf16(ctx: dict[str, Any]) -> None:
    # bf16 image, embedding and coordinates give what the same values in float32 give.
    image = torch.rand(20, 30, 3, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    p, q = Predictor(ctx["model"]), Predictor(ctx["model"])
    p.set_image(image)
    q.set_image(image.float())
    assert torch.equal(p.get_image_embedding(), q.get_image_embedding())
    emb = torch.randn(EMB, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    p.set_image_embedding(emb, (20, 30))
    q.set_image_embedding(emb.float(), (20, 30))
    got = p.predict(point_coords=torch.tensor([[3.0, 4.0]], dtype=torch.bfloat16), point_labels=[1])
    want = q.predict(point_coords=[[3.0, 4.0]], point_labels=[1])
    assert np.array_equal(got.masks, want.masks) and np.array_equal(got.scores, want.scores)
    assert np.array_equal(got.logits, want.logits)


@functools.cache
def _bundled_scene() -> tuple[Any, torch.Tensor]:
    """The bundled (trained) model and its embedding of two flat shapes: its masks pass real
    quality filters, where the seeded model's all score 0 stability."""
    model = load_model()
    image = np.full((60, 80, 3), 30, np.uint8)
    image[10:40, 20:60] = (220, 60, 60)
    image[45:58, 5:30] = (40, 200, 90)
    p = Predictor(model)
    p.set_image(image)
    return model, p.get_image_embedding()


def _numpy_scalars(ctx: dict[str, Any]) -> None:
    # numpy scalar options give the records their Python values give, and each option counts.
    model, emb = _bundled_scene()

    def records(**options: Any) -> list[tuple[Any, ...]]:
        found = MaskGenerator(model, **options).generate(embedding=emb, original_size=(60, 80))
        return [
            (r.segmentation.tobytes(), r.bbox, r.predicted_iou, r.stability_score) for r in found
        ]

    numpy_opts = {
        "points_per_side": np.int64(3),
        "pred_iou_thresh": np.float32(0.3),  # where each of the three thresholds drops masks
        "stability_score_thresh": np.float32(0.2),
        "box_nms_thresh": np.float64(0.7),
    }
    plain_opts = {k: v.item() for k, v in numpy_opts.items()}
    want = records(**plain_opts)
    assert want and records(**numpy_opts) == want
    relaxed = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    for key, off in relaxed.items():  # each threshold drops masks here, so each is compared
        assert len(records(**{**plain_opts, key: off})) > len(want), key


def _label_map_of_nothing() -> None:
    labels = label_map(np.zeros((0, 5, 6), bool))
    assert labels.dtype == np.uint16 and np.array_equal(labels, np.zeros((5, 6)))


def _empty_rle() -> None:
    for size in ([0, 0], [0, 4]):
        mask = decode_rle({"size": size, "counts": []})
        assert mask.dtype == np.bool_ and mask.shape == tuple(size)


def _dangling_listed(ctx: dict[str, Any]) -> None:
    found = find_images([ctx["dir"]])
    assert ctx["dangling"] in found and ctx["fifo"] in found  # listed, so a run reports them
    read_image(ctx["dangling"])


# (id, category, call, expected): expected is OK or (exception type, message fragment).
CASES: list[tuple[str, str, Any, Any]] = [
    # --- bounds checked before allocation, the bound in the message
    ("points_per_side=3000", "bound", lambda c: _gen(c, points_per_side=3000), (InputError, "[1, 1024]")),
    ("points_per_side=10**6", "bound", lambda c: _gen(c, points_per_side=10**6), (InputError, "1024")),
    ("crop_n_layers=30", "bound", lambda c: _gen(c, crop_n_layers=30), (InputError, "[0, 6]")),
    ("crop_n_layers=6 prompts", "bound", lambda c: _gen(c, crop_n_layers=6), (InputError, "1048576")),
    ("points_per_batch=10**9", "bound", lambda c: _gen(c, points_per_batch=10**9), (InputError, "[1, 1024]")),
    ("downscale=10**9", "bound", lambda c: _gen(c, crop_n_points_downscale_factor=10**9), (InputError, "1024")),
    ("predict 3000 boxes on 30000×4000", "bound", lambda c: _set_emb(c, _emb(), (30000, 4000)).predict(box=np.tile([0, 0, 5, 5], (3000, 1))), (InputError, "2147483648 one call may produce")),
    ("predict 5000 points per prompt", "bound", lambda c: _predict(c, point_coords=np.ones((5000, 2)), point_labels=np.ones(5000)), (InputError, "4096")),
    ("embedding 100000²", "bound", lambda c: _set_emb(c, _emb(), (100000, 100000)), (InputError, "32768")),
    ("embedding 30000² pixels", "bound", lambda c: _set_emb(c, _emb(), (30000, 30000)), (InputError, "134217728")),
    ("image 1×40000", "bound", lambda c: c["p"].set_image(np.zeros((1, 40000), np.uint8)), (InputError, "32768")),
    ("rle 100000²", "bound", lambda c: decode_rle({"size": [100000, 100000], "counts": "0"}), (InputError, "RLE size")),
    ("rle list 100000²", "bound", lambda c: decode_rle({"size": [10**5, 10**5], "counts": [10**10]}), (InputError, "32768")),
    ("sa1b rle 100000²", "bound", lambda c: parse_sa1b(_sa1b([100000, 100000])), (InputError, "RLE size")),
    ("sa1b rle ≠ image", "bound", lambda c: parse_sa1b(_sa1b([20, 20])), (InputError, "expected the image size")),
    ("sa1b image 10**6", "bound", lambda c: parse_sa1b(_sa1b([10**6, 10], (10**6, 10))), (InputError, "32768")),
    ("coco image 10**6", "bound", lambda c: read_coco(c["coco_big"]), (InputError, "32768")),
    ("metadata 32768 wide", "bound", lambda c: load_model(c["wide"]), (CheckpointError, "encoder.embed_dim=32768")),
    ("metadata 64 blocks", "bound", lambda c: load_model(c["deep"]), (CheckpointError, "do not fit")),
    ("png header 40000 wide", "bound", lambda c: read_image(c["bomb_side"]), (InputError, "32768")),
    ("png bomb 20000²", "bound", lambda c: read_image(c["bomb_pixels"]), (InputError, "bomb.png")),
    ("pixel_limit 2**33", "bound", lambda c: _raised(2**33), (InputError, "at most 4294967295")),
    ("raised limit, side 2**20 + 1", "bound", lambda c: _raised(2**32 - 1, lambda: _set_emb(c, _emb(), (2**20 + 1, 1))), (InputError, "each side must be 1 to 1048576 pixels")),
    ("original_size 1e300", "bound", lambda c: _set_emb(c, _emb(), (1e300, 5)), (InputError, "original_size")),
    # --- silently accepted before
    ("coords 1e39", "silent", lambda c: _predict(c, point_coords=[[1e39, 1]], point_labels=[1]), (InputError, "±1048576")),
    ("coords 1e300", "silent", lambda c: _predict(c, point_coords=[[1e300, 1]], point_labels=[1]), (InputError, "±1048576")),
    ("box 1e39", "silent", lambda c: _predict(c, box=[0, 0, 1e39, 1e39]), (InputError, "±1048576")),
    ("label uint64 max", "silent", lambda c: _predict(c, point_coords=[[1, 1]], point_labels=np.array([2**64 - 1], np.uint64)), (InputError, "small integers")),
    ("label 1e30", "silent", lambda c: _predict(c, point_coords=[[1, 1]], point_labels=[1e30]), (InputError, "small integers")),
    ("label nan", "silent", lambda c: _predict(c, point_coords=[[1, 1]], point_labels=[float("nan")]), (InputError, "integers")),
    ("complex coords", "silent", lambda c: _predict(c, point_coords=np.array([[1 + 2j, 1]]), point_labels=[1]), (InputError, "real numeric")),
    ("complex box", "silent", lambda c: _predict(c, box=np.array([0, 0, 5, 5j])), (InputError, "real numeric")),
    ("complex mask_input", "silent", lambda c: _predict(c, mask_input=np.zeros((1, 64, 64), complex)), (InputError, "real numeric")),
    ("nan mask_input", "silent", lambda c: _predict(c, mask_input=np.full((1, 64, 64), np.nan)), (InputError, "NaN")),
    ("mask_input 1e39", "silent", lambda c: _predict(c, mask_input=np.full((1, 64, 64), 1e39)), (InputError, "infinite")),
    ("nan embedding", "silent", lambda c: _set_emb(c, _emb(float("nan")), (10, 10)), (InputError, "NaN or infinite values; expected finite numbers")),
    ("inf embedding", "silent", lambda c: _set_emb(c, _emb(float("inf")), (10, 10)), (InputError, "infinite")),
    ("complex embedding", "silent", lambda c: _set_emb(c, torch.zeros(EMB, dtype=torch.complex64), (10, 10)), (InputError, "real")),
    ("torch coords nan", "silent", lambda c: _torch(c, torch.full((1, 1, 2), float("nan")), torch.ones(1, 1)), (InputError, "NaN")),
    ("torch coords 1e30", "silent", lambda c: _torch(c, torch.full((1, 1, 2), 1e30), torch.ones(1, 1)), (InputError, "±1048576")),
    ("device cpu:1", "silent", lambda c: load_model(device="cpu:1"), (InputError, "one CPU device")),
    ("device meta", "silent", lambda c: load_model(device="meta"), (InputError, "holds no data")),
    ("device cuda:99", "silent", lambda c: load_model(device="cuda:99"), (InputError, "CUDA")),
    ("dangling link in folder", "silent", _dangling_listed, (InputError, "broken symbolic link")),
    # --- clear typed errors naming what was expected
    ("torch image nan", "silent", lambda c: Predictor(c["model"]).set_torch_image(torch.full((1, 3, 256, 256), float("nan")), (256, 256)), (InputError, "finite")),
    ("torch coords N×2", "clear", lambda c: _torch(c, torch.zeros(2, 2), torch.zeros(2)), (InputError, "B×N×2")),
    ("torch labels mismatch", "clear", lambda c: _torch(c, torch.zeros(1, 2, 2), torch.ones(1, 3)), (InputError, "one label per point")),
    ("torch boxes 4", "clear", lambda c: _torch(c, None, None, torch.zeros(4)), (InputError, "B×4")),
    ("torch mask wrong", "clear", lambda c: _torch(c, None, None, None, torch.zeros(1, 1, 8, 8)), (InputError, "B×1×64×64")),
    ("torch coords a list", "clear", lambda c: _torch(c, [[[1, 2]]], torch.ones(1, 1)), (InputError, "torch tensor")),
    ("torch labels alone", "clear", lambda c: _torch(c, None, torch.ones(1, 1)), (InputError, "together")),
    ("torch batch mismatch", "clear", lambda c: _torch(c, torch.zeros(2, 1, 2), torch.ones(2, 1), torch.zeros(3, 4)), (InputError, "batch sizes differ")),
    ("embedding a string", "clear", lambda c: _set_emb(c, "abc", (10, 10)), (InputError, "embedding must be")),
    ("embedding object array", "clear", lambda c: _set_emb(c, np.array([None, 1], dtype=object), (10, 10)), (InputError, "float tensor or array, got dtype object")),
    ("embedding wrong shape", "clear", lambda c: _set_emb(c, torch.zeros(1, 256, 64, 64), (10, 10)), (InputError, "1×256×16×16")),
    ("embedding int", "clear", lambda c: _set_emb(c, torch.zeros(EMB, dtype=torch.int64), (10, 10)), (InputError, "float")),
    ("original_size (10,)", "clear", lambda c: _set_emb(c, _emb(), (10,)), (InputError, "pair (H, W)")),
    ("original_size strings", "clear", lambda c: _set_emb(c, _emb(), ("a", "b")), (InputError, "whole numbers")),
    ("original_size 10.5", "clear", lambda c: _set_emb(c, _emb(), (10.5, 4)), (InputError, "whole numbers")),
    ("input_size too big", "clear", lambda c: _set_emb(c, _emb(), (10, 10), (999, 999)), (InputError, "exceeds")),
    ("point_grids ragged", "clear", lambda c: _gen(c, points_per_side=None, point_grids=[[[0.1, 0.2], [0.3]]]), (InputError, "point grid 0 must be a numeric N×2 array (its rows have different lengths)")),
    ("point_grids outside", "clear", lambda c: _gen(c, points_per_side=None, point_grids=[[[0.5, 2.0]]]), (InputError, "outside [0, 1]")),
    ("point_grids strings", "clear", lambda c: _gen(c, points_per_side=None, point_grids=["abc"]), (InputError, "numeric")),
    ("point_grids an int", "clear", lambda c: _gen(c, points_per_side=None, point_grids=5), (InputError, "list of N×2")),
    ("point_grids complex", "clear", lambda c: _gen(c, points_per_side=None, point_grids=[np.full((2, 2), 0.5j)]), (InputError, "numeric")),
    ("threshold a string", "clear", lambda c: _gen(c, pred_iou_thresh="0.5"), (InputError, "pred_iou_thresh")),
    ("ragged points", "clear", lambda c: _predict(c, point_coords=[[1, 2], [3]], point_labels=[1, 1]), (InputError, "point_coords has rows of different lengths")),
    ("ragged labels", "clear", lambda c: _predict(c, point_coords=[[1, 2]], point_labels=[[1], [1, 0]]), (InputError, "point_labels has rows of different lengths")),
    ("ragged boxes", "clear", lambda c: _predict(c, box=[[1, 2, 3, 4], [4]]), (InputError, "box has rows of different lengths")),
    ("threshold True", "clear", lambda c: _gen(c, box_nms_thresh=True), (InputError, "box_nms_thresh")),
    ("image a folder", "clear", lambda c: read_image(c["dir"]), (InputError, "is a folder")),
    ("image a fifo", "clear", lambda c: read_image(c["fifo"]), (InputError, "not a regular file")),
    ("image /dev/zero", "clear", lambda c: read_image("/dev/zero"), (InputError, "not a regular file")),
    ("image missing", "clear", lambda c: read_image(c["dir"] / "nope.png"), (InputError, "not found")),
    ("image symlink loop", "clear", lambda c: read_image(c["loop"]), (InputError, "broken symbolic link")),
    ("weights random bytes", "clear", lambda c: load_model(c["random"]), (CheckpointError, "not a checkpoint")),
    ("weights a PNG", "clear", lambda c: load_model(c["png"]), (CheckpointError, "PNG image")),
    ("weights a JSON", "clear", lambda c: load_model(c["json"]), (CheckpointError, "JSON file")),
    ("weights empty", "clear", lambda c: load_model(c["empty"]), (CheckpointError, "empty file")),
    ("weights a fifo", "clear", lambda c: load_model(c["fifo"]), (CheckpointError, "not a checkpoint")),
    ("weights a dangling link", "clear", lambda c: load_model(c["dangling"]), (CheckpointError, "broken symbolic link")),
    ("weights folder no config", "clear", lambda c: load_model(c["dir"]), (CheckpointError, "config.json")),
    ("dtype a string", "clear", lambda c: load_model(dtype="float16"), (InputError, "floating torch dtype")),
    ("device nonsense", "clear", lambda c: load_model(device="gpu0"), (InputError, "not a torch device")),
    ("Predictor(None)", "clear", lambda c: Predictor(None), (TypeError, "segany.load_model(...)")),
    ("MaskGenerator(3)", "clear", lambda c: MaskGenerator(3), (TypeError, "variant name or weights path")),
    ("cache_size '3'", "clear", lambda c: Predictor(c["model"], cache_size="3"), (InputError, "whole number >= 0, got '3'")),
    ("cache_size -1", "silent", lambda c: Predictor(c["model"], cache_size=-1), (InputError, "must be >= 0")),
    ("image on the meta device", "clear", lambda c: c["p"].set_image(torch.zeros(9, 9, 3, device="meta")), (InputError, "meta device")),
    ("image path 5000 chars", "clear", lambda c: read_image("a" * 5000 + ".png"), (InputError, "longer than this system allows")),
    ("point_grids one bare array", "clear", lambda c: _gen(c, points_per_side=None, point_grids=np.zeros((4, 2))), (InputError, "point_grids=[grid]")),
    ("load_model('')", "clear", lambda c: load_model(""), (CheckpointError, "the model name or path is empty")),
    ("format version 'abc'", "clear", lambda c: load_model(c["v_abc"]), (CheckpointError, "bad segany.format_version metadata 'abc': expected a whole number from 1")),
    ("format version -1", "silent", lambda c: load_model(c["v_neg"]), (CheckpointError, "'-1': expected a whole number from 1")),
    ("format version 0", "silent", lambda c: load_model(c["v_zero"]), (CheckpointError, "'0': expected a whole number from 1")),
    ("format version 5000 digits", "clear", lambda c: load_model(c["v_big"]), (CheckpointError, "expected a whole number from 1")),
    ("zip bomb .pth not inflated", "bound", _bomb_refused_unread, OK),
    ("zip bomb .pth message", "bound", lambda c: load_model(_zip_bomb(c["dir"])), (CheckpointError, "claim 1073741824 bytes once inflated")),
    ("zip without data.pkl", "clear", lambda c: load_model(c["zip_no_pickle"]), (CheckpointError, "a zip archive without data.pkl")),
    ("zip cut short", "clear", lambda c: load_model(c["zip_damaged"]), (CheckpointError, "damaged zip archive")),
    ("convert under a file", "clear", lambda c: convert(c["dir"] / "small.safetensors", c["a_file"] / "out.safetensors"), (NotADirectoryError, "a_file is a file, not a folder")),
    ("threshold 10**30", "clear", lambda c: _gen(c, stability_score_thresh=10**30), (InputError, "stability_score_thresh must be a number in [0, 1], got 1000000000000000000000000000000")),
    ("weights an int", "clear", lambda c: load_model(123), (TypeError, "a variant name or a path (str or os.PathLike), or None for the bundled model; got int 123")),
    ("weights as bytes", "clear", lambda c: load_model(b"vit_b"), (TypeError, "got bytes b'vit_b'")),
    ("decoder heads 3 of 128", "clear", lambda c: SamConfig.from_json(SMALL.to_json().replace('"num_heads": 8', '"num_heads": 3')), (InputError, "num_heads (3) must divide")),
    # --- valid inputs that must work
    ("big-endian uint16", "valid", _big_endian, OK),
    ("Predictor of a weights path", "valid", _predictor_of_a_path, OK),
    ("bf16 tensors", "valid", _bf16, OK),
    ("numpy scalar options", "valid", _numpy_scalars, OK),
    ("aspect 1000:1", "valid", _thin, OK),
    ("label_map of 0 masks", "valid", lambda c: _label_map_of_nothing(), OK),
    ("rle of an empty image", "valid", lambda c: _empty_rle(), OK),
]  # fmt: skip


@pytest.mark.parametrize("name, category, call, expected", CASES, ids=[c[0] for c in CASES])
def test_fuzz_api(ctx, name, category, call, expected):
    if expected == OK:
        call(ctx)
        return
    error, fragment = expected
    with pytest.raises(error) as info:
        call(ctx)
    assert fragment in str(info.value), f"{name}: {info.value}"


# Each bound segany.limits states -> the row whose error must name its value.
BOUND_ROWS = {
    "MAX_IMAGE_SIDE": "image 1×40000",
    "MAX_IMAGE_PIXELS": "embedding 30000² pixels",
    "MAX_RAISED_PIXELS": "pixel_limit 2**33",
    "MAX_RAISED_SIDE": "raised limit, side 2**20 + 1",
    "MAX_COORDINATE": "coords 1e39",
    "MAX_POINTS_PER_SIDE": "points_per_side=3000",
    "MAX_CROP_LAYERS": "crop_n_layers=30",
    "MAX_PROMPTS_PER_IMAGE": "crop_n_layers=6 prompts",
    "MAX_POINTS_PER_BATCH": "points_per_batch=10**9",
    "MAX_POINTS_PER_PROMPT": "predict 5000 points per prompt",
    "MAX_MASK_PIXELS_PER_CALL": "predict 3000 boxes on 30000×4000",
}


def test_every_bound_in_limits_has_a_row():
    # A bound added to segany.limits needs a row here; a bound whose value changes needs its
    # row's message updated (test_fuzz_api checks that message against the real error).
    stated = {k: v for k, v in vars(limits).items() if k.startswith("MAX_")}
    assert set(stated) == set(BOUND_ROWS)
    rows = {c[0]: c for c in CASES}
    assert len(rows) == len(CASES), "row ids must be unique"
    for name, row_id in BOUND_ROWS.items():
        _, category, _, (error, fragment) = rows[row_id]
        assert category in ("bound", "silent") and error is InputError, row_id
        assert re.search(rf"(?<![\d.]){int(stated[name])}(?!\d)", fragment), (name, fragment)
    assert {c[1] for c in CASES} == {"bound", "silent", "clear", "valid"}
