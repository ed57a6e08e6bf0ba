"""The app's COCO-polygon export of one stored mask: decoded whole and traced, against cut to
its box from the RLE's runs and traced there (``segany.server.export_formats._boxed``).

    python benchmarks/bench_export_polygons.py

Masks: a small disk (a twentieth of the shorter side in radius), a large disk (most of the
image) and a ragged disk (a band of 5 % speckle across it), on 1.5, 12 and 100 MP images, and
a speckle mask over a whole 1.5 MP image (a worst case for the run parse). Each the mean of 3
runs; the polygons are compared, they must be equal. Prints the load average before and after.
"""

from __future__ import annotations

import os
import time

import numpy as np


def main() -> None:
    from segany.masks import decode_rle, encode_rle
    from segany.rle_windows import crop_rle, rle_box_area
    from segany.server.export_formats import coco_polygons

    def boxed(rle: dict) -> list:
        h, w = rle["size"]
        (x, y, bw, bh), _ = rle_box_area(rle, trusted=True)
        x0, y0, x1, y1 = max(0, x - 1), max(0, y - 1), min(w, x + bw + 1), min(h, y + bh + 1)
        rings = coco_polygons(decode_rle(crop_rle(rle, (x0, y0, x1, y1)), trusted=True)) or []
        return [[v + (x0 if i % 2 == 0 else y0) for i, v in enumerate(r)] for r in rings]

    def timed(call, rle: dict) -> tuple[float, list]:  # noqa: ANN001
        t = time.perf_counter()
        for _ in range(3):
            out = call(rle)
        return (time.perf_counter() - t) / 3, out

    rng = np.random.default_rng(0)
    print(f"load average before {os.getloadavg()[0]:.2f}")
    print("| mask | image MP | RLE chars | whole s | boxed s |")
    print("|---|---:|---:|---:|---:|")
    cases = []
    for h, w in ((1000, 1500), (3000, 4000), (10000, 10000)):
        yy, xx = np.ogrid[:h, :w]
        small = (yy - h // 2) ** 2 + (xx - w // 3) ** 2 <= (min(h, w) // 20) ** 2
        big = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= (min(h, w) / 2.2) ** 2
        ragged = (yy - h // 2) ** 2 + (xx - w // 3) ** 2 <= (min(h, w) // 6) ** 2
        r = min(h, w) // 6
        band = ragged[h // 2 : h // 2 + r // 3, w // 3 : w // 3 + 2 * r]
        band ^= rng.random(band.shape) < 0.05
        cases += [("small disk", small), ("large disk", big), ("ragged disk", ragged)]
    cases.append(("speckle, 30 %", rng.random((1000, 1500)) < 0.3))
    for name, mask in cases:
        rle = encode_rle(mask)
        whole_s, whole = timed(lambda r: coco_polygons(decode_rle(r, trusted=True)) or [], rle)
        boxed_s, cut = timed(boxed, rle)
        assert cut == whole, name
        mp = mask.size / 1e6
        print(f"| {name} | {mp:g} | {len(rle['counts'])} | {whole_s:.4f} | {boxed_s:.4f} |")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
