"""The bundled segany-tiny model loads and keeps the quality its model card states."""

from __future__ import annotations

import json
from pathlib import Path

from segany.checkpoints import DEFAULT_MODEL

CARD = Path(__file__).resolve().parents[1] / "MODEL_CARD.md"


def _stated() -> dict:
    """The figures MODEL_CARD.md states, from its machine-readable line."""
    for line in CARD.read_text().splitlines():
        if line.startswith("<!-- quality:"):
            return json.loads(line[len("<!-- quality:") : -len("-->")])
    raise AssertionError("MODEL_CARD.md has no '<!-- quality: {...} -->' line")


def test_bundled_model_is_tiny_and_loads_into_the_reference_modules():
    from helpers import reference_model

    from segany.checkpoints import load_model, load_state_dict

    model = load_model()
    cfg = model.config
    assert cfg.name == "tiny" and DEFAULT_MODEL.stat().st_size < 25e6
    _, state = load_state_dict(DEFAULT_MODEL)
    reference_model(cfg, {k: v.float() for k, v in state.items()})  # strict load


def test_bundled_model_reaches_its_stated_quality_on_fresh_scenes():
    import torch

    from segany.checkpoints import load_model
    from segany.train.quality import measure, synthetic_samples

    torch.manual_seed(0)
    stated = _stated()
    # 30 fresh scenes from a seed neither training nor the card's measurement used.
    result = measure(load_model(), synthetic_samples(30, seed=777))
    # A small set scatters around the card's figure: allow a margin of 0.06.
    assert result["point_miou"] >= stated["synthetic_point_miou"] - 0.06
    assert result["box_miou"] >= stated["synthetic_box_miou"] - 0.06
