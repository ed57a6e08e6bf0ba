"""Model in the loop: annotate a collection, fine-tune on the result, annotate again.

Round ``r`` (0 .. rounds) annotates the collection with model ``r`` into ``OUT/round_r/`` (an
ordinary, resumable engine output) and measures model ``r`` on a held-out annotated set; for
``r < rounds`` it then fine-tunes model ``r`` on that output with ``segany.train``'s recipe,
giving model ``r + 1`` (``OUT/round_r/model.safetensors``). ``OUT/rounds.json`` reports per
round the masks per image and the held-out quality: single-point mIoU (``evaluate_points``)
and the automatic masks' average recall (``evaluate_auto``, with the run's generator settings).

A re-run skips finished engine runs and trained models, so the whole loop is resumable too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from segany.atomic import write_json_atomic
from segany.engine.annotate import decode_image
from segany.engine.check import iter_documents
from segany.engine.run import EngineConfig, run_engine
from segany.engine.sources import list_items
from segany.errors import InputError
from segany.train.datasets import MaskDataset

if TYPE_CHECKING:
    from segany.modeling import Sam

#: Held-out detection budget for the automatic recall.
AR_BUDGET = 100


class EngineTrainSet(MaskDataset):
    """An engine output as training data: its masks, with the images read from the sources
    the run was made from (tar members included). Images without masks are left out."""

    def __init__(self, out: str | Path, sources: list[str], image_size: int, **kwargs) -> None:
        super().__init__(image_size, **kwargs)
        by_key = {it.key: it for it in list_items(sources)}
        for entry, doc in iter_documents(out):
            if doc["annotations"]:
                self.items.append((by_key[entry["key"]], doc))
        if not self.items:
            raise InputError(f"{out} has no image with masks to train on")

    def load(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        from segany.masks import decode_rle

        item, doc = self.items[index]
        image = decode_image(item.image.read(), item.key)
        return image, [decode_rle(a["segmentation"]) for a in doc["annotations"]]


@dataclass
class RoundConfig:
    """``engine``: the run settings (its ``out`` is replaced per round; its model is round 0's).
    ``heldout``: an SA-1B folder or COCO JSON (``segany.evaluate.open_dataset`` forms).
    ``train``: ``TrainConfig`` fields for each fine-tuning (e.g. steps, batch_size, lr)."""

    engine: EngineConfig
    out: str
    heldout: str
    rounds: int = 1
    train: dict[str, Any] = field(default_factory=dict)
    heldout_limit: int | None = None


def run_rounds(config: RoundConfig) -> list[dict[str, Any]]:
    """Annotate -> fine-tune -> re-annotate ``config.rounds`` times; return one row per round."""
    if config.rounds < 0:
        raise InputError(f"rounds must be at least 0, got {config.rounds}")
    out = Path(config.out)
    model: str | None = config.engine.spec.model
    rows = []
    for r in range(config.rounds + 1):
        folder = out / f"round_{r}"
        spec = dataclasses.replace(config.engine.spec, model=model)
        engine = dataclasses.replace(config.engine, out=str(folder / "annotations"), spec=spec)
        summary = run_engine(engine)
        row: dict[str, Any] = {
            "round": r,
            "model": model or "(bundled)",
            "images": summary["annotated"],
            "masks": summary["masks"],
            "masks_per_image": summary["masks_per_image"],
            **_heldout_quality(config, spec),
        }
        if r < config.rounds:
            trained = folder / "model.safetensors"
            if not trained.is_file():
                _fine_tune(config, spec.model, engine, folder, trained)
            model = str(trained)
        rows.append(row)
        write_json_atomic(out / "rounds.json", {"rounds": rows}, indent=1)
    return rows


def _heldout_quality(config: RoundConfig, spec: Any) -> dict[str, Any]:
    import torch

    from segany.automatic import MaskGenerator
    from segany.checkpoints import load_model
    from segany.evaluate import evaluate_auto, evaluate_points, open_dataset, subset
    from segany.inference.predictor import Predictor

    torch.set_num_threads(spec.threads)
    model = cast("Sam", load_model(spec.model, progress=False))
    data = subset(open_dataset(config.heldout), config.heldout_limit)
    points = evaluate_points(Predictor(model), data, bootstrap=0)
    options = dict(spec.options)
    generator = MaskGenerator.for_model(model, spec.preset, **options)
    auto = evaluate_auto(generator, data, max_dets=[AR_BUDGET], bootstrap=0)
    return {
        "heldout_images": len(data),
        "point_miou": round(float(points.miou), 4),
        f"ar@{AR_BUDGET}": round(float(auto.metrics[f"ar@{AR_BUDGET}"].value), 4),
    }


def _fine_tune(
    config: RoundConfig, model_name: str | None, engine: EngineConfig, folder: Path, dest: Path
) -> None:
    from segany.checkpoints import load_model, save_model
    from segany.models import config_of
    from segany.train.trainer import TrainConfig, Trainer

    model = load_model(model_name, progress=False)
    train_cfg = TrainConfig(**{"progress": False, **config.train, "out_dir": str(folder / "train")})
    msc = config_of(model)
    data = EngineTrainSet(
        engine.out,
        engine.sources,
        msc.image_size,
        masks_per_image=train_cfg.masks_per_image,
        flip=True,
        pixel_mean=msc.pixel_mean,
        pixel_std=msc.pixel_std,
    )
    trainer = Trainer(model, train_cfg, data)
    trainer.fit()
    save_model(trainer.model.eval(), dest)
