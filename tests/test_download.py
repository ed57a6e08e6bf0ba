"""Checkpoint downloads against a local HTTP server on 127.0.0.1 (no network needed).

The server can honour or ignore Range requests, cut a body short, or send wrong bytes, and
records what it was asked, so resume, verification and the atomic rename are observable.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from segany import checkpoints
from segany.checkpoints import CheckpointInfo, download
from segany.checkpoints.download import cache_dir, download_base, ensure_checkpoint
from segany.config import DecoderConfig
from segany.errors import DownloadError
from segany.modeling.vit import ViTConfig
from segany.models import SamConfig, build_sam

PAYLOAD = bytes(range(256)) * 1500 + b"tail"  # ~384 KB, a few read chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    honour_range: bool = True
    cut_after: int | None = None  # send only this many body bytes, then drop the connection
    corrupt: bool = False  # flip bytes of the body, same length
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    bytes_sent: int = 0


def _handler(b: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            b.requests.append((self.path, self.headers.get("Range")))
            data = b.files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404)
                return
            if b.corrupt:
                data = bytes(x ^ 0xFF for x in data)
            start, status = 0, 200
            rng = self.headers.get("Range")
            if rng and b.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_error(416)
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))  # the full length, even if cut
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if b.cut_after is not None:
                body = body[: b.cut_after]
            # Counted before the write: the client can finish reading (and the test assert)
            # before this thread runs another line after it.
            b.bytes_sent += len(body)
            self.wfile.write(body)
            self.close_connection = True

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour(files={"ckpt.pth": PAYLOAD})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", behaviour
    finally:
        httpd.shutdown()
        httpd.server_close()


INFO = CheckpointInfo("vit_b", "ckpt.pth", len(PAYLOAD), SHA)


def _get(base: str, folder: Path) -> Path:
    return ensure_checkpoint("vit_b", base_url=base, info=INFO, directory=folder, progress=False)


def test_full_download(server, tmp_path):
    base, b = server
    path = _get(base, tmp_path)
    assert path == tmp_path / "ckpt.pth" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "ckpt.pth.part").exists()
    assert b.requests == [("/ckpt.pth", None)]
    # Cached: a second call does not touch the server.
    assert _get(base, tmp_path) == path and len(b.requests) == 1


def test_resume_from_partial_part_file(server, tmp_path):
    base, b = server
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD[:100_000])
    path = _get(base, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert b.requests == [("/ckpt.pth", "bytes=100000-")]
    assert b.bytes_sent == len(PAYLOAD) - 100_000


def test_resume_when_server_ignores_range_restarts_cleanly(server, tmp_path):
    base, b = server
    b.honour_range = False
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD[:100_000])
    assert _get(base, tmp_path).read_bytes() == PAYLOAD
    assert b.bytes_sent == len(PAYLOAD)


def test_complete_part_file_is_verified_and_renamed(server, tmp_path):
    base, b = server
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD)
    assert _get(base, tmp_path).read_bytes() == PAYLOAD
    assert b.bytes_sent == 0


def test_corrupt_content_is_rejected_and_deleted(server, tmp_path):
    base, b = server
    b.corrupt = True
    with pytest.raises(DownloadError, match="sha256 .* does not match"):
        _get(base, tmp_path)
    assert not (tmp_path / "ckpt.pth").exists()
    assert not (tmp_path / "ckpt.pth.part").exists()  # untrustworthy bytes are not kept
    b.corrupt = False
    assert _get(base, tmp_path).read_bytes() == PAYLOAD


def test_corrupt_partial_prefix_is_caught_by_sha256(server, tmp_path):
    base, _ = server
    (tmp_path / "ckpt.pth.part").write_bytes(b"\0" * 1000)
    with pytest.raises(DownloadError, match="sha256"):
        _get(base, tmp_path)
    assert not (tmp_path / "ckpt.pth").exists()
    assert _get(base, tmp_path).read_bytes() == PAYLOAD


def test_truncated_download_is_not_used_then_resumes(server, tmp_path):
    base, b = server
    b.cut_after = 150_000
    with pytest.raises(DownloadError, match="resume"):
        _get(base, tmp_path)
    assert not (tmp_path / "ckpt.pth").exists()  # the final name never holds a partial file
    assert (tmp_path / "ckpt.pth.part").read_bytes() == PAYLOAD[:150_000]
    b.cut_after = None
    assert _get(base, tmp_path).read_bytes() == PAYLOAD
    assert b.requests[-1] == ("/ckpt.pth", "bytes=150000-")


def test_oversized_part_file_is_discarded(server, tmp_path):
    base, _ = server
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD + b"extra")
    assert _get(base, tmp_path).read_bytes() == PAYLOAD


def test_http_error_and_unreachable_server(server, tmp_path):
    base, _ = server
    missing = CheckpointInfo("vit_b", "nope.pth", 10, "0" * 64)
    with pytest.raises(DownloadError, match="HTTP 404"):
        ensure_checkpoint("vit_b", base_url=base, info=missing, directory=tmp_path, progress=False)
    with pytest.raises(DownloadError, match="failed"):
        ensure_checkpoint(
            "vit_b", base_url="http://127.0.0.1:9/", info=INFO, directory=tmp_path, progress=False
        )
    assert not (tmp_path / "ckpt.pth").exists()


def test_wrong_sized_final_file_is_not_used_or_overwritten(server, tmp_path):
    base, _ = server
    (tmp_path / "ckpt.pth").write_bytes(b"something else")
    with pytest.raises(DownloadError, match="delete it"):
        _get(base, tmp_path)
    assert (tmp_path / "ckpt.pth").read_bytes() == b"something else"


def test_progress_bar_runs(server, tmp_path, capsys):
    base, _ = server
    ensure_checkpoint("vit_b", base_url=base, info=INFO, directory=tmp_path, progress=True)
    assert "ckpt.pth" in capsys.readouterr().err


def test_cache_dir_and_base_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGANY_HOME", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("SEGANY_HOME")
    assert cache_dir().name == "segany"
    monkeypatch.setenv("SEGANY_DOWNLOAD_BASE", "http://mirror.example/sam")
    assert download_base() == "http://mirror.example/sam/"
    monkeypatch.delenv("SEGANY_DOWNLOAD_BASE")
    assert download_base() == download.CHECKPOINT_BASE_URL


def test_load_model_by_name_downloads_into_cache(server, tmp_path, monkeypatch):
    # A small model stands in for the 375 MB vit_b file; the registry entry is patched to it.
    base, b = server
    torch.manual_seed(0)
    model = build_sam(
        SamConfig(
            "small",
            ViTConfig(64, 2, 2, (1,), image_size=256, window_size=4),
            decoder=DecoderConfig(mlp_dim=256),
        )
    )
    path = checkpoints.save_model(model, tmp_path / "src" / "small.safetensors")
    data = path.read_bytes()
    b.files["small.safetensors"] = data
    info = CheckpointInfo("vit_b", "small.safetensors", len(data), hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(download.CHECKPOINTS, "vit_b", info)
    monkeypatch.setenv("SEGANY_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SEGANY_DOWNLOAD_BASE", base)
    monkeypatch.chdir(tmp_path)  # so "vit_b" cannot be a file in the working folder
    loaded = checkpoints.load_model("vit_b", progress=False)
    assert (tmp_path / "cache" / "small.safetensors").read_bytes() == data
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    checkpoints.load_model("vit_b", progress=False)
    assert len(b.requests) == 1  # the second load used the cache
    rows = {r.name: r for r in checkpoints.cached_models()}
    assert rows["vit_b"].cached


def test_unknown_checkpoint_name():
    with pytest.raises(ValueError, match="known: .*vit_b, vit_h, vit_l"):
        download.checkpoint_info("vit_x")
