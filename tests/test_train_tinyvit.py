"""Training a TinyViT (MobileSAM's encoder family) through the encoder contract: layer-wise lr
decay, drop path, weight-decay exclusions, another input size, distillation from a ViT teacher
(MobileSAM's recipe) and fine-tuning."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import TRAIN_SMALL, seeded_model
from test_modeling_tinyvit import SMALL_T

from segany.modeling.tinyvit import TinyViTConfig
from segany.models import build_sam
from segany.train.optim import build_optimizer, set_drop_path
from segany.train.resize import resize_input


def test_layer_decay_drop_path_and_input_size():
    model = seeded_model(SMALL_T)
    opt = build_optimizer(model, lr=1.0, weight_decay=0.0, layer_decay=0.5)
    # stem layer 0, the 5 blocks 1..5 (merges with their stage's last block), the rest 6
    assert sorted({g["lr_scale"] for g in opt.param_groups}) == [0.5**k for k in range(7)][::-1]
    opt = build_optimizer(model, lr=1.0, weight_decay=0.1)
    biases = {id(p) for n, p in model.named_parameters() if n.endswith("attention_biases")}
    decays = {g["weight_decay"] for g in opt.param_groups for p in g["params"] if id(p) in biases}
    assert len(biases) == 4 and decays == {0.0}  # as TinyViT's own training has them
    set_drop_path(model, 0.2)
    rates = [b.drop_path for b in model.image_encoder.all_blocks()]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    set_drop_path(model, 0.0)
    smaller = resize_input(model, 512)  # no tensor depends on the input size
    assert smaller.config.embedding_size == 32
    for key, value in model.state_dict().items():
        assert torch.equal(smaller.state_dict()[key], value)
    with torch.no_grad():
        assert smaller.image_encoder(torch.zeros(1, 3, 512, 512)).shape == (1, 256, 32, 32)


def test_distill_a_tinyvit_student_then_fine_tune_it(tmp_path):
    """MobileSAM's recipe on small sizes: a TinyViT learns a ViT teacher's embeddings (the
    teacher's decoder kept), then the whole model fine-tunes with layer decay and drop path."""
    from segany.train.datasets import SA1BDataset
    from segany.train.distill import DistillConfig, distill_encoder, embedding_mse
    from segany.train.synth import SynthConfig, iter_scenes, write_sa1b
    from segany.train.trainer import TrainConfig, Trainer

    student_cfg = dataclasses.replace(
        TRAIN_SMALL,
        name="tinyvit-student",
        encoder=TinyViTConfig(
            embed_dims=(16, 32, 48, 64),
            depths=(1, 1, 1, 1),
            num_heads=(2, 2, 2),
            window_sizes=(4, 4, 4),
            merge_strides=(2, 1, 1),  # 64 px -> the teacher's 8×8 grid
            image_size=64,
            num_classes=0,
        ),
    )
    synth = SynthConfig(long_side=64, min_short_side=56, max_objects=4, min_diameter=0.3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher, student = build_sam(TRAIN_SMALL).eval(), build_sam(student_cfg)
        images = [im for im, _ in iter_scenes(3, 6, synth)]
        before = embedding_mse(teacher, student, images)
        opts = DistillConfig(steps=60, batch_size=3, lr=3e-3, warmup_steps=5, device="cpu")
        distill_encoder(teacher, student, images, opts)
        assert embedding_mse(teacher, student, images) < 0.5 * before  # seen: 2.06 -> 0.21
        write_sa1b(tmp_path / "train", 4, seed=0, cfg=synth)
        data = SA1BDataset(tmp_path / "train", 64, masks_per_image=4)
        cfg = TrainConfig(
            out_dir=str(tmp_path / "run"),
            steps=4,
            batch_size=2,
            masks_per_image=4,
            warmup_steps=1,
            val_every=10_000,
            ckpt_every=10_000,
            progress=False,
            device="cpu",
            layer_decay=0.8,
            drop_path=0.1,
        )
        before = {k: v.clone() for k, v in student.image_encoder.state_dict().items()}
        Trainer(student, cfg, data, None).fit()
    moved = [
        k for k, v in student.image_encoder.state_dict().items() if not torch.equal(v, before[k])
    ]
    assert any("attention_biases" in k for k in moved) and any("running_mean" in k for k in moved)
