"""Each family through the features every model has (the README's families × features table
names these tests): the ``segany segment`` command, the disk embedding cache, ZoomPredictor and
RefinedPredictor, and one engine run (``segany engine run --executor serial``) with a
non-SAM-1 family. Small seeded configs of each family, saved as the official packages save
their checkpoints (a plain state dict), so every run also detects the family from the weights.

The answers are compared with the library's own calls on the same weights (parity with each
official package is tested in tests/test_modeling_<family>.py): identical masks and scores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import seeded_model
from PIL import Image
from test_export_families import SMALL_EVIT
from test_modeling_hq import SMALL_HQ
from test_modeling_tinyvit import SMALL_T
from test_sam2_onnx import SMALL_SAM2

from segany import MaskGenerator, Predictor, load_model
from segany.checkpoints.loading import save_state_dict
from segany.config import SamConfig
from segany.inference.embedding_cache import EmbeddingCache
from segany.refine import RefinedPredictor, refine_logits
from segany.zoom import ZoomPredictor

ROOT = Path(__file__).resolve().parents[1]
# SAM-HQ on a small ViT, MobileSAM's TinyViT (SAM's decoder), EfficientViT-SAM (512 px
# encoder, 1024 frame), SAM 2.1 on a small Hiera (256 px; SAM 2's decoder)
FAMILIES: dict[str, SamConfig] = {"sam_hq": SMALL_HQ, "mobilesam": SMALL_T}
FAMILIES["efficientvit_sam"] = SMALL_EVIT
FAMILIES["sam2"] = SMALL_SAM2


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("family_files")
    out = {}
    for name, config in FAMILIES.items():
        if name == "sam2":  # a small Hiera is no published trunk: a segany file carries its config
            out[name] = save_state_dict(
                config, seeded_model(config).state_dict(), folder / "sam2.safetensors", "segany"
            )
            continue
        out[name] = folder / f"{name}.pth"
        torch.save(seeded_model(config).state_dict(), out[name])
    return out


def _photo(h: int = 90, w: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = (rng.random((h // 12 + 2, w // 12 + 2, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


def _segany(*args: object, check: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "segany", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == check, proc.stderr
    return proc


def test_each_file_is_detected_as_its_family(files):
    for name, config in FAMILIES.items():
        model = load_model(files[name])
        if name == "sam2":  # a segany file: the config it carries, name and all
            assert model.is_sam2 and model.config == config
            continue
        assert model.config == dataclasses.replace(config, name="custom"), name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cli_segment(files, family, tmp_path):
    """``segany segment IMAGE --model FILE --point X,Y``: the mask the Predictor gives."""
    from segany.formats import read_mask_png

    image = tmp_path / "photo.png"
    Image.fromarray(_photo()).save(image)
    _segany("segment", image, "--model", files[family], "--point", "60,40", "-o", tmp_path, "-q")
    predictor = Predictor(load_model(files[family]))
    predictor.set_image(_photo())
    want = predictor.predict(point_coords=[[60.0, 40.0]], point_labels=[1], multimask_output=False)
    got = read_mask_png(tmp_path / "photo_mask0.png")
    np.testing.assert_array_equal(got, want.masks[0])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_disk_embedding_cache(files, family, tmp_path):
    """A second predictor (a second run) reads the embedding (and SAM-HQ's early map) from
    the disk cache instead of encoding; the key names the weights, so another family's or
    another seed's model does not hit it."""
    model = load_model(files[family])
    calls: list[int] = []  # any encoder layer run (SAM-HQ's path skips the module's forward)
    hooks = [
        m.register_forward_hook(lambda *a: calls.append(1)) for m in model.image_encoder.modules()
    ]
    image = _photo()
    first = Predictor(model, cache=tmp_path)
    first.set_image(image)
    n = len(calls)
    assert n >= 1
    again = Predictor(model, cache=tmp_path)
    again.set_image(image)
    for hook in hooks:
        hook.remove()
    assert len(calls) == n  # not encoded again
    assert torch.equal(first.get_image_embedding(), again.get_image_embedding())
    if model.is_hq:
        assert torch.equal(first.get_early_features(), again.get_early_features())
    prompt = dict(point_coords=[[60.0, 40.0]], point_labels=[1])
    a, b = first.predict(**prompt), again.predict(**prompt)
    assert np.array_equal(a.logits, b.logits) and np.array_equal(a.scores, b.scores)
    keys = {EmbeddingCache.key(image, load_model(files[f]), "fp32") for f in FAMILIES}
    keys.add(EmbeddingCache.key(image, seeded_model(FAMILIES[family], seed=1), "fp32"))
    assert len(keys) == len(FAMILIES) + 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_zoom_and_refine(files, family):
    """ZoomPredictor: a zoomed box is the crop's answer put back; RefinedPredictor: the
    model's logits refined, its scores kept."""
    model = load_model(files[family])
    image = _photo()
    box = np.array([50.0, 30.0, 70.0, 45.0])
    zoom = ZoomPredictor(Predictor(model, cache=False), margin=1.0)
    zoom.set_image(image)
    got = zoom.predict(box=box, multimask_output=False, return_logits=True)
    x0, y0, x1, y1 = zoom.crop
    plain = Predictor(model, cache=False)
    plain.set_image(image[y0:y1, x0:x1])
    want = plain.predict(box=box - [x0, y0, x0, y0], multimask_output=False, return_logits=True)
    assert np.array_equal(got.masks[:, y0:y1, x0:x1], want.masks)
    assert np.array_equal(got.scores, want.scores)
    plain.set_image(image)
    refined = RefinedPredictor(Predictor(model, cache=False), radius=3, eps=1e-3)
    refined.set_image(image)
    want = plain.predict(box=box, return_logits=True)
    got = refined.predict(box=box)
    assert got.masks.shape == want.masks.shape
    assert np.array_equal(got.masks, refine_logits(image, want.masks, 3, 1e-3) > 0)
    assert np.array_equal(got.scores, want.scores)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_engine_run(files, family, tmp_path):
    """``segany engine run --executor serial -m FILE``: each image's annotations are the
    MaskGenerator's for that model (SAM-HQ: the early map travels with the embedding): the
    same masks, boxes and points in the same order, scores within 1e-4."""
    from engine_fixtures import MAX_PIXELS, documents, make_folder

    from segany.formats import read_image, sa1b_document

    collection = make_folder(tmp_path / "coll", 2)
    out = tmp_path / "out"
    opts = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    model_flags = ["--executor", "serial", "-m", files[family], *flags]
    model_flags += ["--max-pixels", MAX_PIXELS]  # big.png fails, as in the engine tests
    _segany("engine", "run", collection, "-o", out, *model_flags, check=1)  # partial: 4 bad
    summary = json.loads((out / "summary.json").read_text())
    assert summary["annotated"] == 2 and summary["failed"] == 4
    docs = documents(out)
    gen = MaskGenerator.for_model(load_model(files[family]), None, output_mode="coco_rle", **opts)
    for image_path in sorted(collection.rglob("sa_*.jpg")):
        image = read_image(image_path)
        h, w = image.shape[:2]
        want = sa1b_document(gen.generate(image), file_name=image_path.name, width=w, height=h)
        got = docs[image_path.name]["annotations"]
        want_rows = json.loads(json.dumps(want.annotations))
        assert len(got) == len(want_rows) > 0
        for a, b in zip(got, want_rows, strict=True):  # in the same order
            scores = ("predicted_iou", "stability_score")
            diff = {k: (a[k], b[k]) for k in a if a[k] != b[k] and k not in scores}
            assert not diff, {k: str(v)[:300] for k, v in diff.items()}
            for key in scores:  # the worker's rounding may differ in the last bits
                assert abs(a[key] - b[key]) < 1e-4, key  # seen: 3e-8 (EfficientViT)


# The training tests' sizes (tests/helpers.py TRAIN_SMALL: 64 px, 8×8 embedding) with an
# EfficientViT encoder whose neck gives that grid.
def _train_evit() -> SamConfig:
    from helpers import TRAIN_SMALL

    from segany.modeling.efficientvit import EfficientViTConfig

    encoder = EfficientViTConfig(
        widths=(8, 16, 16, 32, 32),
        depths=(1, 1, 1, 1, 1),
        blocks=("res", "fmb", "fmb", "mb", "att"),
        expand_ratios=(1, 4, 4, 4, 6),
        fewer_norms=(False, False, False, True, True),
        neck_stages=(4, 3, 2),
        neck_depth=1,
        neck_expand_ratio=1,
        neck_width=32,
        qkv_dim=8,
        image_size=64,
        frame_size=64,
        embedding_size=8,
    )
    decoder = dataclasses.replace(TRAIN_SMALL.decoder, norm_eps=1e-6)
    return dataclasses.replace(TRAIN_SMALL, name="evit-train", encoder=encoder, decoder=decoder)


def test_train_and_distill_efficientvit(tmp_path):
    """``segany distill``'s recipe with an EfficientViT student of a ViT teacher (its
    embeddings approach the teacher's), then the trainer fine-tunes it (encoder weights and
    BatchNorm statistics move)."""
    from helpers import TRAIN_SMALL

    from segany.models import build_sam
    from segany.train.datasets import SA1BDataset
    from segany.train.distill import DistillConfig, distill_encoder, embedding_mse
    from segany.train.synth import SynthConfig, iter_scenes, write_sa1b
    from segany.train.trainer import TrainConfig, Trainer

    synth = SynthConfig(long_side=64, min_short_side=56, max_objects=4, min_diameter=0.3)
    cfg = TrainConfig(
        out_dir=str(tmp_path / "run"),
        steps=2,
        batch_size=2,
        masks_per_image=4,
        warmup_steps=1,
        val_every=10_000,
        ckpt_every=10_000,
        progress=False,
        device="cpu",
    )
    write_sa1b(tmp_path / "train", 4, seed=0, cfg=synth)
    data = SA1BDataset(tmp_path / "train", 64, masks_per_image=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher, student = build_sam(TRAIN_SMALL).eval(), build_sam(_train_evit())
        images = [im for im, _ in iter_scenes(3, 6, synth)]
        before = embedding_mse(teacher, student, images)
        opts = DistillConfig(steps=60, batch_size=3, lr=3e-3, warmup_steps=5, device="cpu")
        distill_encoder(teacher, student, images, opts)
        assert embedding_mse(teacher, student, images) < 0.5 * before  # seen: 1.99 -> 0.44
        weights = {k: v.clone() for k, v in student.image_encoder.state_dict().items()}
        Trainer(student, cfg, data, None).fit()
    moved = [
        k for k, v in student.image_encoder.state_dict().items() if not torch.equal(v, weights[k])
    ]
    assert any(k.endswith("conv.weight") for k in moved)
    assert any("running_mean" in k for k in moved)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_app_decode(files, family, tmp_path):
    """The app's server-side decode (``segany serve --model FILE``'s API) gives the
    Predictor's masks and scores for each family (SAM-HQ: one mask per click)."""
    pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")
    from server_fixtures import click, make_client, png_bytes, upload

    from segany.formats import read_image
    from segany.masks import decode_rle

    model = load_model(files[family])
    client = make_client(tmp_path / "project", model)
    image = upload(client, png_bytes(_photo()), "photo.png")
    out = click(client, image["id"], points=[[60, 40], [20, 70]], labels=[1, 0])
    predictor = Predictor(model)
    predictor.set_image(read_image(tmp_path / "project" / image["path"]))
    want = predictor.predict(np.array([[60, 40], [20, 70]]), np.array([1, 0]))
    assert len(out["masks"]) == len(want.masks) == (1 if model.is_hq else 3)
    for rle, mask in zip(out["masks"], want.masks, strict=True):
        assert (decode_rle(rle) != mask).sum() <= 2  # float noise at the 0 threshold only
    np.testing.assert_allclose(out["scores"], want.scores, atol=1e-4)


def test_the_readme_table_names_tests_that_exist():
    """Every test the README's families × features table names is defined in the file it
    names (or, without a file, in some test file)."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Model families × features") : text.index("## Documentation")]
    named = set(re.findall(r"`(?:([a-z_]+)::)?(test_[a-z0-9_]+)`", section))
    assert len(named) >= 30
    sources = {p.stem: p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")}
    for module, name in named:
        where = [module] if module else list(sources)
        assert any(f"def {name}(" in sources.get(m, "") for m in where), (module, name)


def test_train_sam_hq(tmp_path):
    """The trainer fine-tunes a SAM-HQ model from images: the encoder's early map reaches the
    decoder, whose HQ parts learn (with the rest); cached embeddings, which hold no early map,
    are refused by name."""
    from helpers import TRAIN_SMALL

    from segany.errors import InputError
    from segany.models import build_sam
    from segany.train.datasets import SA1BDataset
    from segany.train.embeddings import EmbeddingCache, open_cache
    from segany.train.synth import SynthConfig, write_sa1b
    from segany.train.trainer import TrainConfig, Trainer

    synth = SynthConfig(long_side=64, min_short_side=56, max_objects=4, min_diameter=0.3)
    write_sa1b(tmp_path / "train", 4, seed=0, cfg=synth)
    data = SA1BDataset(tmp_path / "train", 64, masks_per_image=4)
    hq_config = dataclasses.replace(
        TRAIN_SMALL, name="hq-train", decoder=dataclasses.replace(TRAIN_SMALL.decoder, hq=True)
    )
    cfg = dict(batch_size=2, masks_per_image=4, warmup_steps=1, val_every=10_000)
    cfg.update(ckpt_every=10_000, progress=False, device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, sam = build_sam(hq_config), build_sam(TRAIN_SMALL)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = Trainer(model, TrainConfig(out_dir=str(tmp_path / "run"), steps=2, **cfg), data)
        losses = [trainer.train_step()["loss"] for _ in range(2)]
    assert all(np.isfinite(losses))
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    hq_parts = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder")
    for part in (*hq_parts, "embedding_maskfeature", "image_encoder.blocks.0"):
        assert any(part in k for k in moved), part  # compress_vit_feat: the early map's path
    path = tmp_path / "cache.safetensors"
    open_cache(sam, data, path)
    model.image_encoder.load_state_dict(sam.image_encoder.state_dict())  # the cache's encoder
    frozen = TrainConfig(out_dir=str(tmp_path / "run2"), steps=1, freeze="encoder", **cfg)
    with pytest.raises(InputError, match="hold no early feature map"):
        Trainer(model, frozen, EmbeddingCache(path, masks_per_image=4))
