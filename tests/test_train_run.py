"""End-to-end training on a tiny generated dataset: loss falls, mIoU rises, resume is exact,
checkpoints load, distillation lowers the embedding error, and the CLI drives it all."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import TRAIN_SMALL

from segany.config import replace_encoder
from segany.errors import CheckpointError
from segany.modeling.families import family_of
from segany.models import build_sam
from segany.train.datasets import SA1BDataset
from segany.train.distill import DistillConfig, distill_encoder, embedding_mse
from segany.train.losses import LossWeights
from segany.train.synth import SynthConfig, iter_scenes, write_sa1b
from segany.train.trainer import TrainConfig, Trainer
from segany.train.validation import prompt_miou

SYNTH = SynthConfig(
    long_side=64,
    min_short_side=56,
    min_objects=2,
    max_objects=4,
    min_area=40,
    min_diameter=0.3,
    max_diameter=0.7,
    # Plain shapes only: these tests check the training loop, not the scene variety.
    stroke_prob=0.0,
    small_prob=0.0,
    hole_prob=0.0,
    part_prob=0.0,
    split_prob=0.0,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_sa1b(root / "train", 16, seed=0, cfg=SYNTH)
    write_sa1b(root / "val", 6, seed=1, cfg=SYNTH)
    return root


def _trainer(data, out, steps=60, **kw):
    torch.manual_seed(0)
    model = build_sam(TRAIN_SMALL)
    kw = {"lr": 3e-3, "rounds": 3, **kw}
    cfg = TrainConfig(
        out_dir=str(out),
        steps=steps,
        batch_size=2,
        masks_per_image=4,
        warmup_steps=5,
        val_every=10_000,
        ckpt_every=10_000,
        log_every=1,
        progress=False,
        device="cpu",
        **kw,
    )
    train = SA1BDataset(data / "train", TRAIN_SMALL.image_size, masks_per_image=4, flip=True)
    val = SA1BDataset(data / "val", TRAIN_SMALL.image_size, masks_per_image=8)
    return Trainer(model, cfg, train, val)


def test_synth_writes_sa1b_pairs(data):
    files = sorted((data / "val").glob("sa_*.json"))
    assert len(files) == 6
    rec = json.loads(files[0].read_text())
    assert rec["image"]["file_name"] == files[0].with_suffix(".jpg").name
    from segany.masks import decode_rle

    ann = rec["annotations"][0]
    m = decode_rle(ann["segmentation"])
    assert m.shape == (rec["image"]["height"], rec["image"]["width"]) and m.sum() == ann["area"]
    # The same seed gives the same scenes; another seed other ones.
    a = next(iter_scenes(1, 1, SYNTH))[0]
    b = next(iter_scenes(2, 1, SYNTH))[0]
    assert np.array_equal(a, next(iter_scenes(1, 1, SYNTH))[0]) and not np.array_equal(a, b)


def test_short_run_lowers_loss_and_raises_miou(data, tmp_path):
    # Box prompts on four scenes, validated on those scenes: this checks that the loop learns,
    # not how well a 60-second model generalises.
    loss = LossWeights(focal=1.0, dice=1.0, focal_alpha=-1)  # dice-led: learns in few steps
    tr = _trainer(data, tmp_path, steps=240, lr=1e-3, box_prob=1.0, rounds=1, loss=loss)
    tr.train_set.items = tr.train_set.items[:4]
    tr.val_set = SA1BDataset(data / "train", TRAIN_SMALL.image_size, masks_per_image=4)
    tr.val_set.items = tr.train_set.items
    before = prompt_miou(tr.model, tr.val_set, 4)
    hist = tr.fit()
    after = prompt_miou(tr.model, tr.val_set, 4)
    losses = [h["loss"] for h in hist if "loss" in h]
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:10])
    assert after["box_miou"] > before["box_miou"] + 0.1


def test_resume_reproduces_the_next_step(data, tmp_path):
    full = _trainer(data, tmp_path / "a", steps=4, drop_path=0.1)
    for _ in range(3):
        full.train_step()
    full.save()
    expected = full.train_step()

    resumed = _trainer(data, tmp_path / "a", steps=4, drop_path=0.1)
    resumed.resume()
    assert resumed.step == 3
    got = resumed.train_step()
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    for (name, a), (_, b) in zip(
        full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-7), name


class _Payload:
    """Unpickling this calls open(marker, "w"), i.e. creates the marker file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_resume_never_unpickles_a_planted_state_file(data, tmp_path, capsys):
    run = tmp_path / "run"
    first = _trainer(data, run, steps=2)
    first.train_step()
    first.save()
    marker = tmp_path / "pwned"
    state = run / "checkpoint.state.pt"
    saved = json.loads((run / "checkpoint.state.json").read_text())
    assert saved["step"] == 1 and saved["format"] == 1
    # The state file now holds a pickle that creates `marker` when unpickled unsafely.
    torch.save({"optimizer.0.exp_avg": _Payload(marker)}, state)
    resumed = _trainer(data, run, steps=2)
    with pytest.raises(CheckpointError, match="refusing.*nothing from it was executed"):
        resumed.resume()
    assert not marker.exists()
    from segany.cli import main  # the CLI path as well: one clear error, no code run

    args = ["train", str(data / "train"), "-o", str(run), "--resume", "--steps", "2", "-q"]
    assert main(args) != 0
    assert "refusing" in capsys.readouterr().err
    assert not marker.exists()
    # Control: the payload is live; an unsafe load does create the marker.
    torch.load(state, weights_only=False)
    assert marker.exists()


def test_freeze_encoder_keeps_it_fixed(data, tmp_path):
    tr = _trainer(data, tmp_path, steps=2, freeze="encoder")
    before = {k: v.clone() for k, v in tr.model.image_encoder.state_dict().items()}
    dec_before = tr.model.mask_decoder.output_upscaling[0].weight.clone()
    tr.train_step()
    for k, v in tr.model.image_encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(tr.model.mask_decoder.output_upscaling[0].weight, dec_before)


def test_layer_decay_groups():
    from segany.train.optim import build_optimizer, layer_id

    vit, enc = family_of(TRAIN_SMALL.encoder), TRAIN_SMALL.encoder  # 2 blocks
    assert layer_id("image_encoder.patch_embed.proj.weight", vit, enc) == 0
    assert layer_id("image_encoder.blocks.1.attn.qkv.weight", vit, enc) == 2
    assert layer_id("image_encoder.neck.0.weight", vit, enc) == 3
    assert layer_id("mask_decoder.iou_token.weight", vit, enc) == 3
    model = build_sam(TRAIN_SMALL)
    opt = build_optimizer(model, lr=1.0, weight_decay=0.1, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert scales == [0.125, 0.25, 0.5, 1.0]
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.1}


def test_distillation_lowers_embedding_error():
    torch.manual_seed(0)
    teacher = build_sam(TRAIN_SMALL).eval()
    student_cfg = dataclasses.replace(
        replace_encoder(TRAIN_SMALL, embed_dim=16, depth=1, global_attn_indexes=(0,)),
        name="student",
    )
    student = build_sam(student_cfg)
    images = [im for im, _ in iter_scenes(3, 6, SYNTH)]
    before = embedding_mse(teacher, student, images)
    hist = distill_encoder(
        teacher,
        student,
        images,
        DistillConfig(steps=60, batch_size=3, lr=3e-3, warmup_steps=5, device="cpu"),
    )
    after = embedding_mse(teacher, student, images)
    assert after < 0.5 * before and hist[-1] < hist[0]
    # The decoder came from the teacher, so the student works with it unchanged.
    for k, v in teacher.mask_decoder.state_dict().items():
        assert torch.equal(student.mask_decoder.state_dict()[k], v)


def test_cli_synth_and_train(tmp_path):
    from segany.cli import main

    assert main(["synth", str(tmp_path / "d"), "-n", "3", "--size", "64", "-q"]) == 0
    cfg = tmp_path / "cfg.json"
    cfg.write_text(TRAIN_SMALL.to_json())
    args = [
        str(tmp_path / "d"),
        "--val",
        str(tmp_path / "d"),
        "--config",
        str(cfg),
        "-o",
        str(tmp_path / "run"),
        "--steps",
        "3",
        "--batch-size",
        "1",
        "--rounds",
        "2",
        "--val-every",
        "3",
        "--val-images",
        "2",
        "--export",
        str(tmp_path / "m.safetensors"),
        "--half",
        "--log-every",
        "1",
        "-q",
    ]
    assert main(["train", *args]) == 0
    from segany.checkpoints import load_model

    model = load_model(str(tmp_path / "m.safetensors"))
    assert model.config.name == "test-train"
    # --resume with more steps continues from the checkpoint: one more training step (4) and
    # its validation, appended to the first run's log; steps 1-3 are not trained again.
    args[args.index("--steps") + 1] = "4"
    args.remove("--config")
    args.remove(str(cfg))
    assert main(["train", *args, "--resume"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    kinds = [(r["step"], "val" if "point_miou" in r else "train") for r in log]
    assert kinds == [
        (1, "train"),
        (2, "train"),
        (3, "train"),
        (3, "val"),
        (4, "train"),
        (4, "val"),
    ]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    state = json.loads((tmp_path / "run" / "checkpoint.state.json").read_text())
    assert state["step"] == 4


def test_cli_distill(tmp_path, monkeypatch, capsys):
    import segany.models
    from segany.checkpoints import load_model, save_model
    from segany.cli import main
    from segany.train.distill import image_folder
    from segany.train.synth import write_sa1b

    write_sa1b(tmp_path / "imgs", 3, seed=5, cfg=SYNTH)
    torch.manual_seed(0)
    save_model(build_sam(TRAIN_SMALL), tmp_path / "teacher.safetensors")
    student = dataclasses.replace(
        replace_encoder(TRAIN_SMALL, depth=1, global_attn_indexes=(0,)), name="student"
    )
    (tmp_path / "student.json").write_text(student.to_json())
    built = []  # the student as the command built it, before any training

    def build_and_keep(config):
        model = build_sam(config)
        if config == student:
            built.append(copy.deepcopy(model))
        return model

    monkeypatch.setattr(segany.models, "build_sam", build_and_keep)
    out = tmp_path / "student.safetensors"
    args = [
        "distill",
        str(tmp_path / "imgs"),
        "-t",
        str(tmp_path / "teacher.safetensors"),
        "--student",
        str(tmp_path / "student.json"),
        "-o",
        str(out),
        "--steps",
        "20",
        "--batch-size",
        "2",
        "--lr",
        "3e-3",
        "--json",
        "-q",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["last_mse"] < 0.5 * summary["first_mse"]
    initial = built[0]  # the first student the command built is the one it trains
    trained = load_model(str(out))
    teacher = load_model(str(tmp_path / "teacher.safetensors"))
    assert trained.config.name == "student"
    # The written encoder is the trained one: its embeddings are much closer to the teacher's.
    images = image_folder(tmp_path / "imgs")
    before, after = embedding_mse(teacher, initial, images), embedding_mse(teacher, trained, images)
    assert after < 0.5 * before, (before, after)
    # and the prompt encoder and decoder are the teacher's, so it works with them unchanged.
    for part in ("prompt_encoder", "mask_decoder"):
        for k, v in getattr(teacher, part).state_dict().items():
            assert torch.equal(getattr(trained, part).state_dict()[k], v), f"{part}.{k}"
