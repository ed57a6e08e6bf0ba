"""Fine-tuning a SAM 2.1 model (issue 35): the trainer reads the image as SAM 2 does (stretched
to its square frame), feeds the decoder the encoder's high-resolution features, gives a box as
its two corner points, and writes weights that load back as SAM 2. A small seeded Hiera
(tests/test_sam2_onnx.py's SMALL_SAM2, 256 px) keeps it to seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import seeded_model
from test_export_cli import segany
from test_sam2_onnx import SMALL_SAM2

from segany import Predictor, load_model
from segany.checkpoints.loading import save_state_dict
from segany.errors import InputError
from segany.train.datasets import SA1BDataset
from segany.train.synth import SynthConfig, write_sa1b
from segany.train.trainer import TrainConfig, Trainer

SYNTH = SynthConfig(long_side=96, min_short_side=64, max_objects=4, min_diameter=0.3)
RUN = dict(batch_size=2, masks_per_image=4, warmup_steps=1, val_every=10_000)
RUN.update(ckpt_every=10_000, progress=False, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, SA1BDataset]:
    folder = tmp_path_factory.mktemp("sam2_train") / "train"
    write_sa1b(folder, 4, seed=0, cfg=SYNTH)
    return folder, SA1BDataset(folder, SMALL_SAM2.image_size, masks_per_image=4)


def test_stretched_samples_fill_the_frame(data):
    """``stretch`` (what the trainer asks for a SAM 2 model): the image is resized once from
    its original size to fill the S×S frame, masks with it; without it, the padded frame."""
    from segany.train.datasets import prepare

    s = 32
    image = np.zeros((16, 32, 3), np.uint8)
    image[:] = np.arange(32, dtype=np.uint8)[None, :, None] * 8  # a left-to-right ramp
    mask = np.zeros((16, 32), bool)
    mask[:8] = True  # the image's top half
    stretched = prepare(image, [mask], s, stretch=True)
    assert stretched.input_size == (s, s)
    assert torch.equal(stretched.image[:, 0], stretched.image[:, -1])  # every row the ramp
    assert stretched.masks[0, : s // 2].all() and not stretched.masks[0, s // 2 :].any()
    padded = prepare(image, [mask], s)
    assert padded.input_size == (16, 32) and not padded.masks[0, 16:].any()
    _, dataset = data
    sample = dataset.get(0, stretch=True)
    assert sample.input_size == (SMALL_SAM2.image_size,) * 2
    assert sample.masks.shape[1:] == (SMALL_SAM2.image_size,) * 2 and len(sample.masks)


def test_fine_tune_from_images(data, tmp_path):
    """Two steps from images: finite losses; the trunk, the high-resolution path (conv_s0/s1)
    and the decoder learn; SAM 2's object-score head, which its image predictor does not use,
    is not trained. The checkpoint loads back as SAM 2 and answers as the trained model."""
    _, dataset = data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = seeded_model(SMALL_SAM2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        run = dict(RUN, val_images=2)
        config = TrainConfig(out_dir=str(tmp_path / "run"), steps=2, box_prob=0.5, **run)
        trainer = Trainer(model, config, dataset, val_set=dataset)
        losses = [trainer.train_step()["loss"] for _ in range(2)]
    assert all(np.isfinite(losses))
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    for part in ("image_encoder.trunk.blocks.0", "image_encoder.conv_s0", "image_encoder.conv_s1"):
        assert any(k.startswith(part) for k in moved), part
    assert any(k.startswith("mask_decoder.transformer") for k in moved)
    assert not any("pred_obj_score_head" in k for k in moved)
    back = load_model(trainer.save())
    assert back.is_sam2 and back.config == model.config
    image = np.asarray(dataset.load(0)[0])
    answers = []
    for m in (model.eval(), back):
        predictor = Predictor(m, cache=False)
        predictor.set_image(image)
        answers.append(predictor.predict(point_coords=[[30.0, 30.0]], point_labels=[1]))
    assert np.array_equal(answers[0].masks, answers[1].masks)
    np.testing.assert_allclose(answers[0].scores, answers[1].scores, rtol=0, atol=1e-6)
    scores = trainer.validate()  # the Predictor's prompts on SAM 2, as at inference
    assert scores["masks"] > 0 and all(0 <= scores[k] <= 1 for k in ("point_miou", "box_miou"))


def test_box_rounds_give_the_corners(data, tmp_path, monkeypatch):
    """With every first prompt a box, the prompt encoder sees the box as SAM 2's two corner
    points (labels 2, 3) ahead of the clicks, and no box embedding."""
    _, dataset = data
    model = seeded_model(SMALL_SAM2)
    seen: list[tuple[torch.Tensor, object]] = []
    original = model.prompt_encoder.forward

    def spy(points, boxes, masks):
        seen.append((points[1].clone(), boxes))
        return original(points=points, boxes=boxes, masks=masks)

    monkeypatch.setattr(model.prompt_encoder, "forward", spy)
    config = TrainConfig(out_dir=str(tmp_path / "run"), steps=1, box_prob=1.0, rounds=2, **RUN)
    Trainer(model, config, dataset).train_step()
    assert seen and all(boxes is None for _, boxes in seen)
    first, second = seen[0][0], seen[1][0]
    assert (first[:, :2] == torch.tensor([2, 3])).all() and first.shape[1] == 2
    assert (second[:, :2] == torch.tensor([2, 3])).all() and second.shape[1] == 3  # + a click


def test_cached_embeddings_refused_by_name(data, tmp_path):
    from segany.train.embeddings import open_cache

    _, dataset = data
    model = seeded_model(SMALL_SAM2)
    cache = open_cache(model, dataset, tmp_path / "cache.safetensors")
    config = TrainConfig(out_dir=str(tmp_path / "run"), steps=1, freeze="encoder", **RUN)
    with pytest.raises(InputError, match="high-resolution features.*SAM 2"):
        Trainer(model, config, cache)


def test_segany_train_command_on_a_sam2_file(data, tmp_path):
    """``segany train DATA -m sam2.safetensors``: runs, and its export is a SAM 2 model."""
    folder, _ = data
    weights = save_state_dict(
        SMALL_SAM2, seeded_model(SMALL_SAM2).state_dict(), tmp_path / "sam2.safetensors", "segany"
    )
    out, export = tmp_path / "run", tmp_path / "tuned.safetensors"
    args = ["train", folder, "-m", weights, "-o", out, "-q", "--steps", "1", "--batch-size", "1"]
    args += ["--export", export, "--no-amp", "--threads", "1"]
    segany(*args)
    tuned, start = load_model(export), load_model(weights)
    assert tuned.is_sam2 and tuned.config == start.config
    changed = [
        k for k, v in tuned.state_dict().items() if not torch.equal(v, start.state_dict()[k])
    ]
    assert any(k.startswith("mask_decoder.") for k in changed)  # one step moved the weights


def test_distill_a_smaller_hiera_student(data):
    """A narrower, shallower Hiera learns a SAM 2 teacher's embeddings and high-resolution
    features (both halve at least), the teacher's decoder is copied, and the student answers
    prompts; a SAM 1 student for a SAM 2 teacher is refused by name."""
    import dataclasses

    from helpers import TRAIN_SMALL

    from segany.modeling.hiera.config import HieraConfig
    from segany.models import build_sam
    from segany.train.distill import DistillConfig, distill_encoder, embedding_mse
    from segany.train.synth import iter_scenes

    student_cfg = dataclasses.replace(
        SMALL_SAM2,
        name="hiera-student",
        encoder=HieraConfig(16, 1, (1, 1, 1, 1), (2,), (8, 4, 8, 4), (4, 4), image_size=256),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher, student = seeded_model(SMALL_SAM2).eval(), build_sam(student_cfg)
        images = [im for im, _ in iter_scenes(3, 4, SYNTH)]
        before = embedding_mse(teacher, student, images)
        opts = DistillConfig(steps=40, batch_size=3, lr=3e-3, warmup_steps=5, device="cpu")
        history = distill_encoder(teacher, student, images, opts)
        after = embedding_mse(teacher, student, images)
    assert np.isfinite(history).all() and after < 0.5 * before, (
        before,
        after,
    )  # seen: 2.37 -> 0.14
    kept = teacher.mask_decoder.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in student.mask_decoder.state_dict().items())
    predictor = Predictor(student, cache=False)
    predictor.set_image(images[0])
    out = predictor.predict(point_coords=[[30.0, 30.0]], point_labels=[1])
    assert out.masks.shape == (3, *images[0].shape[:2])
    with pytest.raises(InputError, match="SAM 2 teacher needs a SAM 2 student"):
        distill_encoder(teacher, build_sam(TRAIN_SMALL), images, opts)
