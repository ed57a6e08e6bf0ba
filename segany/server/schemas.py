"""Request and response bodies of the JSON API (they make the OpenAPI schema at /docs).

Conventions: XY pixel coordinates of the original image, XYXY boxes, XYWH ``bbox`` (COCO),
masks as COCO compressed RLE ``{"size": [H, W], "counts": str}``; float arrays travel as
base64 of little-endian float32 with their shape (``Tensor``).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from segany.errors import InputError

Origin = Literal["clicks", "box", "brush", "prefill", "accepted", "edited"]
Status = Literal["todo", "annotated", "skipped"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RLE(Strict):
    size: list[int] = Field(min_length=2, max_length=2)
    counts: str = Field(max_length=50_000_000)


class Tensor(Strict):
    shape: list[int]
    data: str = Field(description="base64 of little-endian float32 values, C order")

    @classmethod
    def of(cls, array: np.ndarray) -> Tensor:
        arr = np.ascontiguousarray(array, dtype="<f4")
        return cls(shape=list(arr.shape), data=base64.b64encode(arr.tobytes()).decode())

    def array(self) -> np.ndarray:
        try:
            raw = base64.b64decode(self.data, validate=True)
        except ValueError:
            raise InputError("tensor data is not valid base64") from None
        count = int(np.prod(self.shape)) if self.shape else 1
        if any(s < 1 for s in self.shape) or len(raw) != 4 * count:
            raise InputError(
                f"tensor of shape {self.shape} needs {4 * count} bytes, got {len(raw)}"
            )
        arr = np.frombuffer(raw, dtype="<f4").reshape(self.shape).astype(np.float32)
        if not np.isfinite(arr).all():
            raise InputError("tensor contains NaN or infinite values")
        return arr


class ImageOut(BaseModel):
    id: int
    path: str
    width: int
    height: int
    status: Status
    masks: int
    url: str


class ImageList(BaseModel):
    images: list[ImageOut]
    counts: dict[str, int]
    next_id: int | None = Field(description="the first image still to do, if any")


class ImportIn(Strict):
    folder: str = Field("images", description="a folder inside the project, POSIX relative")


class StatusIn(Strict):
    status: Status


class DecodeIn(Strict):
    points: list[list[float]] | None = Field(None, description="N×2 XY pixels")
    labels: list[int] | None = Field(None, description="N: 1 positive, 0 negative")
    box: list[float] | None = Field(None, description="XYXY pixels")
    mask_input: Tensor | None = Field(None, description="1×s×s low-res logits of a call")
    mask_input_frame: list[int] | None = Field(
        None,
        description="the logits_frame that came with mask_input (a server zooming corrections)",
    )
    multimask: bool = True
    refine: bool | None = Field(
        None, description="snap the masks to the image's edges (default: the server's setting)"
    )


class DecodeOut(BaseModel):
    masks: list[RLE]
    scores: list[float]
    low_res_logits: Tensor
    logits_frame: list[int] | None = Field(
        None,
        description="x0, y0, x1, y1: the crop the low-res logits lie in (None: the whole image)",
    )
    model_version: int


class Proposal(BaseModel):
    rle: RLE
    bbox: list[int]
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]


class PrefillIn(Strict):
    points_per_side: int | None = Field(None, ge=1, le=64)
    pred_iou_thresh: float | None = Field(
        None, ge=0, le=1, description="default: the MaskGenerator's 0.88"
    )
    stability_score_thresh: float | None = Field(
        None, ge=0, le=1, description="default: the MaskGenerator's 0.95"
    )
    save: bool = Field(False, description="store the proposals as masks (origin 'prefill')")
    skip_annotated: bool = Field(
        True,
        description="propose only where the image's masks leave room: no grid point on them, "
        "no mask mostly on them (false: segment the whole image again)",
    )


class PrefillOut(BaseModel):
    proposals: list[Proposal]
    saved: list[MaskOut]
    model_version: int


class MaskIn(Strict):
    rle: RLE
    label: str = Field("", max_length=256)
    author: str = Field("", max_length=128)
    origin: Origin
    prompts: dict[str, Any] = Field(default_factory=dict)
    model_version: int | None = None
    predicted_iou: float | None = None
    seconds: float = Field(0.0, ge=0, le=86_400)


class MaskPatch(Strict):
    version: int = Field(description="the version you read; a stale one gets a 409")
    rle: RLE | None = None
    label: str | None = Field(None, max_length=256)
    origin: Origin | None = None
    prompts: dict[str, Any] | None = None
    seconds: float | None = Field(None, ge=0, le=86_400)
    author: str | None = Field(None, max_length=128)


class MaskOut(BaseModel):
    id: int
    image_id: int
    rle: RLE
    bbox: list[int]
    area: int
    label: str
    author: str
    origin: str
    prompts: dict[str, Any]
    model_version: int | None
    predicted_iou: float | None
    seconds: float
    version: int


class ExportIn(Strict):
    format: Literal["sa1b", "coco", "png"]


class ExportOut(BaseModel):
    format: str
    folder: str
    files: list[str]
    masks: int


class TrainIn(Strict):
    steps: int = Field(50, ge=1, le=100_000)
    masks_per_image: int = Field(4, ge=1, le=64)
    lr: float = Field(1e-4, gt=0, le=1)
    freeze: Literal["none", "encoder", "decoder-only"] = "encoder"


class TrainOut(BaseModel):
    id: int
    status: str
    step: int
    steps: int
    base_version: int
    result_version: int | None
    message: str


class ModelOut(BaseModel):
    version: int
    source: str
    parent: int | None
    note: str
    current: bool
    metrics: dict[str, Any]


PrefillOut.model_rebuild()
