# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments
"""Every endpoint of the annotation app under a property-based API fuzzer (Schemathesis).

For each operation of the app's OpenAPI schema, Schemathesis draws requests that follow the
schema (positive) and requests that break it (negative: wrong types, missing fields, values
out of range); the app runs on SQLite and on PostgreSQL (where the machine has it). What must
hold for every answer: no 5xx (an exception reaching the test client counts as one), no stack
trace in the body, a JSON ``detail`` on every 4xx, and a 2xx body that matches the schema the
app declares. After the run, every export format is written and read back with segany's
readers: no row the fuzzer left may break a later export.

The app runs as a team project (users, sign-in), the fuzzing client signed in as its admin, so
every route's permission checks run too; after a case that signs the client out (``POST
/api/logout``) it signs in again, and a drawn user id never names that admin (a new password or
a removal would lock the fuzzer out of the rest of the run).

The draws are derandomised (the same cases on every run) and bounded: ``EXAMPLES`` per
operation and mode. So that the fuzzer reaches past "no such id", a drawn id is mapped to one
the project has (3 draws in 4; the 4th stays as drawn), and two request fields are capped to
keep the run short, not because a larger value is wrong: a retraining job's ``steps`` (2) and
a pre-fill's ``points_per_side`` (4). A server-sent event stream (``GET /api/events``) takes
no input and never ends: it is left to the server tests that listen to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from segany.masks import decode_rle, encode_rle  # noqa: E402
from tests.server_fixtures import (  # noqa: E402, F401
    LIMITS,
    coins_png,
    db_url,
    postgres_url,
    scene_png,
    tiny,
)

# Per operation and mode; SEGANY_FUZZ_EXAMPLES=200 digs deeper by hand (minutes).
EXAMPLES = int(os.environ.get("SEGANY_FUZZ_EXAMPLES", "20"))
FEWER = {"POST /api/images/{image_id}/prefill": 4, "GET /api/decoder.onnx": 2}
ID_PARAMETERS = ("image_id", "mask_id", "class_id", "job_id", "user_id")
ADMIN = {"name": "fuzz-admin", "password": "fuzz-admin-password"}
MODES = ("positive", "negative")


def _ids(client: Any, name: str) -> list[int]:
    """The ids the project has for a path parameter."""
    if name == "image_id":
        return [i["id"] for i in client.get("/api/images").json()["images"]]
    if name == "mask_id":
        images = _ids(client, "image_id")
        return [m["id"] for i in images for m in client.get(f"/api/images/{i}/masks").json()]
    if name == "class_id":
        return [c["id"] for c in client.get("/api/classes").json()]
    if name == "user_id":  # never the fuzzer's own admin
        return [u["id"] for u in client.get("/api/users").json() if u["name"] != ADMIN["name"]]
    from sqlalchemy import select

    from segany.server.db import TrainJob

    with client.app.state.segany.sessions() as s:
        return list(s.scalars(select(TrainJob.id)))


def _steer(case: Any, client: Any) -> None:
    """Point most drawn ids at existing rows; cap the two costly fields (see the docstring)."""
    for name, value in list((case.path_parameters or {}).items()):
        if name in ID_PARAMETERS and isinstance(value, int):
            ids = _ids(client, name)
            if ids and (value % 4 != 3 or (name == "user_id" and value not in ids)):
                case.path_parameters[name] = ids[value % len(ids)]
    body = case.body if isinstance(case.body, dict) else {}
    if case.path == "/api/train" and isinstance(body.get("steps"), int):
        body["steps"] = min(body["steps"], 2)
    if case.path.endswith("/prefill") and isinstance(body.get("points_per_side"), int):
        body["points_per_side"] = min(body["points_per_side"], 4)


def _problems_of(case: Any, response: Any) -> list[str]:
    status, text = response.status_code, response.content.decode("utf-8", "replace")
    found = []
    if status >= 500:
        found.append(f"{status}: {text[:200]}")
    if "Traceback" in text or 'File "/' in text:
        found.append(f"a stack trace in the body: {text[:200]}")
    if status == 401 and case.path != "/api/login":  # the admin's session is always valid
        found.append(f"401 for a signed-in admin: {text[:200]}")
    if 400 <= status < 500:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if not detail:
            found.append(f"{status} without a JSON detail: {text[:200]}")
    if 200 <= status < 300:
        try:
            case.operation.validate_response(response)
        except Exception as e:  # noqa: BLE001 - Schemathesis' conformance failure, reported
            found.append(f"{status} body does not match the schema: {str(e)[:300]}")
    return found


def _fuzz(operation: Any, mode: str, client: Any, report: Callable[[str], None]) -> None:
    from schemathesis import GenerationMode

    examples = FEWER.get(operation.label, EXAMPLES)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(operation.as_strategy(generation_mode=GenerationMode(mode)))
    def run(case: Any) -> None:
        _steer(case, client)
        try:
            cookies = {"segany_session": client.cookies.get("segany_session")}
            response = case.call(timeout=120, cookies=cookies)
        except Exception as e:  # noqa: BLE001 - an exception that reached the client: a 500
            report(f"{mode} {case.as_curl_command()[:400]}\n    raised {type(e).__name__}: {e}")
            return
        for problem in _problems_of(case, response):
            report(f"{mode} {case.as_curl_command()[:400]}\n    {problem}")
        if client.get("/api/me").json()["user"] is None:  # signed out by the case
            assert client.post("/api/login", json=ADMIN).status_code == 200

    try:
        run()
    except Unsatisfiable:
        pass  # no request breaks this operation's schema (it takes no parameters)


def _seed(client: Any) -> None:
    """A team (the fuzzer's admin, signed in, and an annotator); two images, masks with and
    without a class, a proposal, a class of its own."""
    assert client.post("/api/users", json={**ADMIN, "role": "admin"}).status_code == 201
    assert client.post("/api/login", json=ADMIN).status_code == 200
    annotator = {"name": "ann", "role": "annotator", "password": "annotator-1"}
    assert client.post("/api/users", json=annotator).status_code == 201
    images = []
    for name, data in (("coins.png", coins_png()), ("scene.png", scene_png())):
        r = client.post("/api/images", files={"file": (name, data, "image/png")})
        assert r.status_code == 201, r.text
        images.append(r.json())
    for image, label in zip(images, ("coin", ""), strict=True):
        mask = np.zeros((image["height"], image["width"]), bool)
        mask[10:40, 20:60] = True
        body = {"rle": encode_rle(mask), "origin": "clicks", "label": label}
        assert client.post(f"/api/images/{image['id']}/masks", json=body).status_code == 201
        body = {**body, "rle": encode_rle(~mask), "review": "proposed", "origin": "prefill"}
        assert client.post(f"/api/images/{image['id']}/masks", json=body).status_code == 201
    assert client.post("/api/classes", json={"name": "Åland"}).status_code == 201


def _read_back(client: Any, project: Path) -> list[str]:
    """Export every format and read each file back with segany's readers."""
    from segany.formats import read_coco, read_label_map, read_sa1b
    from segany.formats.yolo import read_labels

    found = []
    for fmt in ("sa1b", "coco", "yolo", "png"):
        for polygons in (False, True) if fmt == "coco" else (False,):
            r = client.post("/api/export", json={"format": fmt, "polygons": polygons})
            if r.status_code != 200:
                found.append(f"export {fmt}: {r.status_code} {r.text[:300]}")
                continue
            files = [project / f for f in r.json()["files"]]
            try:
                for f in files:
                    if fmt == "sa1b" and f.suffix == ".json":
                        doc = read_sa1b(f)
                        assert doc.masks().shape[0] == len(doc.annotations)
                    elif fmt == "coco" and f.suffix == ".json":
                        coco = read_coco(f)
                        for ann in coco["annotations"]:
                            if isinstance(ann["segmentation"], dict):
                                decode_rle(ann["segmentation"])
                    elif fmt == "yolo" and f.suffix == ".txt":
                        read_labels(f)
                    elif fmt == "png" and f.name.endswith(("_labels.png", "_classes.png")):
                        read_label_map(f)
                    elif f.suffix == ".json":
                        json.loads(f.read_text(encoding="utf-8"))
            except Exception as e:  # noqa: BLE001 - every unreadable file is reported
                found.append(f"export {fmt}: {f.name} does not read back: {e}")
    return found


@pytest.mark.slow
def test_every_endpoint_survives_the_fuzzer(tmp_path, tiny, db_url):
    from fastapi.testclient import TestClient

    from segany.server import ServerSettings, create_app

    project = tmp_path / "project"
    app = create_app(ServerSettings(project_dir=project, db_url=db_url, **LIMITS), model=tiny)
    client = TestClient(app)
    _seed(client)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    spec = app.openapi()["paths"]
    routes = {f"{m.upper()} {p}" for p, ops in spec.items() for m in ops}
    streams = {
        f"{m.upper()} {p}"
        for p, ops in spec.items()
        for m, op in ops.items()
        if "text/event-stream" in op.get("responses", {}).get("200", {}).get("content", {})
    }
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().label not in streams]
    assert {op.label for op in operations} | streams == routes  # every endpoint, none left out

    problems: list[str] = []
    for operation in operations:
        for mode in MODES:
            _fuzz(operation, mode, client, problems.append)
    retrainer = app.state.segany.retrainer
    if retrainer.thread is not None:
        retrainer.thread.join(timeout=300)
        assert not retrainer.thread.is_alive(), "a 2-step retraining job did not finish"
    problems += _read_back(client, project)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])
