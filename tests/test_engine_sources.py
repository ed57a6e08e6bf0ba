"""Engine sources: folders, globs, manifests and SA-1B tar shards give stable, sorted items."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from engine_fixtures import make_folder, make_tars

from segany.engine import list_items
from segany.engine.annotate import decode_image
from segany.engine.output import json_names
from segany.errors import InputError


def test_folder_is_recursive_sorted_and_keyed_relative(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, 4, with_json=True)
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.jpg").write_bytes(b"x")
    (folder / "notes.txt").write_text("not an image")
    items = list_items([str(folder)])
    keys = [it.key for it in items]
    assert keys == sorted(keys)
    assert "sub0/sa_0.jpg" in keys and "bad/empty.jpg" in keys
    assert not any(k.startswith(".hidden") or k.endswith(".txt") for k in keys)
    assert len(keys) == 4 + 4
    sa0 = next(it for it in items if it.key == "sub0/sa_0.jpg")
    assert sa0.annotations is not None and sa0.annotations.path.endswith("sa_0.json")
    assert sa0.image.read() == (folder / "sub0" / "sa_0.jpg").read_bytes()
    (folder / "top.jpg").write_bytes(b"x")
    assert [it.key for it in list_items([str(folder)], recursive=False)] == ["top.jpg"]


def test_glob_keys_are_relative_to_the_fixed_part(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, 4)
    items = list_items([str(folder / "**" / "sa_*.jpg")])
    assert [it.key for it in items] == [
        "sub0/sa_0.jpg",
        "sub0/sa_2.jpg",
        "sub1/sa_1.jpg",
        "sub1/sa_3.jpg",
    ]


def test_text_and_csv_manifests(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, 2)
    txt = tmp_path / "list.txt"
    txt.write_text("# my images\nimgs/sub0/sa_0.jpg\n\nimgs/missing.jpg\n")
    items = list_items([str(txt)])
    assert [it.key for it in items] == ["imgs/missing.jpg", "imgs/sub0/sa_0.jpg"]
    assert items[1].image.read() == (folder / "sub0" / "sa_0.jpg").read_bytes()
    csv = tmp_path / "list.csv"
    csv.write_text(f"id,path\nfirst,{folder / 'sub0' / 'sa_0.jpg'}\nsecond,imgs/sub1/sa_1.jpg\n")
    assert [it.key for it in list_items([str(csv)])] == ["first", "second"]


def test_tar_members_are_read_by_offset_with_their_json(tmp_path: Path) -> None:
    tars = make_tars(tmp_path / "t", 6, per_tar=4)
    items = list_items([str(t) for t in tars])
    keys = [it.key for it in items]
    assert "sa_000000/sa_0.jpg" in keys and "sa_000001/sa_5.jpg" in keys
    assert not any(k.endswith(".json") for k in keys)
    with tarfile.open(tars[0]) as tar:
        member = tar.extractfile("sa_1.jpg")
        assert member is not None
        expected = member.read()
    sa1 = next(it for it in items if it.key == "sa_000000/sa_1.jpg")
    assert sa1.image.read() == expected
    assert sa1.annotations is not None and b'"annotations"' in sa1.annotations.read()
    assert decode_image(sa1.image.read(), sa1.key).ndim == 3


def test_compressed_tar_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "shard.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("a.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(InputError, match="uncompressed"):
        list_items([str(path)])


def test_duplicate_keys_and_nothing_found_are_errors(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, 2)
    with pytest.raises(InputError, match="key"):
        list_items([str(folder), str(folder)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_items([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="no such"):
        list_items([str(tmp_path / "nope")])


def test_json_names_keep_suffix_only_on_collision() -> None:
    names = json_names(["a.jpg", "a.png", "b/c.jpg"])
    assert names == {"a.jpg": "a.jpg.json", "a.png": "a.png.json", "b/c.jpg": "b/c.json"}


@pytest.mark.parametrize(
    ("data", "words"),
    [(b"", "empty"), (b"GIF89a-nope", "not an image"), (b"plain text", "not an image")],
)
def test_decode_image_errors_say_why(data: bytes, words: str) -> None:
    with pytest.raises(InputError, match=words):
        decode_image(data, "x.jpg")
