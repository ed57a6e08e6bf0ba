"""Decoupled encoder distillation: a small image encoder learns a larger model's embeddings.

The student's image encoder is trained with MSE against the teacher's image embeddings on
unlabelled images (the recipe behind the lightweight SAMs); the prompt encoder and mask decoder
are then copied from the teacher, so the student works with the teacher's decoder as is. The two
models must share the embedding grid (the prompt width and the embedding grid's side); the
student may have another input size, in which case both see the same image resized for each.

SAM 2 / 2.1 teachers: the student is a SAM 2 model too (another Hiera, say), both read the
image as SAM 2 does (stretched to the square frame), and the student learns the teacher's
packed high-resolution features (``encoder.pack_high_res``, which SAM 2's decoder also reads)
beside the embedding: the loss is the sum of the two mean squared errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F

from segany.errors import InputError
from segany.formats.datasets import load_rgb
from segany.formats.images import IMAGE_SUFFIXES
from segany.modeling.sam2_model import Sam2
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
    """H×W×3 uint8 images -> B×3×S×S encoder input, as ``model`` reads an image."""
    cfg = config_of(model)
    if model.is_sam2:  # stretched to the frame, SAM 2's transforms
        sam2 = cast(Sam2, model)
        pixels = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
        return torch.cat([sam2.prepare_image(x[None]) for x in pixels])
    return torch.stack(
        [
            prepare(im, [], cfg.image_size, False, cfg.pixel_mean, cfg.pixel_std).image
            for im in images
        ]
    )


def _encode(model: Sam, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """B×3×S×S -> (B×C×h×w embeddings, SAM 2's B×2h×2w×E packed high-resolution features or
    None for the other models)."""
    if not model.is_sam2:
        return model.image_encoder(x), None
    return cast(Sam2, model).encode(x)


def _loss(pred: tuple[torch.Tensor, torch.Tensor | None], target: tuple) -> torch.Tensor:
    loss = F.mse_loss(pred[0].float(), target[0])
    if pred[1] is not None:
        loss = loss + F.mse_loss(pred[1].float(), target[1])
    return loss


def _check(teacher: Sam, student: Sam) -> None:
    if teacher.is_sam2 != student.is_sam2:
        raise InputError(
            "a SAM 2 teacher needs a SAM 2 student (its decoder reads the high-resolution "
            "features), and a SAM 2 student a SAM 2 teacher"
        )
    if teacher.is_sam2 and teacher.early_shape != student.early_shape:
        raise InputError(
            f"student high-resolution features {student.early_shape} must match the "
            f"teacher's {teacher.early_shape}"
        )
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
    # teacher outputs are fixed: compute each once (embedding, SAM 2's high-res map or None)
    cache: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    history: list[float] = []
    for _ in range(cfg.steps):
        idx = rng.integers(len(images), size=min(cfg.batch_size, len(images)))
        pics = [_load(images[int(i)]) for i in idx]
        with torch.no_grad():
            missing = [int(i) for i in idx if int(i) not in cache]
            if missing:
                x = _batch(teacher, [_load(images[i]) for i in missing]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    emb, high = _encode(teacher, x)
                for k, i in enumerate(missing):
                    cache[i] = (emb[k].float(), None if high is None else high[k].float())
            found = [cache[int(i)] for i in idx]
            highs = [f[1] for f in found if f[1] is not None]
            target = (torch.stack([f[0] for f in found]), torch.stack(highs) if highs else None)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = _encode(student, _batch(student, pics).to(device))
        loss = _loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
    student.eval()
    return history


@torch.no_grad()
def embedding_mse(teacher: Sam, student: Sam, images: Sequence[Path | np.ndarray]) -> float:
    """Mean squared error between the two encoders' outputs over ``images`` (fp32): the
    embeddings, plus the high-resolution features' for SAM 2 (the distillation loss)."""
    _check(teacher, student)
    errs = []
    for im in images:
        pic = [_load(im)]
        device = next(teacher.parameters()).device
        t = _encode(teacher, _batch(teacher, pic).to(device))
        s = _encode(student, _batch(student, pic).to(device))
        target = (t[0].float(), None if t[1] is None else t[1].float())
        errs.append(float(_loss(s, target)))
    return float(np.mean(errs))
