"""The prompt-round loop follows the paper: every corrective click comes from the error region
of the model's own previous prediction, positive where the object was missed and negative where
the prediction spilled over."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers import TRAIN_SMALL

from segany.models import build_sam
from segany.train import prompts
from segany.train.datasets import SA1BDataset
from segany.train.synth import SynthConfig, write_sa1b
from segany.train.trainer import TrainConfig, Trainer

SYNTH = SynthConfig(long_side=64, min_short_side=56, min_objects=2, max_objects=4, min_area=40)


def _follow_clicks(tmp_path, monkeypatch, box_prob: float) -> tuple[int, int]:
    """Train one step with ``box_prob`` for the first prompt, check every corrective click
    against the previous prediction; return (negative, positive) click counts."""
    write_sa1b(tmp_path / "d", 3, seed=0, cfg=SYNTH)
    torch.manual_seed(0)
    model = build_sam(TRAIN_SMALL)
    cfg = TrainConfig(
        out_dir=str(tmp_path / "run"),
        steps=2,
        batch_size=2,
        masks_per_image=4,
        rounds=6,  # rounds 1..4 minus one mask-only round: three rounds of clicks
        box_prob=box_prob,
        progress=False,
        device="cpu",
        amp=False,
    )
    data = SA1BDataset(tmp_path / "d", TRAIN_SMALL.image_size, masks_per_image=4)
    trainer = Trainer(model, cfg, data)

    # What the decoder returned each time, the image being trained, and every corrective click
    # the loop asked for.
    sizes: list[tuple[int, int]] = []
    decoded: list[tuple[torch.Tensor, torch.Tensor]] = []
    clicks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, tuple]] = []

    def record_decoder(_module, _inputs, output):
        low, iou = output
        decoded.append((low.detach().float().clone(), iou.detach().float().clone()))

    real_error_points = prompts.error_points

    def spy(pred, gt, generator=None):
        pts, lbl = real_error_points(pred, gt, generator)
        clicks.append((pred.clone(), gt.clone(), pts, lbl, len(decoded), sizes[-1]))
        return pts, lbl

    real_rounds_loss = trainer._rounds_loss

    def rounds_loss(embedding, gt, input_size, gen, early=None):
        sizes.append(input_size)
        return real_rounds_loss(embedding, gt, input_size, gen, early)

    model.mask_decoder.register_forward_hook(record_decoder)
    monkeypatch.setattr(prompts, "error_points", spy)
    monkeypatch.setattr(trainer, "_rounds_loss", rounds_loss)
    trainer.train_step()

    s = TRAIN_SMALL.image_size
    negatives = positives = 0
    for pred, gt, pts, lbl, n_decoded, (h, w) in clicks:
        # The prediction handed to error_points is the previous decoder output: the mask the
        # model ranks best, upsampled to the input frame, thresholded, padding excluded.
        low, iou = decoded[n_decoded - 1]
        best = low[torch.arange(low.shape[0]), iou.argmax(1)][:, None]
        up = F.interpolate(best, (s, s), mode="bilinear", align_corners=False)[:, 0] > 0
        valid = torch.zeros(s, s, dtype=torch.bool)
        valid[:h, :w] = True
        assert torch.equal(pred, up & valid), "the click did not use the previous prediction"
        error = pred ^ gt
        x, y = pts[:, 0].long(), pts[:, 1].long()
        for i in range(gt.shape[0]):
            if not error[i].any():
                assert lbl[i] == -1
                continue
            assert error[i, y[i], x[i]], "corrective click outside the error region"
            assert lbl[i] == (1.0 if gt[i, y[i], x[i]] else 0.0), "wrong click label"
        negatives += int((lbl == 0).sum())
        positives += int((lbl == 1).sum())
    # Two images, three click rounds each.
    assert len(clicks) == 2 * 3
    return negatives, positives


def test_corrective_clicks_come_from_the_previous_prediction(tmp_path, monkeypatch):
    negatives = positives = 0
    for box_prob in (0.0, 1.0):  # a point first, then a box first
        with monkeypatch.context() as mp:
            n, p = _follow_clicks(tmp_path / f"box{box_prob}", mp, box_prob)
        assert n + p > 0
        negatives, positives = negatives + n, positives + p
    # Both kinds of corrective click occur (an untrained model's box masks may only spill).
    assert negatives > 0 and positives > 0
