"""Zero-shot evaluation: the paper's single-point, N-click, box and automatic-mask protocols.

from segany.evaluate import open_dataset, evaluate_points
result = evaluate_points(predictor, open_dataset("instances_val.json"))
result.miou, result.metrics["oracle_miou"]
"""

from segany.evaluate.auto import evaluate_auto, evaluate_proposals
from segany.evaluate.datasets import (
    CocoDataset,
    EvalDataset,
    EvalObject,
    LabelMapDataset,
    Sa1bDataset,
    Sample,
    open_dataset,
    subset,
)
from segany.evaluate.prompts import center_point, jitter_box, mask_box, mask_iou, next_click
from segany.evaluate.protocols import (
    evaluate_box,
    evaluate_clicks,
    evaluate_points,
    evaluate_prompts,
)
from segany.evaluate.report import (
    build_report,
    format_comparison,
    format_table,
    load_report,
    plot_clicks,
    write_report,
)
from segany.evaluate.results import Estimate, EvalResult
from segany.inference.protocol import PredictorLike

__all__ = [
    "CocoDataset",
    "EvalDataset",
    "EvalObject",
    "EvalResult",
    "Estimate",
    "LabelMapDataset",
    "PredictorLike",
    "Sa1bDataset",
    "Sample",
    "build_report",
    "center_point",
    "evaluate_auto",
    "evaluate_box",
    "evaluate_clicks",
    "evaluate_points",
    "evaluate_prompts",
    "evaluate_proposals",
    "format_comparison",
    "format_table",
    "jitter_box",
    "load_report",
    "mask_box",
    "mask_iou",
    "next_click",
    "open_dataset",
    "plot_clicks",
    "subset",
    "write_report",
]
