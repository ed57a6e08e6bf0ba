"""Shared fixtures: seeded weights, small configs, and the reference package importable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The reference `segment_anything` imports torchvision, which cannot be installed beside this
# torch build; the stand-in in tests/stubs provides the two functions it uses.
_STUBS = str(Path(__file__).parent / "stubs")
if _STUBS not in sys.path:
    sys.path.insert(0, _STUBS)


@pytest.fixture(autouse=True)
def _few_threads():
    # Several suites share 2 cores; keep each test deterministic and polite.
    torch.set_num_threads(2)
    yield
