"""Which torch devices segany can run on here, checked before a model is moved to one."""

from __future__ import annotations

from typing import Any

import torch

from segany.errors import InputError

_EXPECTED = "expected cpu, cuda, cuda:N or mps"


def check_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device`` when this machine has it, else an ``InputError`` that
    says what is available (instead of torch's AssertionError deep inside ``.to()``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise InputError(f"device {device!r} is not a torch device ({e}); {_EXPECTED}") from None
    if dev.type == "meta":
        raise InputError(f"device {device!r} holds no data and cannot run a model; {_EXPECTED}")
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise InputError(f"device {device!r}: torch has one CPU device; use 'cpu'")
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {device!r}: CUDA is not available here; use 'cpu'")
        if dev.index is not None and dev.index >= count:
            raise InputError(
                f"device {device!r}: only {count} CUDA device(s) here (cuda:0 to cuda:{count - 1})"
            )
        return dev
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise InputError(f"device {device!r}: no {dev.type} device is available here; use 'cpu'")
    return dev
