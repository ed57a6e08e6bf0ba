"""Download official checkpoints into the cache: streamed, resumable, hash-checked, atomic.

The bytes go to ``<file>.part`` (kept between attempts, so a broken connection resumes with an
HTTP Range request) and are renamed to the final name only once their size and hashes match.
Nothing at the final name is ever partial, so a file found there is used as is.

A file is checked against what its publisher states: SAM's size and sha256 (Meta's release
page), or for a file kept in a git repository, the blob id that repository's tree lists for it
(git's SHA-1 of a ``blob <size>`` header, a zero byte, then the bytes); a value nobody
published is ``None``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from segany.atomic import publish
from segany.errors import DownloadError, InputError

CHECKPOINT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class CheckpointInfo:
    """Where an official checkpoint lives and how to verify it (``None``: not published)."""

    variant: str
    filename: str
    num_bytes: int | None
    sha256: str | None
    base_url: str = CHECKPOINT_BASE_URL
    git_blob: str | None = None  # the blob id of the file in its publisher's git tree

    @property
    def url(self) -> str:
        return self.base_url + self.filename


CHECKPOINTS: dict[str, CheckpointInfo] = {
    "vit_h": CheckpointInfo(
        "vit_h",
        "sam_vit_h_4b8939.pth",
        2564550879,
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "vit_l": CheckpointInfo(
        "vit_l",
        "sam_vit_l_0b3195.pth",
        1249524607,
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_b": CheckpointInfo(
        "vit_b",
        "sam_vit_b_01ec64.pth",
        375042383,
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    # MobileSAM's weights live in its repository (weights/mobile_sam.pt, unchanged since commit
    # a509aac of 2023-06-29), which publishes no size or sha256; its tree gives the blob id.
    "vit_t": CheckpointInfo(
        "vit_t",
        "mobile_sam.pt",
        None,
        None,
        base_url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/",
        git_blob="7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7",
    ),
    # EfficientViT-SAM's weights live on Hugging Face (the model zoo's links), which publishes
    # no size or sha256 beside them here.
    **{
        name: CheckpointInfo(
            name,
            f"{name}.pt",
            None,
            None,
            base_url="https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/",
        )
        for name in (
            "efficientvit_sam_l0",
            "efficientvit_sam_l1",
            "efficientvit_sam_l2",
            "efficientvit_sam_xl0",
            "efficientvit_sam_xl1",
        )
    },
}
# SAM-HQ's weights, from the Hugging Face repository its README links (lkeab/hq-sam); neither
# lists a size or sha256 for them.
_SAM_HQ_BASE = "https://huggingface.co/lkeab/hq-sam/resolve/main/"
CHECKPOINTS.update(
    {
        name: CheckpointInfo(name, f"{name}.pth", None, None, base_url=_SAM_HQ_BASE)
        for name in ("sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h", "sam_hq_vit_tiny")
    }
)
# SAM 2 (July 2024) and SAM 2.1 (September 2024): the URLs of the official download script
# (checkpoints/download_ckpts.sh in facebookresearch/sam2), which publishes no size or sha256.
_SAM2_BASES = {
    "sam2": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/",
    "sam2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/",
}
CHECKPOINTS.update(
    {
        f"{release}_hiera_{size}": CheckpointInfo(
            f"{release}_hiera_{size}", f"{release}_hiera_{size}.pt", None, None, base_url=base
        )
        for release, base in _SAM2_BASES.items()
        for size in ("tiny", "small", "base_plus", "large")
    }
)


_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where checkpoints are cached: ``$SEGANY_HOME``, else the user cache folder / segany."""
    home = os.environ.get("SEGANY_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("segany"))


def download_base(info: CheckpointInfo | None = None) -> str:
    """Base URL of an official file (``info``'s; SAM's when not given). ``$SEGANY_DOWNLOAD_BASE``
    overrides it for every file, e.g. a mirror holding them under their file names."""
    own = info.base_url if info else CHECKPOINT_BASE_URL
    base = os.environ.get("SEGANY_DOWNLOAD_BASE") or own
    return base if base.endswith("/") else base + "/"


def checkpoint_info(name: str) -> CheckpointInfo:
    try:
        return CHECKPOINTS[name]
    except KeyError:
        raise InputError(
            f"no official checkpoint named {name!r}; known: {', '.join(sorted(CHECKPOINTS))}"
        ) from None


def ensure_checkpoint(
    name: str,
    *,
    base_url: str | None = None,
    info: CheckpointInfo | None = None,
    directory: Path | None = None,
    progress: bool = True,
) -> Path:
    """Path of the official checkpoint ``name`` in the cache, downloading it when missing.

    ``info`` replaces the registry's file name, size and hashes (tests serve small files)."""
    info = info or checkpoint_info(name)
    dest = (directory or cache_dir()) / info.filename
    if dest.is_file():
        size = dest.stat().st_size
        if info.num_bytes is None or size == info.num_bytes:
            return dest
        # Not ours (we only ever rename whole, verified files): refuse rather than overwrite.
        raise DownloadError(
            f"{dest} has {size} bytes but {info.filename} has {info.num_bytes}; "
            "delete it to download the file again"
        )
    url = (base_url.rstrip("/") + "/" if base_url else download_base(info)) + info.filename
    return download(
        url,
        dest,
        sha256=info.sha256,
        num_bytes=info.num_bytes,
        git_blob=info.git_blob,
        progress=progress,
    )


def _hash_file(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest


def _git_blob_id(path: Path, size: int) -> str:
    """git's object id of the file's bytes as a blob (what a repository's tree lists)."""
    digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reject(part: Path, url: str, label: str, got: str, want: str) -> None:
    part.unlink(missing_ok=True)
    raise DownloadError(
        f"{url}: {label} {got} does not match the expected {want}; the corrupt download was deleted"
    )


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None,
    num_bytes: int | None = None,
    git_blob: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``dest`` via ``dest.part``, resuming a partial ``.part`` file.

    Raises ``DownloadError`` when the server fails, the body is shorter than announced (the
    ``.part`` stays, so calling again resumes) or a given sha256 or git blob id does not match
    (the ``.part`` is deleted, as its bytes cannot be trusted)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if num_bytes is not None and have > num_bytes:
        part.unlink()  # longer than the real file: cannot be a prefix of it
        have = 0
    digest = _hash_file(part) if have else hashlib.sha256()

    if num_bytes is None or have < num_bytes:
        request = urllib.request.Request(url, headers={"User-Agent": "segany"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not have:  # 416: nothing after our prefix; check what we have
                raise DownloadError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
            response = None
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            raise DownloadError(f"downloading {url} failed: {e}") from e
        if response is not None:
            with response:
                have, digest = _receive(response, part, have, digest, url, num_bytes, progress)

    if num_bytes is not None and have != num_bytes:
        raise DownloadError(
            f"download of {url} stopped at {have} of {num_bytes} bytes; "
            f"call again to resume from {part}"
        )
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        _reject(part, url, "sha256", digest.hexdigest(), sha256)
    if git_blob is not None and (blob := _git_blob_id(part, have)) != git_blob.lower():
        _reject(part, url, "git blob id", blob, git_blob)
    publish(part, dest)  # atomic: the final name only ever holds a verified file
    return dest


def _receive(
    response: http.client.HTTPResponse,
    part: Path,
    have: int,
    digest: hashlib._Hash,
    url: str,
    num_bytes: int | None,
    progress: bool,
) -> tuple[int, hashlib._Hash]:
    """Append the response body to ``part``; returns (bytes now held, running sha256)."""
    status = getattr(response, "status", 200)
    content_range = response.headers.get("Content-Range", "")
    if have and not (status == 206 and content_range.startswith(f"bytes {have}-")):
        # The server ignored the Range header and sends the whole file: start again.
        have, digest = 0, hashlib.sha256()
    total = num_bytes
    length = response.headers.get("Content-Length")
    if total is None and length is not None:
        total = have + int(length)
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=have,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=Path(part.name).stem,
        disable=not progress,
    )
    with part.open("ab" if have else "wb") as f, bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as e:  # timeouts, IncompleteRead
                f.flush()
                raise DownloadError(
                    f"download of {url} interrupted at {have} bytes ({e}); "
                    f"call again to resume from {part}"
                ) from e
            if not chunk:
                break
            f.write(chunk)
            digest.update(chunk)
            have += len(chunk)
            bar.update(len(chunk))
            if num_bytes is not None and have > num_bytes:
                f.close()
                part.unlink()
                raise DownloadError(f"{url} sent more than the expected {num_bytes} bytes")
    return have, digest
