"""The Ray executor on a local Ray instance (2 CPUs) gives the local executor's annotations."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_fixtures import SPEC, annotations_only, documents, make_tars

from segany.engine import EngineConfig, run_engine
from segany.engine.check import verify

ray = pytest.importorskip("ray", reason="Ray is the optional extra segany[ray] (in dev on CI)")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_and_local_executors_give_the_same_annotations(local_ray, tmp_path: Path) -> None:
    tars = make_tars(tmp_path / "tars", 6, per_tar=4)
    outs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        config = EngineConfig(
            [str(t) for t in tars],
            str(out),
            spec=SPEC,
            workers=2,
            executor=executor,
            shard_size=4,
            shard_kind="tar",
        )
        summary = run_engine(config)
        assert summary["executor"] == executor
        assert summary["annotated"] == 6 and summary["failed"] == 4
        assert verify(out) == []
        outs[executor] = out
    local, on_ray = (annotations_only(documents(outs[k])) for k in ("local", "ray"))
    assert local == on_ray and sum(len(v) for v in local.values()) > 0
    assert (outs["local"] / "errors.csv").read_text() == (outs["ray"] / "errors.csv").read_text()
    # Same items in the same shards: the manifests agree entry by entry.
    import json

    manifests = [json.loads((outs[k] / "manifest.json").read_text()) for k in ("local", "ray")]
    assert manifests[0] == manifests[1]


def _fake_annotator(marker: str, spec):
    """A model-free worker that dies on images named die_*: die_once only the first time."""
    import os

    def annotate(task):
        flag = Path(marker) / (task.key.replace("/", "_") + ".seen")
        if "die_always" in task.key or ("die_once" in task.key and not flag.exists()):
            flag.touch()
            os._exit(9)
        info = {"image_id": task.index, "width": 1, "height": 1, "file_name": task.file_name}
        doc = {"image": info, "annotations": []}
        return {"index": task.index, "key": task.key, "ok": True, "doc": doc}

    return annotate


@pytest.mark.slow
def test_a_dead_ray_actor_is_replaced_and_its_image_retried_once(local_ray, tmp_path: Path) -> None:
    import sys
    from functools import partial

    from ray import cloudpickle

    from segany.engine.ray_executor import RayExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers lack tests/
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "die_once.png", "die_always.png", "b.png"):
        (src / name).write_bytes(b"bytes")
    (tmp_path / "marks").mkdir()
    executor = RayExecutor(SPEC, 2, factory=partial(_fake_annotator, str(tmp_path / "marks")))
    out = tmp_path / "out"
    summary = run_engine(EngineConfig([str(src)], str(out), spec=SPEC), executor=executor)
    assert summary["annotated"] == 3 and summary["failed"] == 1
    rows = (out / "errors.csv").read_text().splitlines()
    assert len(rows) == 2 and "die_always.png" in rows[1] and "died twice" in rows[1]
