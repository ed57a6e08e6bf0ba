"""Weight-space interpolation of a model and its fine-tuned copy (robust fine-tuning).

Averaging the weights before and after fine-tuning, ``(1 - alpha)·start + alpha·tuned``, keeps
most of the fine-tuning's gain on the data it was tuned on and is often more robust away from
it than either end (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022,
WiSE-FT; it relies on the two being one model before and after fine-tuning). segany-tiny
v6 is v4 and v5 (v4 fine-tuned on synthetic scenes at 384 px) at ``alpha = 0.5``, the midpoint,
fixed before measuring (MODEL_CARD.md).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from segany.errors import InputError
from segany.modeling import Sam
from segany.models import build_sam


def interpolate_weights(start: Sam, tuned: Sam, alpha: float) -> Sam:
    """A new model (eval mode, fp32, on the CPU) with ``(1 - alpha)·start + alpha·tuned`` for
    every floating-point tensor; the two must share a config (same sizes, same keys). Integer
    buffers, if any, must be equal and are copied. ``alpha`` 0 gives ``start``, 1 ``tuned``.

    Thresholds a model carries for the automatic generator (``Sam.generator_defaults``)
    are not carried over: they were chosen for other weights. Choose them again for the result
    (``segany.train.calibrate``) or leave the official ones."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise InputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    cfg = start.config
    if cfg is None or tuned.config is None:
        raise InputError("interpolate_weights needs models built by segany.models.build_sam")
    if dataclasses.replace(tuned.config, name=cfg.name) != cfg:
        raise InputError(
            "the two models differ in architecture or input size "
            f"({cfg.name!r} and {tuned.config.name!r}); interpolate a model with a fine-tuned "
            "copy of itself"
        )
    a, b = start.state_dict(), tuned.state_dict()
    state = {}
    for key, x in a.items():
        y = b[key]
        if x.is_floating_point():
            state[key] = torch.lerp(x.detach().float().cpu(), y.detach().float().cpu(), alpha)
        elif torch.equal(x, y):
            state[key] = x.detach().clone().cpu()
        else:
            raise InputError(f"{key}: integer tensors differ between the two models")
    merged = build_sam(cfg)  # a new model: no generator defaults
    with torch.no_grad():
        merged.load_state_dict(state, strict=True)
    return merged.eval()
