"""``verify`` and ``stats`` of an engine output folder.

verify: the manifest is there and lists every image exactly once (annotated or failed); every
shard it names exists and matches its own index; every JSON parses as SA-1B; every RLE's runs
add up to its stated size, which is the image's size, and it decodes; annotation ids are unique
per image and image ids unique in the run; no unlisted files hide in a shard.

stats: masks per image and the mask size distribution the SA-1B paper reports (relative mask
size = sqrt(mask area / image area)), plus COCO's small/medium/large split.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segany.engine.output import ERRORS, FORMAT, MANIFEST, RUN_FILE, SHARD_INDEX
from segany.errors import InputError

#: Bins of masks per image and of relative mask size (the paper's figure uses similar ones).
MASKS_PER_IMAGE_BINS = (0, 1, 11, 51, 101, 201, 301, 501)
RELATIVE_SIZE_BINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0001)


def rle_runs(counts: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (its LEB128-like encoding, deltas
    against the run two back from the third run on)."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x = k = 0
        more = True
        while more:
            if p >= len(counts):
                raise InputError("RLE string ends inside a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise InputError(f"RLE string has a character out of range: {counts[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _shard_files(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.suffix == ".tar":
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                f = tar.extractfile(m) if m.isfile() else None
                if f is not None:
                    yield m.name, f.read()
    else:
        for file in sorted(path.rglob("*")):
            if file.is_file():
                yield file.relative_to(path).as_posix(), file.read_bytes()


def _check_doc(name: str, data: bytes) -> tuple[list[str], Any, int]:
    """Problems of one SA-1B file, its image id and its number of masks."""
    from segany.formats.sa1b import parse_sa1b
    from segany.masks import decode_rle

    try:
        doc = parse_sa1b(json.loads(data.decode("utf-8")), source=name)
        h, w = doc.size
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        return [f"{name}: does not parse as SA-1B JSON ({str(e).splitlines()[0]})"], None, 0
    problems = []
    ids = [a.get("id") for a in doc.annotations]
    if len(set(map(str, ids))) != len(ids):
        problems.append(f"{name}: annotation ids are not unique")
    for i, ann in enumerate(doc.annotations):
        rle = ann["segmentation"]
        try:
            size = [int(s) for s in rle["size"]]
            if size != [h, w]:
                raise InputError(f"stated size {size} is not the image's {[h, w]}")
            counts = rle["counts"]
            runs = rle_runs(counts) if isinstance(counts, str) else [int(c) for c in counts]
            if any(r < 0 for r in runs) or sum(runs) != h * w:
                raise InputError(f"runs add up to {sum(runs)} pixels, not {h}×{w} = {h * w}")
            mask = decode_rle(rle)
            if mask.shape != (h, w):
                raise InputError(f"decodes to {mask.shape}, not {(h, w)}")
            if "area" in ann and int(ann["area"]) != int(mask.sum()):
                raise InputError(f"area {ann['area']} but the mask has {int(mask.sum())} pixels")
        except (InputError, KeyError, TypeError, ValueError) as e:
            problems.append(f"{name}: annotation {i}: {str(e).splitlines()[0]}")
    return problems, doc.image.get("image_id"), len(doc.annotations)


def verify(out: str | Path) -> list[str]:
    """Every problem found in an engine output folder (empty: it is complete and sound)."""
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{out}: no {MANIFEST} (the run did not finish, or this is not an engine output)"]
    except ValueError as e:
        return [f"{out / MANIFEST}: not JSON ({e})"]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return [f"{out / MANIFEST}: not a {FORMAT} manifest"]
    problems: list[str] = []
    seen: dict[int, str] = {}
    image_ids: dict[str, str] = {}
    keys: set[str] = set()
    masks_total = 0
    for shard in manifest.get("shards", []):
        path = out / shard["name"]
        if not path.exists():
            problems.append(f"{shard['name']}: listed in the manifest but missing")
            continue
        try:
            files = dict(_shard_files(path))
            index = json.loads(files.pop(SHARD_INDEX).decode("utf-8"))
        except (KeyError, ValueError, OSError, tarfile.TarError) as e:
            problems.append(f"{shard['name']}: unreadable or has no valid {SHARD_INDEX} ({e})")
            continue
        if index.get("items") != shard["items"]:
            problems.append(f"{shard['name']}: its {SHARD_INDEX} does not match the manifest")
        for f in index.get("failed", []):
            if f["index"] in seen:
                problems.append(f"image {f['key']} appears twice ({seen[f['index']]})")
            seen[f["index"]] = shard["name"]
        for entry in shard["items"]:
            name = f"{shard['name']}/{entry['file']}"
            if entry["index"] in seen or entry["key"] in keys:
                problems.append(f"image {entry['key']} appears twice ({name})")
            seen[entry["index"]] = name
            keys.add(entry["key"])
            data = files.pop(entry["file"], None)
            files.pop(entry.get("image", ""), None)
            if data is None:
                problems.append(f"{name}: listed but missing")
                continue
            found, image_id, n = _check_doc(name, data)
            problems.extend(found)
            if image_id is not None:
                if str(image_id) in image_ids:
                    problems.append(
                        f"{name}: image_id {image_id} also in {image_ids[str(image_id)]}"
                    )
                image_ids[str(image_id)] = name
            if not found and n != entry["masks"]:
                problems.append(f"{name}: {n} masks but the manifest says {entry['masks']}")
            masks_total += n
        problems.extend(f"{shard['name']}/{f}: not listed in the shard's index" for f in files)
    listed = {s["name"] for s in manifest.get("shards", [])}
    if (out / "shards").is_dir():
        for p in sorted((out / "shards").iterdir()):
            name = p.relative_to(out).as_posix()
            if name not in listed:
                problems.append(f"{name}: not listed in the manifest")
    images = int(manifest.get("images", -1))
    missing = sorted(set(range(1, images + 1)) - set(seen))
    if missing:
        problems.append(f"{len(missing)} image(s) are in no shard (first index {missing[0]})")
    if manifest.get("masks") != masks_total and not problems:
        problems.append(
            f"the manifest says {manifest.get('masks')} masks, the shards hold {masks_total}"
        )
    try:
        run = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        if run.get("items") != images:
            problems.append(f"{RUN_FILE} has {run.get('items')} images, the manifest {images}")
    except (OSError, ValueError):
        problems.append(f"{RUN_FILE}: missing or not JSON")
    try:
        rows = (out / ERRORS).read_text(encoding="utf-8").splitlines()
        if len(rows) - 1 != manifest.get("failed"):
            problems.append(f"{ERRORS}: {len(rows) - 1} rows for {manifest.get('failed')} failures")
    except OSError:
        problems.append(f"{ERRORS}: missing")
    return problems


def iter_documents(out: str | Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(manifest entry, SA-1B dict) for every annotated image of a finished run."""
    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    for shard in manifest["shards"]:
        files = dict(_shard_files(out / shard["name"]))
        for entry in shard["items"]:
            yield entry, json.loads(files[entry["file"]].decode("utf-8"))


def stats(out: str | Path) -> dict[str, Any]:
    """Masks per image and relative mask sizes of an engine output (SA-1B paper style)."""
    from segany.masks import rle_area

    per_image: list[int] = []
    rel: list[float] = []
    areas: list[int] = []
    for _, doc in iter_documents(out):
        h, w = int(doc["image"]["height"]), int(doc["image"]["width"])
        per_image.append(len(doc["annotations"]))
        for ann in doc["annotations"]:
            area = ann["area"] if "area" in ann else rle_area(ann["segmentation"])
            areas.append(int(area))
            rel.append(float(np.sqrt(area / max(1, h * w))))
    counts = np.asarray(per_image, dtype=float)
    sizes = np.asarray(rel, dtype=float)

    def hist(values: np.ndarray, edges: tuple[float, ...], label: str) -> list[dict[str, Any]]:
        got, _ = np.histogram(values, bins=np.asarray(edges, dtype=float))
        total = max(1, len(values))
        return [
            {label: f"[{lo:g}, {hi:g})", "count": int(c), "fraction": round(c / total, 4)}
            for lo, hi, c in zip(edges[:-1], edges[1:], got, strict=True)
        ]

    def summary(values: np.ndarray) -> dict[str, float]:
        if len(values) == 0:
            return {}
        q = np.percentile(values, [10, 25, 50, 75, 90])
        return {
            "mean": round(float(values.mean()), 4),
            "min": round(float(values.min()), 4),
            "p10": round(float(q[0]), 4),
            "p25": round(float(q[1]), 4),
            "median": round(float(q[2]), 4),
            "p75": round(float(q[3]), 4),
            "p90": round(float(q[4]), 4),
            "max": round(float(values.max()), 4),
        }

    px = np.asarray(areas, dtype=float)
    return {
        "images": len(per_image),
        "masks": int(counts.sum()),
        "masks_per_image": summary(counts),
        "masks_per_image_histogram": hist(counts, MASKS_PER_IMAGE_BINS + (np.inf,), "masks"),
        "relative_mask_size": summary(sizes),
        "relative_mask_size_histogram": hist(sizes, RELATIVE_SIZE_BINS, "sqrt_area_fraction"),
        "coco_area": {  # COCO's ranges in pixels: small < 32², medium < 96², large
            "small": int((px < 32**2).sum()),
            "medium": int(((px >= 32**2) & (px < 96**2)).sum()),
            "large": int((px >= 96**2).sum()),
        },
    }
