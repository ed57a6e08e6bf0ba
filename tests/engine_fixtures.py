"""A small generated collection for the engine tests: synthetic scenes plus broken inputs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segany.engine import WorkerSpec
from segany.train.synth import SynthConfig, iter_scenes

#: Small generator settings: a 6×6 grid and thresholds the bundled model passes on the scenes.
OPTIONS = {"points_per_side": 6, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}
MAX_PIXELS = 150 * 150  # big.png (160×160) is over it, the scenes (≤ 96×96) are not
SPEC = WorkerSpec(options=OPTIONS, threads=1, max_pixels=MAX_PIXELS)

#: Broken inputs and the words their reason must contain.
BAD = {
    "notimage.png": "not an image",
    "trunc.jpg": "cannot decode",
    "empty.jpg": "empty",
    "big.png": "too large",
}


def scene_files(count: int, seed: int = 3) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(name, JPEG bytes, SA-1B ground truth) for ``count`` small synthetic scenes."""
    from segany.train.synth import _sa1b_record

    cfg = SynthConfig(long_side=96, min_short_side=72, max_objects=5)
    out = []
    for i, (image, masks) in enumerate(iter_scenes(seed, count, cfg)):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]))
        assert ok
        name = f"sa_{i}.jpg"
        out.append((name, buf.tobytes(), _sa1b_record(i, name, image, masks)))
    return out


def bad_files() -> dict[str, bytes]:
    good = scene_files(1, seed=99)[0][1]
    ok, big = cv2.imencode(".png", np.full((160, 160, 3), 128, np.uint8))
    assert ok
    return {
        "notimage.png": b"this is text, not pixels\n",
        "trunc.jpg": good[: len(good) // 3],
        "empty.jpg": b"",
        "big.png": big.tobytes(),
    }


def make_folder(root: Path, count: int = 6, *, with_json: bool = False) -> Path:
    """``root/imgs/sub{0,1}/sa_N.jpg`` (+ ``sa_N.json``) and ``root/imgs/bad/*``."""
    folder = root / "imgs"
    for i, (name, data, record) in enumerate(scene_files(count)):
        sub = folder / f"sub{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).write_bytes(data)
        if with_json:
            (sub / name).with_suffix(".json").write_text(json.dumps(record))
    (folder / "bad").mkdir(parents=True, exist_ok=True)
    for name, data in bad_files().items():
        (folder / "bad" / name).write_bytes(data)
    return folder


def make_tars(root: Path, count: int = 6, per_tar: int = 4) -> list[Path]:
    """SA-1B style shards ``sa_00000N.tar`` of ``sa_N.jpg`` + ``sa_N.json``; the broken files
    go into the last shard."""
    import io

    scenes = scene_files(count)
    members: list[list[tuple[str, bytes]]] = []
    for start in range(0, count, per_tar):
        part = []
        for name, data, record in scenes[start : start + per_tar]:
            part += [(name, data), (name[:-4] + ".json", json.dumps(record).encode())]
        members.append(part)
    members[-1] += list(bad_files().items())
    paths = []
    root.mkdir(parents=True, exist_ok=True)
    for n, part in enumerate(members):
        path = root / f"sa_{n:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in part:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def documents(out: Path) -> dict[str, dict[str, Any]]:
    """Image file name -> its SA-1B document, from a finished engine output."""
    from segany.engine.check import iter_documents

    docs = {}
    for _entry, doc in iter_documents(out):
        name = doc["image"]["file_name"]
        assert name not in docs, f"{name} annotated twice"
        docs[name] = doc
    return docs


def annotations_only(docs: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Documents without the run-specific image info (image ids follow the item order)."""
    return {k: v["annotations"] for k, v in sorted(docs.items())}
