"""The annotation app on a very large image, worked on by windows (``segany.server.windows``):
what each step an annotator takes costs in time, and the process's peak memory.

    python benchmarks/bench_app_windows.py --size 20000 --work /tmp/app-windows
    python benchmarks/bench_app_windows.py --size 10000 --format jpeg --work /tmp/app-windows

1. writes a SIZE × SIZE uncompressed RGB TIFF of seeded disks and rectangles (the scene of
   ``bench_tiles_large.py``; skipped when it exists) and hard-links it into a new project;
   with ``--format jpeg`` or ``png``, that scene saved in the format (JPEG quality 90), which
   the import converts into a tiled TIFF in the project's ``large/``;
2. runs the app in this process (FastAPI's TestClient, the bundled model, fp32) and times:
   the import (header and a block-wise sha256), the overview the page opens (``?scale``),
   the windows' grid, the window at the centre (3072 px for the bundled model): its PNG, its
   embedding, a click decoded on the server in it, the mask saved through the window (pasted
   into the image's RLE), the masks listed for the window, the same window again (its
   embedding cached), a click zoomed in (a 600-px view: answered on the whole image's tile)
   and a second one on the same tile, the masks shrunk for the overview and a COCO export
   with polygons;
3. prints each step's seconds, the load average before and after, and the peak resident
   memory of the process (``ru_maxrss``).

Nothing here is a comparison: the figures are absolute (one machine, its load printed).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tiles_large import write_image  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=20000)
    p.add_argument("--work", type=Path, default=Path("/tmp/app-windows"))
    p.add_argument("--format", choices=("tiff", "jpeg", "png"), default="tiff")
    args = p.parse_args()

    import numpy as np
    from fastapi.testclient import TestClient

    from segany.masks import decode_rle
    from segany.server import ServerSettings, create_app

    args.work.mkdir(parents=True, exist_ok=True)
    image = args.work / f"scene_{args.size}.tif"
    if not image.exists():
        write_image(image, args.size)
    if args.format != "tiff":
        from PIL import Image

        from segany.limits import pixel_limit

        tiff, image = image, image.with_suffix(".jpg" if args.format == "jpeg" else ".png")
        if not image.exists():
            with pixel_limit(args.size * args.size), Image.open(tiff) as im:
                im.save(image, quality=90) if args.format == "jpeg" else im.save(image)
    project = args.work / "project"
    shutil.rmtree(project, ignore_errors=True)
    (project / "images").mkdir(parents=True)
    os.link(image, project / "images" / image.name)
    load_before = os.getloadavg()
    client = TestClient(create_app(ServerSettings(project_dir=project)))
    times: dict[str, float] = {}

    def step(name: str, call):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        r = call()
        times[name] = time.perf_counter() - t
        assert r.status_code in (200, 201), (name, r.status_code, r.text[:300])
        return r

    what = "import (header, sha256)" if args.format == "tiff" else "import (converted to TIFF)"
    r = step(what, lambda: client.post("/api/images/import", json={}))
    (row,) = r.json()["images"]
    image_id = row["id"]
    scale = -(-args.size // 2048)
    overview = f"/api/images/{image_id}/file?scale={scale}"
    step("overview (?scale)", lambda: client.get(overview))
    step("overview again (kept)", lambda: client.get(overview))
    c = args.size // 2
    url = f"/api/images/{image_id}"
    grid = step("the windows' grid", lambda: client.get(f"{url}/windows")).json()
    side = grid["side"]
    x0 = max(x for x in grid["x"] if x <= c - side // 2)
    y0 = max(y for y in grid["y"] if y <= c - side // 2)
    window = [x0, y0, x0 + side, y0 + side]
    text = ",".join(map(str, window))
    step(f"window's PNG ({side}²)", lambda: client.get(f"{url}/file?window={text}"))
    step("window's embedding", lambda: client.get(f"{url}/embedding?window={text}"))
    cx, cy = c - x0, c - y0
    click = {"points": [[cx, cy]], "labels": [1], "window": window}
    r = step("a click in the window", lambda: client.post(f"{url}/decode", json=click))
    answer = r.json()
    best = int(np.argmax(answer["scores"]))
    rle = answer["masks"][best]
    if not decode_rle(rle).any():  # (an empty answer cannot be saved: any small square)
        square = np.zeros((side, side), bool)
        square[cy : cy + 100, cx : cx + 100] = True
        from segany.masks import encode_rle

        rle = encode_rle(square)
    mask = {"rle": rle, "origin": "clicks", "window": window}
    step("save through the window", lambda: client.post(f"{url}/masks", json=mask))
    step("masks of the window", lambda: client.get(f"{url}/masks?window={text}"))
    step("same window again (cached)", lambda: client.get(f"{url}/embedding?window={text}"))
    view = [cx - 300, cy - 300, cx + 300, cy + 300]
    zoomed = {**click, "points": [[cx + 40, cy + 40]], "view": view}
    r = step("a zoomed click (image's tile)", lambda: client.post(f"{url}/decode", json=zoomed))
    assert r.json()["logits_frame"] is not None, "not answered on a tile"
    again = {**zoomed, "points": [[cx + 60, cy + 40]]}
    step("another, same tile", lambda: client.post(f"{url}/decode", json=again))
    step("masks shrunk for the overview", lambda: client.get(f"{url}/masks?scale={scale}"))
    export = {"format": "coco", "polygons": True}
    step("COCO export, polygons", lambda: client.post("/api/export", json=export))

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = image.stat().st_size / 2**30
    print(f"image {args.size}×{args.size} ({size:.2f} GiB {args.format.upper()})")
    for name, seconds in times.items():
        print(f"  {name:32s} {seconds:8.3f} s")
    from segany.server.state import state_of

    runs = state_of(client).hub.tile_runs
    print(f"tile embeddings made for the two zoomed clicks: {runs} (a mask that reaches a")
    print("  tile's inner edge is answered again on a frame that holds it)")
    print(f"peak RSS of the process {peak:.0f} MB")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
