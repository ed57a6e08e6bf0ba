"""The training loop: SAM's recipe on any mask dataset, on CPU or GPU.

One step encodes a batch of images once and trains several masks per image through
``rounds`` simulated interactions (see ``prompts``). Everything random in a step is seeded
from ``(seed, step)``, so ``resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from segany.errors import InputError
from segany.modeling.families import family_of_module
from segany.modeling.sam2_model import Sam2
from segany.train import prompts
from segany.train.checkpointing import (
    load_train_state,
    load_weights,
    save_checkpoint,
    save_weights,
)
from segany.train.datasets import MaskDataset, collate
from segany.train.losses import LossWeights, sam_loss
from segany.train.optim import build_optimizer, set_drop_path, warmup_cosine

if TYPE_CHECKING:
    from segany.modeling import Sam
    from segany.train.embeddings import EmbeddingCache

FREEZE_OPTIONS = ("none", "encoder", "decoder-only")
CLICK_MODES = ("uniform", "center", "mixed")


@dataclass
class TrainConfig:
    """Every knob of a run; stored in the training state so a resumed run uses the same."""

    out_dir: str = "runs/train"
    steps: int = 1000
    batch_size: int = 4  # images per micro-batch
    accumulate: int = 1  # micro-batches per optimizer step
    masks_per_image: int = 8
    lr: float = 8e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 250
    weight_decay: float = 0.1
    layer_decay: float = 1.0  # < 1 for fine-tuning: earlier encoder blocks learn slower
    drop_path: float = 0.0
    clip_grad: float = 1.0
    rounds: int = 11
    grad_rounds: int = 0  # 0: every round gets gradients; k: round 0 and k-1 random others
    box_prob: float = 0.5
    box_noise: float = 0.1
    box_max_noise: float = 20.0
    # Corrective clicks: "uniform" in the error region (the paper), "center" of the largest
    # error region (what `segany eval` does), "mixed": each round draws one of the two per mask.
    click_mode: str = "uniform"
    loss: LossWeights = field(default_factory=LossWeights)
    freeze: str = "none"
    amp: bool = True  # bf16 autocast
    device: str = "auto"
    seed: int = 0
    val_every: int = 500
    val_images: int = 100
    ckpt_every: int = 200
    log_every: int = 10
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["loss"] = LossWeights(**d.get("loss", {}))
        return cls(**d)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains ``model`` (a segany ``Sam``) on ``train_set``; validates on ``val_set``.

    ``train_set`` may be an ``EmbeddingCache`` (``segany.train.embeddings``) when the image
    encoder is frozen: steps then skip the encoder and read its cached output.
    """

    def __init__(
        self,
        model: Sam,
        config: TrainConfig,
        train_set: MaskDataset | EmbeddingCache,
        val_set: MaskDataset | None = None,
    ) -> None:
        from segany.train.embeddings import EmbeddingCache

        if config.freeze not in FREEZE_OPTIONS:
            raise InputError(f"freeze must be one of {FREEZE_OPTIONS}, got {config.freeze!r}")
        if config.click_mode not in CLICK_MODES:
            raise InputError(f"click_mode must be one of {CLICK_MODES}, got {config.click_mode!r}")
        self.cached = isinstance(train_set, EmbeddingCache)
        if self.cached:
            if config.freeze == "none":
                raise InputError("cached embeddings need a frozen image encoder (--freeze)")
            cast("EmbeddingCache", train_set).check(model)
        if config.rounds < 1 or config.batch_size < 1 or config.accumulate < 1:
            raise InputError("rounds, batch_size and accumulate must be at least 1")
        if model.needs_early and self.cached:  # its decoder also reads a second encoder map
            what = "high-resolution features" if model.is_sam2 else "early feature map"
            kind = "SAM 2" if model.is_sam2 else "SAM-HQ"
            raise InputError(
                f"cached embeddings hold no {what}, which a {kind} model's decoder reads: "
                "train it from images"
            )
        self.cfg = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.train_set, self.val_set = train_set, val_set
        self.image_size = int(model.image_size)
        self._freeze()
        self.optimizer = build_optimizer(
            self.model,
            lr=config.lr,
            weight_decay=config.weight_decay,
            layer_decay=config.layer_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(
                s,
                total_steps=config.steps,
                warmup_steps=config.warmup_steps,
                min_ratio=config.min_lr_ratio,
            ),
        )
        set_drop_path(self.model, config.drop_path)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_score = -1.0
        self.out = Path(config.out_dir)

    # ---------------------------------------------------------------------------------------
    def _freeze(self) -> None:
        m, f = self.model, self.cfg.freeze
        frozen: list[torch.nn.Module] = []
        if f in ("encoder", "decoder-only"):
            frozen.append(m.image_encoder)
        if f == "decoder-only":
            frozen.append(m.prompt_encoder)
        for module in frozen:
            module.requires_grad_(False)
        self._encoder_frozen = f != "none"

    def _autocast(self):
        enabled = self.cfg.amp and (self.device.type == "cpu" or torch.cuda.is_bf16_supported())
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _batch(self, rng: np.random.Generator):
        """Images B×3×S×S (or, from a cache, embeddings B×C×h×w), masks and input sizes."""
        idx = rng.integers(len(self.train_set), size=self.cfg.batch_size)
        if self.cached:
            found = [self.train_set.get(int(i), rng) for i in idx]
            return (
                torch.stack([c.embedding for c in found]),  # type: ignore[union-attr]
                [c.masks for c in found],
                [c.input_size for c in found],
            )
        stretch = self.model.is_sam2  # SAM 2 reads an image stretched to its square frame
        data = cast("MaskDataset", self.train_set)
        return collate([data.get(int(i), rng, stretch=stretch) for i in idx])

    def _clicks(
        self, pred: torch.Tensor, gt: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrective clicks ``M×2`` XY and labels ``M`` for predictions vs ``gt`` (M×S×S)."""
        mode = self.cfg.click_mode
        pts, lbl = prompts.error_points(pred, gt, gen)  # drawn in every mode: same randomness
        if mode == "uniform":
            return pts, lbl
        take = torch.ones(gt.shape[0], dtype=torch.bool)
        if mode == "mixed":
            take = torch.rand(gt.shape[0], generator=gen) < 0.5
        cpts, clbl = prompts.center_error_points(pred[take], gt[take])
        pts[take], lbl[take] = cpts, clbl
        return pts, lbl

    # ---------------------------------------------------------------------------------------
    def _rounds_loss(
        self,
        embedding: torch.Tensor,
        gt: torch.Tensor,
        input_size: tuple[int, int],
        gen: torch.Generator,
        early: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Simulated interaction on one image: embedding 1×C×h×w, gt M×S×S bool; SAM-HQ
        models: ``early`` 1×h×w×E, the encoder's early map (the answer is SAM's mask plus the
        HQ mask, one per prompt, as the model gives it); SAM 2 models: ``early`` 1×2h×2w×E,
        the packed high-resolution features, and a box goes in as its two corner points ahead
        of the clicks (as SAM 2's predictor and training give it)."""
        cfg, m = self.cfg, self.model
        hq_args: dict[str, Any] = {}
        if early is not None:
            hq_args = {"high_res": early} if m.is_sam2 else {"interm_embeddings": [early]}
        n, s = gt.shape[0], self.image_size
        valid = torch.zeros(1, s, s, dtype=torch.bool, device=gt.device)
        valid[:, : input_size[0], : input_size[1]] = True
        use_box = bool(torch.rand((), generator=gen) < cfg.box_prob)
        boxes = None
        if use_box:
            boxes = prompts.noisy_boxes(
                gt.cpu(), cfg.box_noise, cfg.box_max_noise, input_size, gen
            ).to(gt.device)
            pts = torch.zeros(n, 0, 2, device=gt.device)
            lbl = torch.zeros(n, 0, device=gt.device)
        else:
            pts = prompts.points_in_masks(gt.cpu(), gen).to(gt.device)[:, None]
            lbl = torch.ones(n, 1, device=gt.device)
        quiet = prompts.mask_only_rounds(cfg.rounds, gen)
        if cfg.grad_rounds > 0:
            others = torch.randperm(cfg.rounds - 1, generator=gen)[: cfg.grad_rounds - 1] + 1
            grad_set = {0, *others.tolist()}
        else:
            grad_set = set(range(cfg.rounds))
        last = max(grad_set)
        dense_pe = m.prompt_encoder.get_dense_pe()
        mask_input = None
        pred = torch.zeros_like(gt)
        total = embedding.new_zeros(())
        parts = {"focal": 0.0, "dice": 0.0, "iou_mse": 0.0}
        for r in range(last + 1):
            if r > 0 and r not in quiet:
                new_pt, new_lbl = self._clicks(pred.cpu(), gt.cpu(), gen)
                pts = torch.cat([pts, new_pt.to(gt.device)[:, None]], 1)
                lbl = torch.cat([lbl, new_lbl.to(gt.device)[:, None]], 1)
            multimask = r == 0 and not use_box
            with torch.set_grad_enabled(r in grad_set and torch.is_grad_enabled()):
                with self._autocast():
                    given = (pts, lbl) if pts.shape[1] else None
                    box_arg = boxes
                    if m.is_sam2:  # a box as its two corner points, ahead of the clicks
                        coords, labels = given if given is not None else (None, None)
                        given, box_arg = Sam2.merge_boxes(coords, labels, boxes), None
                    sparse, dense = m.prompt_encoder(points=given, boxes=box_arg, masks=mask_input)
                    low, iou_pred = m.mask_decoder(
                        image_embeddings=embedding,
                        image_pe=dense_pe,
                        sparse_prompt_embeddings=sparse,
                        dense_prompt_embeddings=dense,
                        multimask_output=multimask,
                        **hq_args,
                    )
                logits = F.interpolate(low.float(), (s, s), mode="bilinear", align_corners=False)
                if r in grad_set:  # a round without gradients only feeds the next one
                    out = sam_loss(logits, gt, iou_pred, cfg.loss)
                    total = total + out.total
                    parts["focal"] += out.focal
                    parts["dice"] += out.dice
                    parts["iou_mse"] += out.iou_mse
            # Next round starts from the output the model itself ranks best.
            choice = iou_pred.detach().argmax(1)
            rows = torch.arange(n, device=gt.device)
            mask_input = low.detach()[rows, choice][:, None].float()
            pred = (logits.detach()[rows, choice] > 0) & valid
        k = len(grad_set)
        return total / k, {key: v / k for key, v in parts.items()}

    def compute_loss(
        self, images: torch.Tensor, masks: list[torch.Tensor], sizes: list, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch: images B×3×S×S (or cached embeddings B×C×h×w), masks per
        image M_i×S×S."""
        early = None
        if self.cached:
            emb = images.to(self.device)
        else:
            images = images.to(self.device)
            with torch.set_grad_enabled(not self._encoder_frozen and torch.is_grad_enabled()):
                with self._autocast():
                    x = self.model.encoder_input(images)
                    if self.model.needs_early:  # SAM-HQ's early map, SAM 2's high-res maps
                        family = family_of_module(self.model.image_encoder)
                        assert family is not None  # such models are built from a family
                        emb, early = family.forward_with_early(self.model.image_encoder, x)
                    else:
                        emb = self.model.image_encoder(x)
        count = sum(int(mk.shape[0]) for mk in masks)
        total = emb.new_zeros(()).float()
        parts = {"focal": 0.0, "dice": 0.0, "iou_mse": 0.0}
        for i, gt in enumerate(masks):
            if gt.shape[0] == 0:
                continue
            one = None if early is None else early[i : i + 1]
            loss, p = self._rounds_loss(emb[i : i + 1], gt.to(self.device), sizes[i], gen, one)
            w = gt.shape[0] / count
            total = total + loss * w
            for key in parts:
                parts[key] += p[key] * w
        return total, parts

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (``accumulate`` micro-batches); seeded by (seed, step)."""
        cfg = self.cfg
        seed = cfg.seed * 1_000_003 + self.step
        rng = np.random.default_rng([cfg.seed, self.step])
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # drop path draws from the global generator
        self.model.train()
        t0 = time.time()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, parts_sum = 0.0, {"focal": 0.0, "dice": 0.0, "iou_mse": 0.0}
        for _ in range(cfg.accumulate):
            images, masks, sizes = self._batch(rng)
            loss, parts = self.compute_loss(images, masks, sizes, gen)
            (loss / cfg.accumulate).backward()
            loss_sum += float(loss.detach()) / cfg.accumulate
            for key in parts_sum:
                parts_sum[key] += parts[key] / cfg.accumulate
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad or math.inf))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        dt = time.time() - t0
        return {
            "step": self.step,
            "loss": loss_sum,
            **parts_sum,
            "grad_norm": grad_norm,
            "lr": self.optimizer.param_groups[0]["lr"]
            / self.optimizer.param_groups[0].get("lr_scale", 1.0),
            "img_s": cfg.batch_size * cfg.accumulate / dt,
        }

    # ---------------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        from segany.train.validation import prompt_miou

        if self.val_set is None:
            return {}
        bf16 = self.cfg.amp and (self.device.type == "cpu" or torch.cuda.is_bf16_supported())
        precision = "bf16" if bf16 else "fp32"  # what training's autocast uses
        return prompt_miou(self.model, self.val_set, self.cfg.val_images, precision)

    def save(self, name: str = "checkpoint") -> Path:
        """Weights (segany safetensors) + training state (tensors + JSON), written atomically."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": self.cfg.to_dict(),
            "history": self.history,
            "best_score": self.best_score,
        }
        save_checkpoint(self.model, self.out / name, state)  # the three files as one unit
        return self.out / f"{name}.safetensors"

    def resume(self, name: str = "checkpoint") -> None:
        """Restore weights, optimizer, schedule and history saved by ``save``."""
        weights = self.out / f"{name}.safetensors"
        if not weights.exists():
            raise InputError(f"nothing to resume in {self.out} (need {weights.name} + state)")
        state = load_train_state(self.out / name)
        load_weights(self.model, weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.best_score = float(state["best_score"])

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def fit(self) -> list[dict[str, Any]]:
        """Train to ``steps``, validating and checkpointing on the way; returns the history."""
        cfg = self.cfg
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True)
        ema = None
        t_start = time.time()
        while self.step < cfg.steps:
            rec = self.train_step()
            ema = rec["loss"] if ema is None else 0.95 * ema + 0.05 * rec["loss"]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.4f}", img_s=f"{rec['img_s']:.1f}")
            if self.step % cfg.log_every == 0:
                self._log({**rec, "time": time.time() - t_start})
            if self.val_set is not None and (
                self.step % cfg.val_every == 0 or self.step == cfg.steps
            ):
                val = self.validate()
                self._log({"step": self.step, **val, "time": time.time() - t_start})
                score = sum(val.get(k, 0.0) for k in ("point_miou", "clicks3_miou", "box_miou"))
                if bar is not None:
                    bar.write(
                        f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items())
                    )
                if score > self.best_score:
                    self.best_score = score
                    save_weights(self.model, self.out / "best.safetensors")
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save()
        if bar is not None:
            bar.close()
        return self.history
