"""Print the per-kind table (examples/kinds/README.md) from ``segany eval --json -o`` reports.

python examples/kinds/table.py REPORTS_DIR   # REPORTS_DIR/KIND.json, one per kind
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (  # (heading, protocol, metric)
    ("model point", "point", "miou"),
    ("flood fill point", "floodfill:point", "miou"),
    ("GrabCut point", "grabcut:point", "miou"),
    ("model box", "box", "miou"),
    ("local GrabCut box", "grabcut:box", "miou"),
    ("model 3 clicks", "clicks", "miou@3"),
    ("flood fill 3 clicks", "floodfill:clicks", "miou@3"),
    ("model AR@100", "auto", "ar@100"),
)
KINDS = ("silhouettes", "text", "tiles", "phantoms", "lowcontrast", "photos")


def main() -> None:
    folder = Path(sys.argv[1])
    print("| kind | images | objects | " + " | ".join(c[0] for c in COLUMNS) + " | s |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    for kind in KINDS:
        path = folder / f"{kind}.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        protocols = report["protocols"]
        n = len(protocols["point"]["per_object"])
        cells = []
        for _, protocol, metric in COLUMNS:
            value = protocols.get(protocol, {}).get("metrics", {}).get(metric)
            cells.append("-" if value is None else f"{value['value']:.3f}")
        images = report["dataset"]["num_images"]
        seconds = report["seconds"]
        print(f"| {kind} | {images} | {n} | " + " | ".join(cells) + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main()
