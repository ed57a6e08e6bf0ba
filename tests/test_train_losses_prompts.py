"""Training losses against hand-computed values, and the prompt simulation's guarantees."""

from __future__ import annotations

import math

import pytest
import torch

from segany.errors import InputError
from segany.masks import batched_mask_to_box, mask_iou
from segany.train import prompts
from segany.train.losses import LossWeights, dice_loss, sam_loss, sigmoid_focal_loss


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize(
    "logit, target, alpha, gamma",
    [(0.0, 1, 0.25, 2.0), (2.0, 1, 0.25, 2.0), (2.0, 0, 0.25, 2.0), (-1.0, 0, -1.0, 0.0)],
)
def test_focal_single_pixel_by_hand(logit, target, alpha, gamma):
    p = _sig(logit)
    p_t = p if target else 1 - p
    a_t = 1.0 if alpha < 0 else (alpha if target else 1 - alpha)
    expected = -a_t * (1 - p_t) ** gamma * math.log(p_t)
    got = sigmoid_focal_loss(torch.tensor([[logit]]), torch.tensor([[target]]), alpha, gamma)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_focal_averages_over_pixels():
    logits = torch.tensor([[[0.0, 2.0], [-2.0, 0.0]]])
    t = torch.tensor([[[1, 1], [0, 0]]])
    per_pixel = [
        sigmoid_focal_loss(logits[:, i : i + 1, j : j + 1], t[:, i : i + 1, j : j + 1])
        for i in range(2)
        for j in range(2)
    ]
    assert float(sigmoid_focal_loss(logits, t)) == pytest.approx(float(sum(per_pixel) / 4))


def test_dice_by_hand():
    logits = torch.tensor([[[0.0, 100.0], [-100.0, 100.0]]])  # p = .5, 1, 0, 1
    t = torch.tensor([[[1, 1], [0, 0]]])
    inter, ps, ts = 0.5 + 1.0, 0.5 + 1 + 0 + 1, 2.0
    expected = 1 - (2 * inter + 1) / (ps + ts + 1)
    assert float(dice_loss(logits, t)) == pytest.approx(expected, rel=1e-5)


def test_mask_iou_by_hand():
    a = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool).reshape(1, 2, 2)
    b = torch.tensor([[1, 0, 1, 0]], dtype=torch.bool).reshape(1, 2, 2)
    assert float(mask_iou(a, b)) == pytest.approx(1 / 3)
    empty = torch.zeros(1, 2, 2, dtype=torch.bool)
    assert float(mask_iou(empty, empty)) == 1.0


def test_sam_loss_min_over_outputs_and_iou_mse():
    gt = torch.zeros(1, 4, 4, dtype=torch.bool)
    gt[0, :2] = True
    good = torch.where(gt[0], 10.0, -10.0)
    logits = torch.stack([-good, good, torch.zeros(4, 4)])[None]  # 1×3×4×4; output 1 is right
    iou_pred = torch.tensor([[0.0, 1.0, 0.5]])
    w = LossWeights(focal=20, dice=1, iou=1)
    out = sam_loss(logits, gt, iou_pred, w)
    assert out.best.tolist() == [1]
    t = gt[:, None].expand(1, 3, 4, 4)
    focal = sigmoid_focal_loss(logits, t)[0, 1]
    dice = dice_loss(logits, t)[0, 1]
    actual = torch.tensor([0.0, 1.0, 8 / 16])  # logits 0 > 0 is False: zeros -> IoU 0
    actual[2] = 0.0
    mse = float(((iou_pred[0] - actual) ** 2).mean())
    assert float(out.total) == pytest.approx(float(20 * focal + dice) + mse, rel=1e-5)
    assert out.iou[0].tolist() == pytest.approx(actual.tolist())


def test_sam_loss_single_output_and_bad_shapes():
    gt = torch.ones(2, 3, 3, dtype=torch.bool)
    out = sam_loss(torch.full((2, 1, 3, 3), 5.0), gt, torch.ones(2, 1))
    assert out.best.tolist() == [0, 0] and out.iou_mse == pytest.approx(0.0)
    with pytest.raises(InputError):
        sam_loss(torch.zeros(2, 3, 3), gt, torch.ones(2, 1))
    with pytest.raises(InputError):
        sam_loss(torch.zeros(2, 1, 4, 4), gt, torch.ones(2, 1))


def _blobs(n=6, size=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        x0, y0 = torch.randint(0, size - 12, (2,), generator=g).tolist()
        w, h = torch.randint(3, 12, (2,), generator=g).tolist()
        masks[i, y0 : y0 + h, x0 : x0 + w] = True
    return masks


def test_points_lie_inside_masks():
    masks = _blobs()
    for seed in range(5):
        pts = prompts.points_in_masks(masks, torch.Generator().manual_seed(seed)).long()
        assert masks[torch.arange(len(masks)), pts[:, 1], pts[:, 0]].all()


def test_boxes_contain_mask_up_to_jitter():
    masks = _blobs(n=8)
    tight = batched_mask_to_box(masks).float()
    ys, xs = torch.nonzero(masks[0], as_tuple=True)
    assert tight[0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]  # inclusive
    for seed in range(5):
        noisy = prompts.noisy_boxes(masks, 0.1, 3.0, generator=torch.Generator().manual_seed(seed))
        assert ((noisy - tight).abs() <= 3.0 + 1e-5).all()
        assert (noisy[:, 2] >= noisy[:, 0]).all() and (noisy[:, 3] >= noisy[:, 1]).all()
        assert not torch.equal(noisy, tight)
    zero = prompts.noisy_boxes(masks, 0.0, 20.0)
    assert torch.equal(zero, tight)


def test_error_points_in_error_region_with_right_labels():
    gt = _blobs(n=6, seed=1)
    pred = _blobs(n=6, seed=2)
    pred[3] = gt[3]  # no error at all for mask 3
    for seed in range(5):
        pts, labels = prompts.error_points(pred, gt, torch.Generator().manual_seed(seed))
        for i, ((x, y), lab) in enumerate(zip(pts.long().tolist(), labels.tolist(), strict=True)):
            if i == 3:
                assert lab == -1
                continue
            assert bool(pred[i, y, x] ^ gt[i, y, x])  # inside the error region
            assert lab == float(gt[i, y, x])  # positive where missed, negative where spilled


def test_mask_only_rounds_follow_the_paper():
    assert prompts.mask_only_rounds(1) == set()
    for seed in range(10):
        quiet = prompts.mask_only_rounds(11, torch.Generator().manual_seed(seed))
        assert 10 in quiet and len(quiet) == 2 and 0 not in quiet
    with pytest.raises(InputError):
        prompts.mask_only_rounds(0)


def test_warmup_cosine_schedule_by_hand():
    from segany.train.optim import warmup_cosine

    f = [warmup_cosine(s, total_steps=14, warmup_steps=4, min_ratio=0.2) for s in range(16)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up, reaching 1
    assert f[9] == pytest.approx(0.2 + 0.8 * 0.5)  # half-way through the cosine
    assert f[14] == f[15] == pytest.approx(0.2)  # the floor at and after the end
    assert all(a >= b for a, b in zip(f[4:], f[5:], strict=False))
    # Distillation's form: no floor, no warm-up.
    assert warmup_cosine(0, total_steps=10, warmup_steps=0) == pytest.approx(1.0)
    assert warmup_cosine(10, total_steps=10, warmup_steps=0) == pytest.approx(0.0)
