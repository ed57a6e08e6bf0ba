"""Pictures of masks on the real evaluation set: the model beside the classical baselines.

For each chosen object: the image around it with the ground truth outlined (yellow), then the
model's mask, its mask refined with the image as guide (``segany.refine``; boxes answered on a
zoomed crop, ``segany.zoom``, then refined) and a baseline's mask (red fill, click or box drawn
in cyan), each with its IoU.
Run from the repository root:

    python examples/eval/pictures.py OUT.png [MODEL] [CASES] [SET]  # MODEL: default the bundled
    # CASES: IMAGE:OBJECT:point|box,... (default: CASES below); "" for the bundled model
    # SET: another evaluation folder (images/ + labels/, e.g. out/kinds/tiles); default this one
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segany.checkpoints import load_model
from segany.evaluate import center_point, mask_box, mask_iou, open_dataset
from segany.evaluate.baselines import FloodFill, GrabCut
from segany.inference.predictor import Predictor
from segany.refine import RefinedPredictor
from segany.zoom import ZoomPredictor

HERE = Path(__file__).resolve().parent
TILE = 150
# (image, object id, prompt): the sky and the dahlia from a point, roofs and coins from a box.
CASES = [
    ("flower", 1, "point"),
    ("china", 3, "point"),
    ("china", 1, "box"),
    ("coins", 7, "point"),
    ("coins", 13, "box"),
]


def _tile(image: np.ndarray, mask: np.ndarray | None, gt: np.ndarray, prompt, text: str):
    ys, xs = np.nonzero(gt)
    pad = 12
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, gt.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, gt.shape[1])
    out = image.astype(np.float32).copy()
    if mask is not None:
        out[mask] = out[mask] * 0.45 + np.array([255, 40, 40]) * 0.55
    edge = gt ^ cv2.erode(gt.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    out[edge] = (255, 255, 0)
    out = np.ascontiguousarray(out.astype(np.uint8))
    if prompt is not None and len(prompt) == 2:
        cv2.circle(out, (int(prompt[0]), int(prompt[1])), 3, (0, 255, 255), -1)
    elif prompt is not None:
        b = [int(v) for v in prompt]
        cv2.rectangle(out, (b[0], b[1]), (b[2], b[3]), (0, 255, 255), 1)
    crop = out[y0:y1, x0:x1]
    scale = TILE / max(crop.shape[:2])
    size = (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale)))
    crop = cv2.resize(crop, size)
    tile = np.zeros((TILE + 16, TILE, 3), np.uint8)
    tile[16 : 16 + crop.shape[0], : crop.shape[1]] = crop
    cv2.putText(tile, text, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1)
    return tile


def _cases(text: str | None) -> list[tuple[str, int, str]]:
    if not text:
        return CASES
    out = []
    for item in text.split(","):
        image_id, object_id, kind = item.split(":")
        if kind not in ("point", "box"):
            raise SystemExit(f"a case's prompt is 'point' or 'box', got {kind!r} in {item!r}")
        out.append((image_id, int(object_id), kind))
    return out


def main(
    out: str, model_name: str | None = None, cases: str | None = None, folder: str | None = None
) -> None:
    dataset = {s.image_id: s for s in open_dataset(folder or HERE)}
    # One predictor under both wrappers; its in-memory cache answers the second set_image, so
    # each image is encoded once.
    predictor = Predictor(load_model(model_name or None), cache_size=1)
    refined, zoomed = RefinedPredictor(predictor), RefinedPredictor(ZoomPredictor(predictor))
    wand, cut = FloodFill(), GrabCut()
    rows = []
    for image_id, object_id, kind in _cases(cases):
        sample = dataset[image_id]
        image = sample.load_image()
        gt = next(o for o in sample.objects if o.object_id == object_id).mask()
        for p in (zoomed, refined, wand, cut):  # both wrappers set the shared predictor's image
            p.set_image(image)
        if kind == "point":
            x, y = center_point(gt)
            prompt = np.array([[x, y]], np.float32)
            masks, scores, _ = predictor.predict(prompt, np.array([1]))
            mine = masks[int(np.argmax(scores))]
            masks, scores, _ = refined.predict(prompt, np.array([1]))
            better = masks[int(np.argmax(scores))]
            theirs, name = wand.predict(prompt, np.array([1]))[0][0], "flood fill"
            shown = (x, y)
        else:
            box = mask_box(gt)
            mine = predictor.predict(box=box, multimask_output=False).masks[0]
            better = zoomed.predict(box=box, multimask_output=False).masks[0]
            theirs, name = cut.predict(box=box)[0][0], "GrabCut"
            shown = box
        label = f"{image_id} #{object_id}"
        rows.append(
            np.hstack(
                [
                    _tile(image, None, gt, shown, f"{label} {kind}"),
                    _tile(image, mine, gt, shown, f"model {mask_iou(mine, gt):.2f}"),
                    _tile(image, better, gt, shown, f"refined {mask_iou(better, gt):.2f}"),
                    _tile(image, theirs, gt, shown, f"{name} {mask_iou(theirs, gt):.2f}"),
                ]
            )
        )
    Image.fromarray(np.vstack(rows)).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
