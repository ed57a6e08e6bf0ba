"""Decoupled encoder distillation: a small image encoder learns a larger model's embeddings.

The student's image encoder is trained with MSE against the teacher's image embeddings on
unlabelled images (the recipe behind the lightweight SAMs); the prompt encoder and mask decoder
are then copied from the teacher, so the student works with the teacher's decoder as is. The two
models must share the embedding grid (the prompt width and the embedding grid's side); the
student may have another input size, in which case both see the same image resized for each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from segany.errors import InputError
from segany.formats.datasets import load_rgb
from segany.formats.images import IMAGE_SUFFIXES
from segany.models import config_of
from segany.train.datasets import prepare
from segany.train.optim import warmup_cosine

if TYPE_CHECKING:
    from segany.modeling import Sam


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    copy_decoder: bool = True


def image_folder(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (sorted, recursive)."""
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images found under {root}")
    return files


def _load(path: Path | np.ndarray) -> np.ndarray:
    if isinstance(path, np.ndarray):
        return path
    return load_rgb(path)


def _batch(model: Sam, images: list[np.ndarray]) -> torch.Tensor:
    cfg = config_of(model)
    return torch.stack(
        [
            prepare(im, [], cfg.image_size, False, cfg.pixel_mean, cfg.pixel_std).image
            for im in images
        ]
    )


def _check(teacher: Sam, student: Sam) -> None:
    t, s = config_of(teacher), config_of(student)
    if (t.prompt.embed_dim, t.embedding_size) != (s.prompt.embed_dim, s.embedding_size):
        raise InputError(
            f"student embeddings {s.prompt.embed_dim}×{s.embedding_size}² must match the "
            f"teacher's {t.prompt.embed_dim}×{t.embedding_size}²"
        )


def distill_encoder(
    teacher: Sam,
    student: Sam,
    images: Sequence[Path | np.ndarray],
    cfg: DistillConfig | None = None,
) -> list[float]:
    """Train ``student.image_encoder`` on ``images``; returns the MSE of every step."""
    cfg = cfg or DistillConfig()
    _check(teacher, student)
    if not len(images):
        raise InputError("distillation needs at least one image")
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    teacher.to(device).eval().requires_grad_(False)
    student.to(device).train()
    if cfg.copy_decoder:
        student.prompt_encoder.load_state_dict(teacher.prompt_encoder.state_dict())
        student.mask_decoder.load_state_dict(teacher.mask_decoder.state_dict())
    params = list(student.image_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps)
    )
    amp = cfg.amp and (device.type == "cpu" or torch.cuda.is_bf16_supported())
    rng = np.random.default_rng(cfg.seed)
    cache: dict[int, torch.Tensor] = {}  # teacher embeddings are fixed: compute each once
    history: list[float] = []
    for _ in range(cfg.steps):
        idx = rng.integers(len(images), size=min(cfg.batch_size, len(images)))
        pics = [_load(images[int(i)]) for i in idx]
        with torch.no_grad():
            missing = [int(i) for i in idx if int(i) not in cache]
            if missing:
                x = _batch(teacher, [_load(images[i]) for i in missing]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    emb = teacher.image_encoder(x).float()
                for i, e in zip(missing, emb, strict=True):
                    cache[i] = e
            target = torch.stack([cache[int(i)] for i in idx])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = student.image_encoder(_batch(student, pics).to(device))
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(float(loss))
    student.eval()
    return history


@torch.no_grad()
def embedding_mse(teacher: Sam, student: Sam, images: Sequence[Path | np.ndarray]) -> float:
    """Mean squared error between the two encoders' embeddings over ``images`` (fp32)."""
    _check(teacher, student)
    errs = []
    for im in images:
        pic = [_load(im)]
        device = next(teacher.parameters()).device
        t = teacher.image_encoder(_batch(teacher, pic).to(device))
        s = student.image_encoder(_batch(student, pic).to(device))
        errs.append(float(F.mse_loss(s.float(), t.float())))
    return float(np.mean(errs))
