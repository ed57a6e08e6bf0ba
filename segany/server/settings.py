"""The settings of one ``segany serve`` run, checked once at start."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from segany.errors import InputError
from segany.inference.precision import check_precision
from segany.limits import MAX_RAISED_PIXELS

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServerSettings:
    """project_dir: the project folder (created if missing); db_url: any SQLAlchemy URL
    (default: SQLite ``annotations.db`` in the project); model: what ``load_model`` takes
    (None: the bundled model); token: required on every request when set (and whenever
    ``host`` is not a loopback address).

    Limits: ``max_upload_bytes`` per uploaded file, ``max_pixels`` per image (decompression
    bombs) or per window of a large image, ``max_large_pixels`` per large image (above
    ``max_pixels``, worked on by windows: ``segany.server.windows``; 0: none accepted),
    ``max_convert_pixels`` per large image in another format (PNG, JPEG, ...: decoded whole
    once, about 6 bytes a pixel, 8 if EXIF-turned, and kept as a tiled TIFF in the project's
    ``large/``; 0:
    refused),
    ``embedding_cache`` embeddings kept in memory (each is C×h×w float32).
    ``precision``: the image encoder's mode (``segany.inference.precision``; the decoder is fp32).
    ``cache``: the shared on-disk embedding cache the encoder also reads and fills (a folder;
    None: ``$SEGANY_CACHE`` when set; False: none), besides the project's own embeddings.
    ``refine``: decoded masks are snapped to the image's edges (``segany.refine``) unless a
    request says otherwise. ``zoom_clicks``: each corrective click is answered on a crop
    around the mask it corrects, this margin times its side on each side (``segany.zoom``;
    None: off). ``classes_file``: classes added to the project's label set when it opens
    (``segany.server.classes``). ``users_file``: users added to the project's team when it
    opens (``segany.server.users``; a project with users needs a sign-in). ``prefill_tile``:
    pre-fill images larger than this side (px; 0: the model's input size; None: never) tile by
    tile, ``prefill_tile_overlap`` px shared (None: a quarter of a tile), as ``segany auto
    --tile`` (``ModelHub.prefill``). ``db_timeout``: seconds a
    request waits for a locked SQLite database or a PostgreSQL connection before it answers 503
    (the database is unavailable, nothing was saved)."""

    project_dir: Path
    db_url: str | None = None
    model: str | None = None
    device: str = "cpu"
    host: str = LOOPBACK
    port: int = 8000
    token: str | None = None
    max_upload_bytes: int = 32 * 2**20
    max_pixels: int = 40_000_000
    max_large_pixels: int = 4_000_000_000
    max_convert_pixels: int = 300_000_000
    embedding_cache: int = 16
    prefill_points_per_side: int | None = 16  # a 16×16 grid: 4× faster than 32×32 on CPU
    prefill_tile: int | None = None
    prefill_tile_overlap: int | None = None
    precision: str = "fp32"
    cache: str | Path | bool | None = None
    refine: bool = False
    zoom_clicks: float | None = None
    classes_file: Path | None = None
    users_file: Path | None = None
    db_timeout: float = 30.0
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "project_dir", Path(self.project_dir).resolve())
        if not 0 < self.db_timeout < float("inf"):
            raise InputError(f"db_timeout must be a number of seconds > 0, got {self.db_timeout}")
        if self.max_upload_bytes < 1 or self.max_pixels < 1 or self.embedding_cache < 1:
            raise InputError("max_upload_bytes, max_pixels and embedding_cache must be ≥ 1")
        if not 0 <= self.max_large_pixels <= MAX_RAISED_PIXELS:
            raise InputError(
                f"max_large_pixels must be 0 to {MAX_RAISED_PIXELS} (COCO RLE counts are 32-bit), "
                f"got {self.max_large_pixels}"
            )
        if not 0 <= self.max_convert_pixels <= MAX_RAISED_PIXELS:
            raise InputError(
                f"max_convert_pixels must be 0 to {MAX_RAISED_PIXELS}, "
                f"got {self.max_convert_pixels}"
            )
        check_precision(self.precision)
        if self.prefill_tile is not None and self.prefill_tile < 0:
            raise InputError(f"the pre-fill's tile side must be ≥ 0 px, got {self.prefill_tile}")
        if self.prefill_tile_overlap is not None:
            if self.prefill_tile is None:
                raise InputError("a pre-fill tile overlap goes with a pre-fill tile side")
            if self.prefill_tile_overlap < 0:
                raise InputError(
                    f"the pre-fill's tile overlap must be ≥ 0 px, got {self.prefill_tile_overlap}"
                )
        if self.zoom_clicks is not None and not 0 <= self.zoom_clicks < float("inf"):
            raise InputError(f"the click zoom margin must be a number ≥ 0, got {self.zoom_clicks}")
        if self.token is not None and len(self.token) < 8:
            raise InputError("the token must be at least 8 characters long")
        if not is_loopback(self.host) and not self.token:
            raise InputError(
                f"--host {self.host} exposes the server beyond this machine: give a token "
                "(--token or the SEGANY_TOKEN environment variable)"
            )

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.project_dir / 'annotations.db'}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
