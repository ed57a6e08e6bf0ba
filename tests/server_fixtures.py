"""Fixtures for the annotation app's tests: a project client, a PostgreSQL server, images."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def coins_png() -> bytes:
    from segany.train.realdata import coins

    image, _ = coins()
    return png_bytes(image)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for d in PG_BIN_DIRS:
        if (d / "initdb").is_file():
            return d
    return None


class PostgresServer:
    """A throwaway PostgreSQL server on a free loopback port, in a temp folder: ``start``,
    ``stop`` (fast shutdown: sessions are cut, as when a database is restarted under an app)
    and ``remove``."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            pytest.skip("no PostgreSQL binaries (initdb) on this machine; CI installs postgresql")
        pytest.importorskip("psycopg2", reason="psycopg2 is part of the dev extra")
        self.root = Path(tempfile.mkdtemp(prefix="segany-pg-"))
        data, self.port = self.root / "data", free_port()
        as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.root, "postgres", "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        run = [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        subprocess.run(run, check=True, capture_output=True)
        self.options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl = [
            *as_user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.root / "log"),
        ]
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self) -> None:
        subprocess.run(
            [*self.ctl, "-o", self.options, "-w", "start"], check=True, capture_output=True
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self.ctl, "-m", mode, "-w", "stop"], check=True, capture_output=True)

    def remove(self) -> None:
        subprocess.run([*self.ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL server the session's tests share."""
    server = PostgresServer()
    try:
        yield server.url
    finally:
        server.remove()


def reset_postgres(url: str) -> None:
    """Drop every table so each test starts from an empty database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


# ----- the app through FastAPI's test client -------------------------------------------------
LIMITS = {"max_upload_bytes": 400_000, "max_pixels": 1_000_000}


@pytest.fixture(scope="module")
def tiny():
    """The bundled model, loaded once per test module."""
    from segany import load_model

    return load_model()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request) -> str | None:
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return url


def make_client(folder: Path, model: Any, db: str | None = None, **kw: Any) -> Any:
    from fastapi.testclient import TestClient

    from segany.server import ServerSettings, create_app

    settings = ServerSettings(project_dir=folder, db_url=db, **{**LIMITS, **kw})
    return TestClient(create_app(settings, model=model))


@pytest.fixture
def client(tmp_path, tiny) -> Any:
    return make_client(tmp_path / "project", tiny)


def upload(client: Any, data: bytes | None = None, name: str = "coins.png") -> dict:
    r = client.post("/api/images", files={"file": (name, data or coins_png(), "image/png")})
    assert r.status_code == 201, r.text
    return r.json()


def click(client: Any, image_id: int, **body: Any) -> dict:
    body = body or {"points": [[150, 100]], "labels": [1]}
    r = client.post(f"/api/images/{image_id}/decode", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def add_mask(client: Any, image_id: int, rle: dict, **fields: Any) -> dict:
    body = {"rle": rle, "origin": "clicks", **fields}
    r = client.post(f"/api/images/{image_id}/masks", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def scene_png() -> bytes:
    """A synthetic scene (seed 779, the first): the bundled model's own pre-fill thresholds
    find masks on it, where the official 0.88 finds none."""
    from segany.train.synth import iter_scenes

    image, _ = next(iter(iter_scenes(779, 1)))
    return png_bytes(image)


def review(client: Any, mask: dict, state: str, reviewer: str = "rev", **fields: Any) -> dict:
    body = {"version": mask["version"], "review": state, "reviewer": reviewer, **fields}
    r = client.patch(f"/api/masks/{mask['id']}", json=body)
    assert r.status_code == 200, r.text
    return r.json()
