"""A small seeded SAM 2.1 checkpoint for command-line and integration tests.

The official ``sam2`` package builds SAM 2.1 tiny from the config it ships (no checkpoint), the
weights get seeded noise (``helpers.perturb_``, as tests/test_modeling_sam2.py does) and the state
dict is saved the way the released files are (``{"model": state_dict}``), video weights
included. SAM 2's smallest variant is still ~39 M parameters at 1024 px: one image embedding
takes a few seconds on a CPU, so tests using it encode few images.
"""

from __future__ import annotations

from pathlib import Path

import torch

SAM21_TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def official_sam21_tiny(seed: int = 0) -> torch.nn.Module:
    """The official ``SAM2Base`` for SAM 2.1 tiny with every tensor seeded (needs ``sam2`` and
    ``hydra``: call after ``pytest.importorskip``)."""
    from helpers import perturb_
    from sam2.build_sam import build_sam2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2(SAM21_TINY_CONFIG, None, device="cpu")
    return perturb_(model, seed).eval()


def write_sam21_tiny(path: Path, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    """Save a seeded official SAM 2.1 tiny as ``{"model": state_dict}`` at ``path``; returns
    (the official model, ``path``)."""
    model = official_sam21_tiny(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return model, path
