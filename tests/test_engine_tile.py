"""``segany engine run --tile`` (issue 39): each worker segments its images tile by tile with
``segany.tasks.generate_tiled``; the engine's records equal the library call's, image by image.

Two small images (one of six 192-px tiles, one within a tile) with the bundled model and a 4×4
grid, through the command line and the serial executor; and the options that do not go with
--tile are refused.
"""

from __future__ import annotations

import pytest
import torch
from helpers import disc_image
from PIL import Image

from segany import Predictor, load_model
from segany.automatic import MaskGenerator
from segany.cli import main
from segany.engine.check import iter_documents
from segany.formats import sa1b_document
from segany.tasks import generate_tiled

OPTIONS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
FLAGS = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_tile")
    folder = root / "imgs"
    folder.mkdir()
    arrays = {"a_large.png": disc_image(300, 420, 0), "b_small.png": disc_image(150, 180, 1)}
    for name, array in arrays.items():
        Image.fromarray(array).save(folder / name)
    return root, folder, arrays


def test_engine_tile_records_equal_generate_tiled(images):
    root, folder, arrays = images
    out = root / "out"
    argv = ["engine", "run", str(folder), "-o", str(out), "--executor", "serial", *FLAGS]
    assert main([*argv, "--tile", "192", "--tile-overlap", "48", "-q"]) == 0
    got = {entry["key"]: doc for entry, doc in iter_documents(out)}
    assert sorted(got) == sorted(arrays)
    torch.set_num_threads(1)
    generator = MaskGenerator.for_model(
        Predictor(load_model(), cache=False), **OPTIONS, output_mode="coco_rle"
    )
    for index, (name, array) in enumerate(sorted(arrays.items()), start=1):
        records = generate_tiled(generator, array, tile=192, overlap=48)
        want = sa1b_document(
            records, file_name=name, width=array.shape[1], height=array.shape[0], image_id=index
        ).to_dict()
        assert len(want["annotations"]) > 0
        assert got[name]["annotations"] == want["annotations"]
        assert got[name]["image"] == want["image"]
    # and a re-run with other tiles is another run (the settings record the tiles)
    assert main([*argv, "--tile", "256", "-q"]) != 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tile-overlap", "32"], "--tile-overlap goes with --tile"),
        (["--tile", "--mode", "semi"], "--tile goes with --mode auto"),
        (["--tile", "--crop-n-layers", "1"], "replaces the crop layers"),
        (["--tile", "--preset", "sa1b"], "replaces the crop layers"),
    ],
)
def test_options_that_do_not_go_with_tile_are_refused(images, extra, message, capsys):
    root, folder, _ = images
    argv = ["engine", "run", str(folder), "-o", str(root / "refused"), "--executor", "serial"]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
