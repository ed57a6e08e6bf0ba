# ruff: noqa: E501 - one table row per line reads best
"""Hostile and broken sources for ``segany engine``: corrupt and truncated tar shards, tar
members named ``..`` or absolute, manifests with bad rows, foreign encodings, duplicate names.

``CASES``: an id, a function that writes the source into a folder, and what listing it must
give: the keys (a source that works) or a fragment of the ``InputError`` (one that cannot).
Then one engine run over the worst of them checks that nothing is written outside ``OUT``.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fixtures import scene_files

from segany.cli import main
from segany.engine import list_items
from segany.errors import InputError

JPEG = scene_files(1)[0][1]
MEMBER = 512 + 512 * -(-len(JPEG) // 512)  # a header and the data padded to 512-byte blocks


def _tar(path: Path, members: list[tuple[str, bytes]], kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            tar.addfile(info, io.BytesIO(data))
    return path


def _good_tar(d: Path) -> Path:
    return _tar(d / "sa_000000.tar", [("sa_1.jpg", JPEG), ("sa_2.jpg", JPEG), ("sa_3.jpg", JPEG)])


def _cut(d: Path, keep: int) -> Path:
    data = _good_tar(d).read_bytes()
    path = d / "cut.tar"
    path.write_bytes(data[:keep])
    return path


def _links_only(d: Path) -> Path:
    path = d / "links.tar"
    with tarfile.open(path, "w") as tar:
        link = tarfile.TarInfo("passwd.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        dev = tarfile.TarInfo("zero.jpg")
        dev.type = tarfile.CHRTYPE
        tar.addfile(dev)
    return path


def _manifest(name: str, data: bytes | str) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        (d / "imgs").mkdir(exist_ok=True)
        (d / "imgs" / "a.jpg").write_bytes(JPEG)
        path = d / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    return write


def _gzip_named_tar(d: Path) -> Path:
    path = d / "packed.tar"
    path.write_bytes(gzip.compress(_good_tar(d).read_bytes()))
    return path


# (id, writes the source, expected keys or an error fragment)
CASES: list[tuple[str, Callable[[Path], Path], list[str] | str]] = [
    ("tar: random bytes", lambda d: (d / "r.tar").write_bytes(os.urandom(4096)) and d / "r.tar", "not a readable tar file"),
    ("tar: empty file", lambda d: (d / "e.tar").write_bytes(b"") or d / "e.tar", "not a readable tar file (empty file)"),
    ("tar: gzip named .tar", _gzip_named_tar, "not a readable tar file"),
    ("tar: cut mid-member", lambda d: _cut(d, MEMBER + 512 + len(JPEG) // 2), "cut short or damaged after 2 file(s)"),
    ("tar: cut mid-header", lambda d: _cut(d, MEMBER + 100), "cut short or damaged after 1 file(s)"),
    ("tar: junk after a member", lambda d: _junk_after_first(d), "cut short or damaged after 1 file(s)"),
    ("tar: '..' member", lambda d: _tar(d / "t.tar", [("../../escape.jpg", JPEG), ("ok.jpg", JPEG)]), ["t/escape.jpg", "t/ok.jpg"]),
    ("tar: absolute member", lambda d: _tar(d / "t.tar", [("/etc/cron.d/x.jpg", JPEG)]), ["t/etc/cron.d/x.jpg"]),
    ("tar: './' and '//' members", lambda d: _tar(d / "t.tar", [("./a//b.jpg", JPEG)]), ["t/a/b.jpg"]),
    ("tar: names that meet once cleaned", lambda d: _tar(d / "t.tar", [("a.jpg", JPEG), ("./a.jpg", JPEG)]), "two inputs have the key 't/a.jpg'"),
    ("tar: two members of one name", lambda d: _tar(d / "t.tar", [("a.jpg", JPEG), ("a.jpg", JPEG)]), "comes twice"),
    ("tar: links and devices only", _links_only, "no images found"),
    ("tar: non-ASCII names", lambda d: _tar(d / "t.tar", [("café.jpg", JPEG), ("日本.jpg", JPEG)]), ["t/café.jpg", "t/日本.jpg"]),
    ("manifest: Latin-1 bytes", _manifest("m.txt", "imgs/\xe9.jpg\n".encode("latin-1")), "not UTF-8 text (byte 5"),
    ("manifest: NUL in a path", _manifest("m.txt", "imgs/a\x00.jpg\n"), "holds a NUL character"),
    ("manifest: UTF-8 byte-order mark", _manifest("m.csv", "\ufeffpath\nimgs/a.jpg\n"), ["imgs/a.jpg"]),
    ("manifest: UTF-16", _manifest("m.txt", "imgs/a.jpg\n".encode("utf-16")), "not UTF-8 text"),
    ("manifest: '..' in an id", _manifest("m.csv", "path,id\nimgs/a.jpg,../../../pwned\n"), ["pwned"]),
    ("manifest: '..' in a path", _manifest("m.txt", "../d/imgs/a.jpg\n"), ["d/imgs/a.jpg"]),
    ("manifest: an empty id", _manifest("m.csv", "path,id\nimgs/a.jpg, \n"), "is not a usable name"),
    ("manifest: a path of slashes", _manifest("m.txt", "//\n"), "is not a usable name"),
    ("manifest: a row without a path", _manifest("m.csv", "path,id\n,x\n"), "a row has no path"),
    ("manifest: only blank rows", _manifest("m.csv", "\n ,\n"), "the manifest is empty"),
    ("manifest: a path twice", _manifest("m.txt", "imgs/a.jpg\nimgs/a.jpg\n"), "comes twice"),
    ("manifest: a missing file is an item", _manifest("m.txt", "imgs/nope.jpg\n"), ["imgs/nope.jpg"]),
]  # fmt: skip


def _junk_after_first(d: Path) -> Path:
    data = bytearray(_good_tar(d).read_bytes())
    data[MEMBER : MEMBER + 512] = os.urandom(512)  # the second member's header
    path = d / "junk.tar"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("name, write, expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_source(tmp_path, name, write, expected):
    source = write(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(InputError) as info:
            list_items([str(source)])
        assert expected in str(info.value), str(info.value)
        return
    assert [it.key for it in list_items([str(source)])] == expected


def test_every_key_stays_inside_the_output_folder(tmp_path, capsys):
    # The engine writes each image's JSON at its key under OUT/shards/: the keys of a hostile
    # tar and manifest, and a member whose bytes are junk, end inside OUT, one result each.
    src = tmp_path / "src"
    src.mkdir()
    members = [("../../../escape.jpg", JPEG), ("/abs/x.jpg", JPEG), ("junk.jpg", b"\xff\xd8junk")]
    shard = _tar(src / "evil.tar", members)
    manifest = _manifest("m.csv", "path,id\nimgs/a.jpg,../../../../pwned\n")(src)
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "run" / "out"
    argv = ["engine", "run", shard, manifest, "-o", out, "--executor", "serial"]
    code = main([str(a) for a in [*argv, "--points-per-side", "2", "-q"]])
    err = capsys.readouterr().err
    assert code == 1, err  # the junk member failed, the rest were annotated
    written = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in written if out not in p.parents and p not in (out, out.parent)]
    assert not outside, outside
    jsons = sorted(
        p.relative_to(out / "shards").as_posix() for p in out.rglob("*.json") if "shards" in p.parts
    )
    assert jsons == [
        "00000/evil/abs/x.json",
        "00000/evil/escape.json",
        "00000/index.json",
        "00000/pwned.json",
    ]
    errors = (out / "errors.csv").read_text()
    assert "junk.jpg" in errors and len(errors.strip().splitlines()) == 2
