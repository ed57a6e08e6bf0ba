"""The ``segany`` command, driven through subprocess (and in-process for the error table).

A small seeded model is saved once to a temporary segany .safetensors; images are tiny.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMALL as TINY
from PIL import Image

from segany.checkpoints import save_model
from segany.cli import main
from segany.models import build_sam

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_sam(TINY)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # perturb every parameter, zero-initialised ones included
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path)
    return path


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """A folder with two small images (one 16-bit gray), a corrupt one and a text file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    a = np.full((48, 64, 3), 30, np.uint8)
    a[8:30, 10:40] = (220, 60, 60)
    a[30:44, 44:60] = (40, 200, 90)
    Image.fromarray(a).save(folder / "a.png")
    b = (rng.random((40, 56)) * 65535).astype(np.uint16)
    b[10:30, 10:30] = 60000
    Image.fromarray(b).save(folder / "b.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image, and not picked up")
    return folder


def segany(*args: str, home: Path | None = None, check: int | None = 0):
    """Run the real command in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    if home is not None:
        env["SEGANY_HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-m", "segany", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    if check is not None:
        assert proc.returncode == check, proc.stderr
    return proc


def run_main(capsys, *argv) -> tuple[int, str, str]:
    """Run the command in this process (faster; for the cases beyond the subprocess ones)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors exit from inside parse_args
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def error_line(proc) -> str:
    """The stderr of a failed run: exactly one line, no traceback."""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------- segment


def test_segment_points_writes_masks_overlay_and_json(tmp_path, model_path, images):
    from segany.checkpoints import load_model
    from segany.formats import read_image, read_mask_png
    from segany.inference.predictor import Predictor
    from segany.masks import decode_rle

    out = tmp_path / "seg"
    proc = segany(
        "segment", images / "a.png", "--point", "20,15", "-p", "5,5,bg", "--multimask",
        "-o", out, "--model", model_path, "--json", "--threads", "1",
    )  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["written"] == 1 and summary["failed"] == 0
    doc = json.loads((out / "a.json").read_text())
    assert doc["prompts"] == [{"points": [[20.0, 15.0], [5.0, 5.0]], "labels": [1, 0], "box": None}]
    assert [m["candidate"] for m in doc["masks"]] == [0, 1, 2]

    # The same prompts through the library give the same masks and scores.
    predictor = Predictor(load_model(model_path))
    predictor.set_image(read_image(images / "a.png"))
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[20.0, 15.0], [5.0, 5.0]]), point_labels=np.array([1, 0])
    )
    for m, want, score in zip(doc["masks"], masks, scores, strict=True):
        png = read_mask_png(out / m["file"])
        np.testing.assert_array_equal(png, want)
        np.testing.assert_array_equal(decode_rle(m["segmentation"]), want)
        assert m["score"] == pytest.approx(float(score), abs=1e-5)
        assert m["area"] == int(want.sum())
    overlay = np.asarray(Image.open(out / "a_overlay.png"))
    assert overlay.shape == (48, 64, 3)


def test_segment_boxes_one_prompt_each(tmp_path, model_path, images):
    out = tmp_path / "seg"
    assert main(
        ["segment", str(images / "b.png"), "--box", "5,5,30,30", "--box", "20,10,50,38",
         "-o", str(out), "--model", str(model_path), "-q"]
    ) == 0  # fmt: skip
    doc = json.loads((out / "b.json").read_text())
    assert [m["prompt"] for m in doc["masks"]] == [0, 1]
    assert [p["box"] for p in doc["prompts"]] == [[5, 5, 30, 30], [20, 10, 50, 38]]
    assert sorted(p.name for p in out.iterdir()) == [
        "b.json", "b_mask0.png", "b_mask1.png", "b_overlay.png"
    ]  # fmt: skip


def test_segment_rerun_leaves_only_its_own_files(tmp_path, model_path, images):
    """A second run into the same folder with one prompt and --no-overlay: the first run's
    second mask PNG and its overlay, which no longer match STEM.json, are gone."""
    out, image = tmp_path / "seg", str(images / "b.png")
    common = ["-o", str(out), "--model", str(model_path), "-q"]
    assert main(["segment", image, "--box", "5,5,30,30", "--box", "20,10,50,38", *common]) == 0
    assert (out / "b_overlay.png").exists() and (out / "b_mask1.png").exists()
    assert main(["segment", image, "--box", "5,5,30,30", "--no-overlay", *common]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.json", "b_mask0.png"]
    assert json.loads((out / "b.json").read_text())["overlay"] is None


def test_segment_box_starting_left_of_the_image(tmp_path, model_path, images, capsys):
    # "-10,-5,30,30" starts with a minus: read as --box's value (argparse alone took it for an
    # option and exited 2), and a box partly outside the image is accepted, as officially.
    out = tmp_path / "seg"
    args = ["--box", "-10,-5,30,30", "--point", "0.5,3", "-o", out, "--model", model_path, "-q"]
    code, _, err = run_main(capsys, "segment", images / "b.png", *args)
    assert code == 0, err
    doc = json.loads((out / "b.json").read_text())
    assert doc["prompts"][0]["box"] == [-10, -5, 30, 30]
    code, _, err = run_main(capsys, "segment", images / "b.png", "-p", "-0.5,3", "-o", out)
    assert code == 3 and "point -0.5,3 lies outside" in err  # a value, refused for what it is


def test_segment_refine_writes_the_refined_masks(tmp_path, model_path, images):
    from segany.checkpoints import load_model
    from segany.formats import read_image, read_mask_png
    from segany.inference.predictor import Predictor
    from segany.refine import RefinedPredictor

    out = tmp_path / "seg"
    argv = ["segment", str(images / "b.png"), "--box", "5,5,30,30", "--refine", "2"]
    assert main([*argv, "-o", str(out), "--model", str(model_path), "-q"]) == 0
    refined = RefinedPredictor(Predictor(load_model(model_path)), radius=2)
    refined.set_image(read_image(images / "b.png"))
    want = refined.predict(box=np.array([5.0, 5.0, 30.0, 30.0]), multimask_output=False)
    np.testing.assert_array_equal(read_mask_png(out / "b_mask0.png"), want.masks[0])
    plain = refined.predictor.predict(box=np.array([5.0, 5.0, 30.0, 30.0]), multimask_output=False)
    assert not np.array_equal(plain.masks[0], want.masks[0])  # the option did something


def test_segment_folder_skips_a_corrupt_image(tmp_path, model_path, images, capsys):
    code, text, err = run_main(
        capsys, "segment", images, "-p", "5,5", "-o", tmp_path, "-m", model_path, "--json"
    )
    summary = json.loads(text)
    assert code == 1 and (summary["written"], summary["failed"]) == (2, 1)
    assert "broken.jpg" in err and "Traceback" not in err
    assert {p.name for p in tmp_path.glob("*.json")} == {"a.json", "b.json"}


# ------------------------------------------------------------------------------- errors


def test_errors_are_one_line_with_their_exit_code(tmp_path, model_path, images):
    bad = segany("segment", images / "broken.jpg", "-p", "1,1", "-o", tmp_path, "-m", model_path,
                 check=3)  # fmt: skip
    assert "broken.jpg" in error_line(bad)
    bad = segany("segment", images / "a.png", "-p", "1,one", "-o", tmp_path, check=2)
    assert "'1,one'" in error_line(bad)
    not_sam = tmp_path / "not_sam.pth"
    torch.save({"layer.weight": torch.zeros(2, 2)}, not_sam)
    bad = segany("segment", images / "a.png", "-p", "1,1", "-o", tmp_path, "-m", not_sam, check=4)
    assert "not_sam.pth" in error_line(bad)
    assert not list(tmp_path.glob("*.png"))  # nothing written


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["segment", "{img}/missing.png", "-p", "1,1"], 3, "no such file"),
        (["segment", "{img}/notes.txt", "-p", "1,1"], 3, "not an image"),
        (["segment", "{img}/a.png", "-p", "100,10"], 3, "outside the 64×48 image"),
        (["segment", "{img}/a.png", "-b", "70,50,90,60"], 3, "outside"),
        # A missing prompt or conflicting prompts: a bad command line, 2 as the README says.
        (["segment", "{img}/a.png"], 2, "at least one --point"),
        (["segment", "{img}/a.png", "-b", "1,1,5,5", "-b", "2,2,6,6", "-p", "3,3"], 2, "one --box"),
        (["segment", "{img}/a.png", "-p", "1,1,2"], 2, "LABEL"),
        (["segment", "{img}/a.png", "-b", "5,5,1,1"], 2, "X1 > X0"),
        (["segment", "{img}/a.png", "-p", "nan,1"], 2, "finite"),
        (["segment", "{img}/a.png", "-p", "1,1", "--device", "nonsense"], 3, "--device"),
        (["segment", "{img}/a.png", "-p", "1,1", "--model", "{img}/nope.pth"], 4, "nope.pth"),
        (["segment", "{img}/a.png", "-p", "1,1", "--threads", "0"], 2, "≥ 1"),
        (["auto", "{img}/a.png", "--crop-overlap-ratio", "1.5"], 2, "between 0 and 1"),
        (["auto", "{img}/a.png", "--points-per-side", "x"], 2, "whole number"),
        (["auto", "{img}/empty"], 3, "no images found"),
        (["info", "{img}/notes.txt"], 4, "notes.txt"),
        (["info", "{img}/nope"], 3, "no such file"),
        (["convert", "{img}/a.png", "{out}/x.bin"], 3, "output format"),
        (["nonsense"], 2, "invalid choice"),
    ],
)
def test_error_table(tmp_path, model_path, images, capsys, argv, code, needle):
    (images / "empty").mkdir(exist_ok=True)
    argv = [a.format(img=images, out=tmp_path) for a in argv]
    if argv[0] in ("segment", "auto"):
        argv += ["-o", str(tmp_path / "out"), *(["-m", str(model_path)] * ("--model" not in argv))]
    got, _, err = run_main(capsys, *argv)
    assert got == code, err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------- models


def test_models_info_convert(tmp_path, model_path, capsys, monkeypatch):
    home = tmp_path / "cache"
    listing = json.loads(segany("models", "--json", home=home).stdout)
    rows = {r["name"]: r for r in listing["models"]}
    assert set(rows) >= {"vit_b", "vit_l", "vit_h"}
    assert rows["vit_b"]["bytes"] == 375042383 and rows["vit_b"]["cached"] is False
    assert listing["cache"] == str(home)

    info = json.loads(segany("info", model_path, "--json").stdout)
    assert info["format"] == "segany" and info["variant"] == "test"
    model = build_sam(TINY)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())

    official = tmp_path / "tiny.pth"
    segany("convert", model_path, official, "-q")
    assert json.loads(run_main(capsys, "info", official, "--json")[1])["format"] == "official"
    hf = tmp_path / "hf"
    assert run_main(capsys, "convert", official, hf, "--format", "hf", "-q")[0] == 0
    assert (hf / "config.json").is_file()
    back = tmp_path / "back.safetensors"
    code, out, _ = run_main(capsys, "convert", hf, back, "--json")
    assert json.loads(out)["format"] == "segany"
    from segany.checkpoints import load_state_dict

    _, want = load_state_dict(model_path)
    _, got = load_state_dict(back)
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    code, _, err = run_main(capsys, "convert", model_path, back)
    assert code == 3 and "--overwrite" in err
    assert "variant" in run_main(capsys, "info", hf)[1]  # the human table on stdout


def test_models_table_and_download(tmp_path, capsys, monkeypatch):
    home = tmp_path / "cache"
    home.mkdir()
    monkeypatch.setenv("SEGANY_HOME", str(home))
    # A sparse file of the right size stands for a finished download (the size is checked).
    with (home / "sam_vit_b_01ec64.pth").open("wb") as f:
        f.truncate(375042383)
    table = run_main(capsys, "models")[1]
    line = next(row for row in table.splitlines() if row.startswith("vit_b"))
    assert "yes" in line and "375.0 MB" in line
    code, out, _ = run_main(capsys, "download", "vit_b", "--json", "-q")
    assert json.loads(out)["models"]["vit_b"] == str(home / "sam_vit_b_01ec64.pth")
    # No network here: the mirror refuses the connection -> exit 5, one line, nothing kept.
    monkeypatch.setenv("SEGANY_DOWNLOAD_BASE", "http://127.0.0.1:9/")
    proc = segany("download", "vit_l", "-q", home=home, check=5)
    assert "sam_vit_l_0b3195.pth" in error_line(proc)
    assert not (home / "sam_vit_l_0b3195.pth").exists()


# ------------------------------------------------------------------------------- auto

# Random weights keep few masks at the default thresholds, and their masks all span the image
# (box NMS would keep one): switch the filters off so that every grid mask survives.
AUTO_OPTIONS = {
    "points_per_side": 3,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}
AUTO_FLAGS = [
    "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
    "--box-nms-thresh", "1",
]  # fmt: skip


def test_every_generator_option_has_a_flag():
    import inspect

    from segany.automatic import MaskGenerator
    from segany.cli import build_parser
    from segany.cli.generator_flags import GENERATOR_OPTIONS, generator_options

    params = inspect.signature(MaskGenerator.__init__).parameters
    keywords = {
        n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    } - {"self", "model", "model_or_predictor", "predictor", "output_mode", "point_grids"}
    # --precision, --cache and --compile are model options (cli/common.py), applied through
    # the Predictor
    keywords -= {"precision", "cache", "compile"}
    assert {"--precision", "--cache", "--compile"} <= set(
        build_parser()._subparsers._group_actions[0].choices["auto"]._option_string_actions  # type: ignore[union-attr]
    )
    assert keywords <= set(GENERATOR_OPTIONS), keywords - set(GENERATOR_OPTIONS)
    parser = build_parser()
    args = parser.parse_args(["auto", "x", "-o", "y"])
    assert generator_options(args) == {}  # nothing given: the library's defaults apply
    args = parser.parse_args(["auto", "x", "-o", "y", "--crop-overlap-ratio", "512/1500"])
    assert generator_options(args) == {"crop_overlap_ratio": pytest.approx(512 / 1500)}
    args = parser.parse_args(["auto", "x", "-o", "y", "--crop-overlap-ratio", "0.25"])
    assert generator_options(args) == {"crop_overlap_ratio": 0.25}


@pytest.mark.slow
def test_auto_folder_every_format_and_skip_and_continue(tmp_path, model_path, images):
    from pycocotools.coco import COCO

    from segany.automatic import MaskGenerator
    from segany.checkpoints import load_model
    from segany.formats import (
        coco_results,
        label_map,
        read_coco,
        read_image,
        read_label_map,
        read_mask_folder,
        read_polygon_masks,
        read_sa1b,
    )

    out = tmp_path / "auto"
    cmd = ["auto", images, "-o", out, "-m", model_path, "--masks", "--label-map", "--polygons",
           "--overlay", "--coco", "--json", *AUTO_FLAGS]  # fmt: skip
    proc = segany(*cmd, check=1)  # one corrupt image: reported, skipped, counted
    summary = json.loads(proc.stdout)
    assert (summary["images"], summary["written"], summary["failed"]) == (3, 2, 1)
    assert summary["failures"][0]["file"].endswith("broken.jpg")
    assert "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr

    generator = MaskGenerator(load_model(model_path), **AUTO_OPTIONS)
    coco = COCO(str(out / "coco_instances.json"))
    assert len(coco.getImgIds()) == 2
    for stem in ("a", "b"):
        expected = np.stack(
            [r.segmentation for r in generator.generate(read_image(images / f"{stem}.png"))]
        )
        doc = read_sa1b(out / f"{stem}.json")
        assert doc.image["file_name"] == f"{stem}.png" and len(doc.annotations) >= 2
        np.testing.assert_array_equal(doc.masks(), expected)
        folder_masks, rows = read_mask_folder(out / stem)
        np.testing.assert_array_equal(folder_masks, expected)
        assert [r["id"] for r in rows] == list(range(len(expected)))
        np.testing.assert_array_equal(
            read_label_map(out / f"{stem}_labels.png"), label_map(expected)
        )
        np.testing.assert_array_equal(read_polygon_masks(out / f"{stem}.geojson"), expected)
        assert (
            Image.open(out / f"{stem}_overlay.png").size == Image.open(images / f"{stem}.png").size
        )
        image_id = next(i for i in coco.getImgIds() if coco.imgs[i]["file_name"] == f"{stem}.png")
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        np.testing.assert_array_equal(np.stack([coco.annToMask(a) for a in anns]), expected)
    detections = coco.loadRes(coco_results(read_coco(out / "coco_instances.json")))
    assert len(detections.getAnnIds()) == len(coco.getAnnIds())

    # Re-run: finished images are skipped; a deleted extra is rebuilt from STEM.json.
    (out / "a_labels.png").unlink()
    again = json.loads(segany(*cmd, check=1).stdout)
    assert (again["written"], again["skipped"], again["derived"]) == (0, 1, 1)
    np.testing.assert_array_equal(
        read_label_map(out / "a_labels.png"), label_map(read_sa1b(out / "a.json").masks())
    )
    assert len(COCO(str(out / "coco_instances.json")).getAnnIds()) == len(coco.getAnnIds())
    forced = json.loads(segany(*cmd, "--overwrite", check=1).stdout)
    assert forced["written"] == 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_auto_single_image_errors_and_outputs(tmp_path, model_path, images, capsys):
    out = tmp_path / "one"
    code, _, err = run_main(capsys, "auto", images / "broken.jpg", "-o", out, "-m", model_path)
    assert code == 3 and "broken.jpg" in err  # one image: its own exit code, not "partial"
    code, out_text, _ = run_main(
        capsys, "auto", images / "a.png", "-o", out, "-m", model_path, "--json", *AUTO_FLAGS
    )
    assert code == 0 and json.loads(out_text)["written"] == 1
    assert sorted(p.name for p in out.iterdir()) == [".segany", "a.json"]  # run files reserved
    # Other settings on a re-run: the done image is kept, and the user is told.
    code, out_text, err = run_main(
        capsys, "auto", images / "a.png", "-o", out, "-m", model_path, "--json"
    )
    assert code == 0 and json.loads(out_text)["skipped"] == 1
    assert "other options" in err and "--overwrite" in err
    code, _, err = run_main(
        capsys, "auto", images / "a.png", "-o", out, "--point-grids", images / "notes.txt"
    )
    assert code == 3 and "--point-grids" in err


def test_auto_preset(tmp_path, model_path, images, capsys):
    out = tmp_path / "preset"
    argv = ["auto", images / "a.png", "-o", out, "-m", model_path, "--json"]
    code, _, err = run_main(capsys, *argv, "--preset", "nonsense")
    assert code == 3 and "nonsense" in err
    # The SA-1B preset, made quick by flags that override it: a small grid, one crop layer.
    flags = ["--preset", "sa1b", "--points-per-side", "4", "--crop-n-layers", "1"]
    code, text, _ = run_main(capsys, *argv, *flags)
    assert code == 0
    assert json.loads(text)["options"] == {"points_per_side": 4, "crop_n_layers": 1}
    assert json.loads((out / ".segany" / "run.json").read_text())["preset"] == "sa1b"
    assert json.loads((out / "a.json").read_text())["image"]["width"] == 64


def test_collect_images_names_and_output_folder(tmp_path):
    from segany.cli.common import collect_images
    from segany.errors import InputError

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "out").mkdir()
    for name in ("x.jpg", "x.png", "y.png", "sub/z.png", "out/x_overlay.png"):
        (photos / name).write_bytes(b"")
    found = collect_images([str(photos)], recursive=True, exclude=photos / "out")
    assert [stem for _, stem in found] == ["sub/z", "x.jpg", "x.png", "y"]
    # Input inside the output folder: nothing is excluded.
    assert len(collect_images([str(photos / "sub")], exclude=tmp_path)) == 1
    with pytest.raises(InputError, match="output folder is the input folder"):
        collect_images([str(photos)], exclude=photos)
    other = tmp_path / "other"
    other.mkdir()
    (other / "y.png").write_bytes(b"")
    with pytest.raises(InputError, match="same outputs"):
        collect_images([str(photos), str(other)])


def test_auto_says_when_the_models_own_thresholds_apply(tmp_path, images, capsys):
    from segany.models import build_sam

    torch.manual_seed(0)
    model = build_sam(TINY)
    model.generator_defaults = {"pred_iou_thresh": 0.6, "stability_score_thresh": 0.8}
    path = save_model(model, tmp_path / "m")
    argv = ["auto", images / "a.png", "-m", path, "--points-per-side", "4"]
    code, _, err = run_main(capsys, *argv, "-o", tmp_path / "one")
    assert code == 0
    assert "own thresholds apply: --pred-iou-thresh 0.6, --stability-score-thresh 0.8" in err
    code, _, err = run_main(capsys, *argv, "-o", tmp_path / "two", "--pred-iou-thresh", "0.5")
    assert code == 0 and "own thresholds apply: --stability-score-thresh 0.8\n" in err


def test_auto_warns_when_no_mask_passes_the_thresholds(tmp_path, images, capsys):
    """A run that keeps nothing says which thresholds did it and how to keep more."""
    from segany.models import build_sam

    torch.manual_seed(0)
    path = save_model(build_sam(TINY), tmp_path / "m")
    argv = ["auto", images / "a.png", "-m", path, "--points-per-side", "4", "--json"]
    code, out, err = run_main(capsys, *argv, "-o", tmp_path / "strict")
    assert code == 0 and json.loads(out)["masks"] == 0
    assert "warning: no mask passed the quality thresholds (--pred-iou-thresh 0.88," in err
    loose = ("--pred-iou-thresh", "0", "--stability-score-thresh", "0")
    code, out, err = run_main(capsys, *argv, *loose, "-o", tmp_path / "loose")
    assert code == 0 and json.loads(out)["masks"] > 0 and "warning" not in err
    # Nothing segmented this time (already done): nothing to warn about.
    code, _, err = run_main(capsys, *argv, "-o", tmp_path / "strict")
    assert code == 0 and "warning" not in err
