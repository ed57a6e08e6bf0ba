"""Zero-shot edge maps (issue 39): edge thinning, the BSDS scores on known answers, the recipe
on synthetic scenes of flat regions whose boundaries are known, and ``segany edges``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from segany.cli import main
from segany.errors import InputError
from segany.evaluate.edges import edge_scores
from segany.tasks.edges import EdgeOptions, edge_map, thin_edges


def scene(seed: int, h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Flat-coloured rectangles and discs on a flat background, and their boundary pixels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.int32)
    for k in range(1, 4):
        if k % 2:
            x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 50))
            cv2.rectangle(labels, (x0, y0), (x0 + int(rng.integers(30, 60)), y0 + 40), k, -1)
        else:
            centre = (int(rng.integers(30, w - 30)), int(rng.integers(30, h - 30)))
            cv2.circle(labels, centre, int(rng.integers(15, 30)), k, -1)
    palette = rng.integers(0, 255, (4, 3)).astype(np.uint8)
    boundary = np.zeros((h, w), bool)
    boundary[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    boundary[1:, :] |= labels[1:, :] != labels[:-1, :]
    return palette[labels], boundary


def test_thinning_keeps_one_pixel_across_a_step():
    step = np.zeros((20, 20), np.float32)
    step[:, 10:] = 1
    response = np.hypot(cv2.Sobel(step, cv2.CV_32F, 1, 0), cv2.Sobel(step, cv2.CV_32F, 0, 1))
    assert (response[10] > 0).sum() == 2  # Sobel answers a step on two columns
    thin = thin_edges(response / response.max())
    assert ((thin[2:-2] > 0).sum(axis=1) == 1).all()
    with pytest.raises(InputError, match="H×W"):
        thin_edges(np.zeros((2, 2, 2)))


def test_bsds_scores_on_known_answers():
    _, truth = scene(0)
    perfect = truth.astype(np.float32)
    s = edge_scores([perfect], [truth], thresholds=9)
    assert (s.ods, s.ois) == (1.0, 1.0) and s.ap == pytest.approx(1.0)
    # the tolerance is 0.0075 × the diagonal (200 px here): 1.5 px
    shifted = np.roll(perfect, 1, axis=1)  # 1 px: inside 0.0075 × 200 = 1.5 px
    assert edge_scores([shifted], [truth], thresholds=9).ods > 0.95
    far = np.roll(perfect, 5, axis=1)  # 5 px: matched only where the shift runs along an edge
    assert edge_scores([far], [truth], thresholds=9).ods < 0.6
    # half the boundary found: recall 0.5, precision 1 -> F = 2/3
    half = perfect.copy()
    half[:, 80:] = 0
    got = edge_scores([half], [truth], thresholds=9)
    found = truth[:, :80].sum() / truth.sum()
    assert got.ods == pytest.approx(2 * found / (1 + found), abs=1e-9)
    # nothing predicted scores 0; the best threshold of a graded map is found
    assert edge_scores([np.zeros_like(perfect)], [truth], thresholds=9).ods == 0.0
    noisy = 0.3 * np.random.default_rng(0).random(truth.shape).astype(np.float32) + 0.6 * perfect
    assert edge_scores([noisy], [truth], thresholds=19).ods_threshold >= 0.3
    with pytest.raises(InputError, match="one size"):
        edge_scores([perfect], [truth[:-1]])
    with pytest.raises(InputError, match="one boundary map per edge map"):
        edge_scores([perfect], [])


@pytest.mark.slow
def test_edge_maps_of_the_bundled_model_on_flat_scenes(tmp_path, capsys):
    from segany import Predictor, load_model

    predictor = Predictor(load_model(), cache=False)
    maps, truths = [], []
    for seed in range(2):
        image, truth = scene(seed)
        edges = edge_map(predictor, image, EdgeOptions(points_per_side=16))
        assert edges.shape == truth.shape and edges.max() == pytest.approx(1.0)
        maps.append(edges)
        truths.append(truth)
    scores = edge_scores(maps, truths)
    print(f"bundled model, 2 flat scenes: ODS {scores.ods:.3f} OIS {scores.ois:.3f}")
    assert scores.ods > 0.75  # measured 0.856 at 16 points per side (see docs/tasks.md)
    capsys.readouterr()

    # the command: PNGs written, scores printed from --boundaries
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    image, truth = scene(0)
    Image.fromarray(image).save(tmp_path / "img" / "a.png")
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "gt" / "a.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    code = main(
        [
            "edges",
            str(tmp_path / "img"),
            "-o",
            str(tmp_path / "out"),
            "--boundaries",
            str(tmp_path / "gt"),
            "--points-per-side",
            "8",
            "--json",
            "-q",
        ]
    )
    assert code == 1  # one image failed and was reported; the other was written
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 1 and summary["failed"] == 1 and 0 < summary["ods"] <= 1
    png = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert png.shape == truth.shape and png.max() == 255


@pytest.mark.slow
def test_refined_edge_maps_of_the_bundled_model_reach_the_target(tmp_path, capsys):
    """Issue 39's target (ODS >= 0.9 on scenes with known edges) with each mask snapped to the
    image's edges first (``--refine``, beyond the paper; the default radius, not tuned here):
    the masks' few pixels of spill over hard edges are what keep the plain recipe below it."""
    from segany import Predictor, load_model

    predictor = Predictor(load_model(), cache=False)
    plain, refined, truths = [], [], []
    for seed in range(2):
        image, truth = scene(seed)
        plain.append(edge_map(predictor, image, EdgeOptions(points_per_side=16)))
        refined.append(edge_map(predictor, image, EdgeOptions(points_per_side=16, refine=True)))
        truths.append(truth)
    before, after = edge_scores(plain, truths).ods, edge_scores(refined, truths).ods
    print(f"bundled model, 2 flat scenes: ODS {before:.3f}, refined {after:.3f}")
    assert after >= 0.9 and after > before + 0.05  # measured 0.856 -> 0.960
    with pytest.raises(InputError, match="refine_radius"):
        EdgeOptions(refine=True, refine_radius=0)
    capsys.readouterr()

    image, truth = scene(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(image).save(tmp_path / "img" / "a.png")
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "gt" / "a.png")
    argv = ["edges", str(tmp_path / "img"), "-o", str(tmp_path / "out"), "--json", "-q"]
    argv += ["--boundaries", str(tmp_path / "gt"), "--refine", "6"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    direct = edge_map(predictor, image, EdgeOptions(refine=True, refine_radius=6))
    png = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert np.array_equal(png, np.round(direct * 255).astype(np.uint8))
    assert summary["written"] == 1 and 0.8 < summary["ods"] <= 1


def test_a_large_image_is_decoded_a_few_points_a_call(monkeypatch):
    """Where 64 points' three full-size masks each would pass what one predict call may make
    (a 12 MP photo), the grid goes a few points a call, within ``MASK_PIXELS_PER_BATCH``, and
    the map is the one of the default batches (to float rounding: decoder batches differ)."""
    import segany.limits as limits
    from segany import Predictor, load_model

    predictor = Predictor(load_model(), cache=False)
    image, _ = scene(0)
    h, w = image.shape[:2]
    options = EdgeOptions(points_per_side=8, thin=False)
    want = edge_map(predictor, image, options)
    calls = []
    real = Predictor.predict_torch
    monkeypatch.setattr(
        Predictor,
        "predict_torch",
        lambda self, coords, *a, **k: calls.append(len(coords)) or real(self, coords, *a, **k),
    )
    monkeypatch.setattr(limits, "MAX_MASK_PIXELS_PER_CALL", 3 * h * w * 10)  # 64 refused
    monkeypatch.setattr(limits, "MASK_PIXELS_PER_BATCH", 3 * h * w * 8)
    got = edge_map(predictor, image, options)
    assert calls == [8] * 8
    np.testing.assert_allclose(got, want, atol=1e-5)
