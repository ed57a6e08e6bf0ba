# ruff: noqa: E501 - one table row per line reads best
"""The hardening tally's targets (issue 37): over every hostile input of ``hostile_tally`` (the
fuzz tables, the inputs issues 11 and 37 list, generated bad values for each option and flag),
no crash or hang, at most 3 % of answers unclear by the stated rule, every valid input
accepted, and no input accepted beyond the reviewed leniencies below.

The rule itself is tested first on messages the issues quote, so the tally cannot pass by a
rule that calls everything clear.
"""

from __future__ import annotations

import pytest
from hostile_tally import all_rows, classify_message, summarise, tally

# Inputs the tally's generated rows expect refused that segany accepts on purpose: each a
# leniency the official package shares or whose meaning is unambiguous (said why).
LENIENCIES = {
    # Any finite threshold is meaningful: <= 0 keeps every mask, a huge one none (official).
    "MaskGenerator(pred_iou_thresh=-1)": "any finite number, as officially",
    "MaskGenerator(pred_iou_thresh=10**30)": "any finite number, as officially",
    "MaskGenerator(stability_score_offset=10**30)": "an offset >= 0; huge ones keep no mask",
    "MaskGenerator(min_mask_region_area=10**30)": "an area >= 0, as officially (no upper bound)",
    "Predictor(cache_size=10**30)": "a most-entries bound; entries are made one image at a time",
    # Flags read for their truth value, as the official predictor reads them.
    **{
        f"predict({flag}={value})": "read as a truth value, as officially"
        for flag in ("multimask_output", "return_logits")
        for value in ("'yes'", "2", "None", "[True]")
    },
    "predict(hq_token_only=None)": "read as a truth value",
    "decode_rle(counts an int)": "one run length: 4 on a 2×2 mask is 4 background pixels",
}


@pytest.mark.parametrize(
    "message, subjects, typed, failed",
    [
        # What issue 37 quotes as unclear: each fails at least one test of the rule.
        ("'str' object has no attribute 'device'", ("model",), False, {"typed", "names the input", "says what is expected", "user's language"}),
        ("'>' not supported between instances of 'str' and 'int'", ("cache_size",), False, {"typed", "names the input", "user's language"}),
        ("[Errno 36] File name too long: 'aaaa.png'", ("aaaa.png",), True, {"user's language"}),
        ("integer modulo by zero", ("patch_size",), False, {"typed", "names the input", "says what is expected", "user's language"}),
        ("invalid literal for int() with base 10: 'abc'", ("abc",), True, {"says what is expected", "user's language"}),
        ("not enough values to unpack (expected 2, got 0)", ("bomb.pth",), False, {"typed", "names the input", "user's language"}),
        ("'ascii' codec can't encode character", ("counts",), True, {"names the input", "user's language"}),
        # And clear answers segany gives.
        ("points_per_side must be an integer in [1, 1024], got 3000", ("points_per_side",), True, set()),
        ("image file not found: /x/nope.png", ("nope.png",), True, set()),
        ("[Errno 20] /x/a_file is a file, not a folder to write into", ("a_file",), True, set()),
    ],
)  # fmt: skip
def test_the_rule(message, subjects, typed, failed):
    assert set(classify_message(message, subjects, typed)) == failed


def test_the_table_is_whole():
    rows = all_rows()
    assert len({(r.kind, r.id) for r in rows}) == len(rows), "row ids must be unique"
    assert len(rows) >= 500, len(rows)  # the issue's harness had 553; ours may not shrink
    origins = {(r.kind, r.origin) for r in rows}
    kinds = ("api table", "listed", "generated", "cli table")
    assert {o for _, o in origins} == set(kinds), origins
    assert set(LENIENCIES) <= {r.id for r in rows}


@pytest.mark.slow  # ~700 inputs, command-line rows load a model each: 1-3 min on 2 loaded cores
def test_the_tally_meets_the_issue_targets(tmp_path):
    outcomes = tally(tmp_path)
    counts = summarise(outcomes)
    crashed = [(o.row.id, o.message) for o in outcomes if o.verdict == "crash"]
    assert not crashed
    refused_valid = [o.row.id for o in outcomes if "valid input refused" in o.failed_tests]
    assert not refused_valid
    accepted = {o.row.id for o in outcomes if o.verdict == "accepted"}
    assert accepted <= set(LENIENCIES), sorted(accepted - set(LENIENCIES))
    unclear = [(o.row.id, o.message, o.failed_tests) for o in outcomes if o.verdict == "unclear"]
    assert counts["unclear"] <= 0.03 * counts["inputs"], unclear
