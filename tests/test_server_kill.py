# ruff: noqa: F811 - pytest fixtures imported from tests.server_fixtures are test arguments
"""The server killed (SIGKILL) while it saves, and while it retrains (issue 37's faults), on
SQLite and PostgreSQL: after a restart every save that was answered is there, nothing is half
written (every mask decodes to its stored area, SQLite's integrity check passes), and the
interrupted retraining job says so while the model versions stay as they were."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")
httpx = pytest.importorskip("httpx", reason="the server extra is part of the dev extra")

from segany.masks import decode_rle, encode_rle  # noqa: E402
from tests.server_fixtures import coins_png, db_url, free_port, postgres_url  # noqa: E402, F401

pytestmark = pytest.mark.slow  # two server starts per database (model load each), ~40 s


def _start(project: Path, db: str | None, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "segany", "serve", str(project), "--port", str(port)]
    if db:
        cmd += ["--db", db]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = open(log, "a")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            httpx.get(f"{url}/api/me", timeout=5)
            return proc, url
        except httpx.HTTPError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.3)


def _rle(n: int) -> dict:
    mask = np.zeros((303, 384), bool)  # the coins photo's size
    y, x = divmod(n % 400, 20)
    mask[y * 15 : y * 15 + 10 + n % 5, x * 19 : x * 19 + 12] = True
    return encode_rle(mask)


def _saver(url: str, image_id: int, start: int, acked: list, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        n = start
        while not stop.is_set():
            body = {"rle": _rle(n), "origin": "clicks", "label": f"c{n % 3}", "seconds": 1.0}
            try:
                r = http.post(f"/api/images/{image_id}/masks", json=body)
            except httpx.HTTPError:
                return  # the server is gone: this save was never answered
            if r.status_code == 201:
                acked.append(r.json()["id"])
            n += 4


def test_kill_during_saves_and_retraining(tmp_path, db_url):
    project, log = tmp_path / "project", tmp_path / "server.log"
    proc, url = _start(project, db_url, log)
    try:
        r = httpx.post(f"{url}/api/images", files={"file": ("coins.png", coins_png())})
        image_id = r.json()["id"]
        acked: list[int] = []
        stop = threading.Event()
        savers = [
            threading.Thread(target=_saver, args=(url, image_id, k, acked, stop)) for k in range(4)
        ]
        for t in savers:
            t.start()
        while len(acked) < 40:  # well into the saves
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        stop.set()
        for t in savers:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc, url = _start(project, db_url, log)
    try:
        masks = httpx.get(f"{url}/api/images/{image_id}/masks").json()
        ids = {m["id"] for m in masks}
        assert set(acked) <= ids, "a save that was answered 201 is missing"
        assert len(ids) <= len(acked) + 4  # at most the saves in flight when it died
        for m in masks:
            assert int(decode_rle(m["rle"]).sum()) == m["area"] > 0
        if db_url is None:
            import sqlite3

            with sqlite3.connect(project / "annotations.db") as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        # A retraining job killed midway: after a restart it says it was interrupted, and the
        # project still has only the model it started with.
        body = {"steps": 100_000, "freeze": "decoder-only"}
        job = httpx.post(f"{url}/api/train", json=body).json()
        deadline = time.time() + 120
        while True:  # inside the training loop (a step takes seconds here)
            state = httpx.get(f"{url}/api/train/{job['id']}").json()
            assert state["status"] in ("queued", "running"), state
            if state["status"] == "running" and state["message"] != "exporting the annotations":
                break
            assert time.time() < deadline, f"the job never started training: {state}"
            time.sleep(0.3)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc, url = _start(project, db_url, log)
    try:
        job = httpx.get(f"{url}/api/train/{job['id']}").json()
        assert (job["status"], job["message"]) == ("failed", "interrupted by a server restart")
        assert [m["version"] for m in httpx.get(f"{url}/api/models").json()] == [0]
        assert not list((project / "models").glob("v*.safetensors"))
        assert httpx.get(f"{url}/api/project").json()["model_version"] == 0
        r = httpx.post(f"{url}/api/images/{image_id}/masks", json={"rle": _rle(3), "origin": "box"})
        assert r.status_code == 201  # and it saves again
    finally:
        proc.terminate()
        proc.wait(30)
