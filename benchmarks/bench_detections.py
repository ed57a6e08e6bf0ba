"""Detections to masks: ``segment_detections`` (all boxes of an image in batched decoder calls)
against a loop of ``Predictor.predict`` per box, both after the same ``set_image``, in one run;
and, on the same weights, the official ``segment_anything`` ``SamPredictor`` both ways: a
``predict`` per box, and all boxes in one ``predict_torch`` call (the official notebook's
batched boxes).

    python benchmarks/bench_detections.py [--model NAME_OR_PATH] [--boxes 50] [--repeats 3]

The image is the 480×512 astronaut photo; boxes are seeded random boxes inside it. Both sides
decode the same boxes to full-resolution masks and COCO-RLE-encode them (what the results file
needs); segany's two sides are checked identical before timing, and the pixels in which the
official masks differ from them are counted. The CPU and the load average are printed beside
the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "stubs")]

from bench_families import photo  # noqa: E402
from bench_speed import cpu_model, race  # noqa: E402
from helpers import reference_model  # noqa: E402

from segany import Predictor, load_model  # noqa: E402
from segany.masks import decode_rle, encode_rles  # noqa: E402
from segany.tasks import Detections, segment_detections  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="name or path (default: the bundled model)")
    ap.add_argument("--boxes", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image = photo()
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, w - 60, args.boxes), rng.uniform(0, h - 60, args.boxes)
    boxes = np.stack(
        [x0, y0, x0 + rng.uniform(20, 60, args.boxes), y0 + rng.uniform(20, 60, args.boxes)], 1
    )
    predictor = Predictor(load_model(args.model))
    predictor.set_image(image)
    dets = Detections.from_arrays(boxes)

    class _Set:  # the image is set once, outside the timing, for both sides
        def __getattr__(self, name):
            return getattr(predictor, name)

        def set_image(self, image):
            pass

    def batched():
        return segment_detections(_Set(), image, dets)

    def loop():
        return [
            encode_rles(predictor.predict(box=b, multimask_output=False).masks)[0] for b in boxes
        ]

    from segment_anything import SamPredictor

    official = SamPredictor(reference_model(predictor.model.config, predictor.model.state_dict()))
    official.set_image(image)

    def official_loop():
        return [encode_rles(official.predict(box=b, multimask_output=False)[0])[0] for b in boxes]

    def official_batch():
        inputs = official.transform.apply_boxes_torch(torch.as_tensor(boxes), (h, w))
        masks, _, _ = official.predict_torch(None, None, inputs, multimask_output=False)
        return encode_rles(masks[:, 0].numpy())

    a, b = batched(), loop()
    assert all(np.array_equal(decode_rle(x), decode_rle(y)) for x, y in zip(a.rles, b, strict=True))
    ours = np.stack([decode_rle(x) for x in a.rles])
    differ = {
        name: int(sum((decode_rle(r) != m).sum() for r, m in zip(call(), ours, strict=True)))
        for name, call in (("loop", official_loop), ("batch", official_batch))
    }
    times = race([batched, loop, official_loop, official_batch], args.repeats, warm_up=True)
    t_batched, t_loop, t_off_loop, t_off_batch = (t for t, _ in times)
    print(f"CPU: {cpu_model()}; threads {args.threads}; load {os.getloadavg()[0]:.2f}")
    print(
        f"model {args.model or 'bundled'}, {args.boxes} boxes on a {w}×{h} image (segany's masks "
        f"identical; the official ones differ in {differ['loop']} / {differ['batch']} pixels)"
    )
    print(f"official predict loop:        {t_off_loop * 1000:8.1f} ms")
    print(f"official predict_torch batch: {t_off_batch * 1000:8.1f} ms")
    print(f"per-box predict loop:         {t_loop * 1000:8.1f} ms")
    print(
        f"segment_detections:           {t_batched * 1000:8.1f} ms  ({t_loop / t_batched:.2f}× "
        f"the loop, {t_off_loop / t_batched:.2f}× the official loop, "
        f"{t_off_batch / t_batched:.2f}× the official batch)"
    )


if __name__ == "__main__":
    main()
