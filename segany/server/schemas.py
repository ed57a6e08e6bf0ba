"""Request and response bodies of the JSON API (they make the OpenAPI schema at /docs).

Conventions: XY pixel coordinates of the original image, XYXY boxes, XYWH ``bbox`` (COCO),
masks as COCO compressed RLE ``{"size": [H, W], "counts": str}``; float arrays travel as
base64 of little-endian float32 with their shape (``Tensor``).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from segany.errors import InputError

Origin = Literal["clicks", "box", "brush", "prefill", "imported", "accepted", "edited"]
Status = Literal["todo", "annotated", "skipped"]
Review = Literal["proposed", "unreviewed", "accepted", "rejected"]


# An integer a request stores or looks up: the database's columns are 32-bit on PostgreSQL
# (a larger one was a 500 there, and past 64 bits on SQLite too).
DbInt = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


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
    masks: int = Field(description="masks an export holds (unreviewed and accepted)")
    proposals: int = Field(0, description="model proposals waiting for a decision")
    unreviewed: int = 0
    rejected: int = 0
    reviewed: bool = Field(
        False, description="every mask and proposal decided (accepted or rejected), and some"
    )
    url: str
    warning: str | None = Field(None, description="what the last change leaves out, if anything")
    assignee_id: int | None = Field(None, description="the user the image is assigned to")
    assignee: str | None = Field(None, description="that user's name")


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
        description="the logits_frame that came with mask_input (a server zooming corrections, "
        "or a click made with its view)",
    )
    view: list[float] | None = Field(
        None,
        description="x0, y0, x1, y1: the image region in sight when the click was made (image "
        "pixels); zoomed into an image larger than the model's input, the click is answered "
        "on tile embeddings at that region's scale (segany.tasks.regions)",
    )
    window: list[int] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="x0, y0, x1, y1: the window of a large image worked on (image pixels; "
        "segany.server.windows): prompts, view and masks are in its pixels",
    )
    multimask: bool = True
    refine: bool | None = Field(
        None, description="snap the masks to the image's edges (default: the server's setting)"
    )


class WindowGridOut(BaseModel):
    side: int = Field(description="the windows' side (px; cut at the image's edges)")
    overlap: int = Field(description="px neighbouring windows share, at least")
    x: list[int] = Field(description="the windows' left edges, left to right")
    y: list[int] = Field(description="the windows' top edges, top to bottom")


class DecodeOut(BaseModel):
    masks: list[RLE]
    scores: list[float]
    low_res_logits: Tensor
    logits_frame: list[int] | None = Field(
        None,
        description="x0, y0, x1, y1: the crop the low-res logits lie in (None: the whole image)",
    )
    model_version: int
    window: list[int] | None = Field(None, description="the call's window: masks are its size")


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
        None, ge=0, le=1, description="default: the model's own (GET /api/project: prefill)"
    )
    stability_score_thresh: float | None = Field(
        None, ge=0, le=1, description="default: the model's own (GET /api/project: prefill)"
    )
    save: bool = Field(
        False,
        description="store the proposals (origin 'prefill', review 'proposed'): they become "
        "masks when accepted",
    )
    author: str | None = Field(
        None, max_length=128, description="who asked for them (default: 'model v<N>')"
    )
    skip_annotated: bool = Field(
        True,
        description="propose only where the image's masks leave room: no grid point on them, "
        "no mask mostly on them (false: segment the whole image again)",
    )
    window: list[int] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="x0, y0, x1, y1: the window of a large image worked on (image pixels; "
        "segany.server.windows): proposals are in its pixels, only masks there count",
    )


class PrefillOut(BaseModel):
    proposals: list[Proposal] = Field(description="new proposals (duplicates left out)")
    saved: list[MaskOut]
    duplicates: int = Field(
        description="proposals left out as duplicates of the image's stored masks "
        "(mask IoU > 0.7, segany.server.proposals)"
    )
    thresholds: dict[str, float] = Field(description="the generator's thresholds this run used")
    model_version: int


class MaskIn(Strict):
    rle: RLE
    label: str = Field(
        "", max_length=256, description="the class by name (a new name adds a class)"
    )
    class_id: DbInt | None = Field(None, description="the class by id (GET /api/classes)")
    author: str = Field("", max_length=128)
    origin: Origin
    review: Literal["unreviewed", "proposed"] = Field(
        "unreviewed", description="'proposed': a model's proposal, a mask once accepted"
    )
    prompts: dict[str, Any] = Field(default_factory=dict)
    model_version: DbInt | None = None
    predicted_iou: float | None = None
    seconds: float = Field(0.0, ge=0, le=86_400)
    window: list[int] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="x0, y0, x1, y1: the window of a large image worked on (image pixels; "
        "segany.server.windows): the rle is the window's size, pasted into the image there",
    )


class MaskPatch(Strict):
    """The origin is how the mask was made and does not change: a new shape counts as an edit,
    a new class as a relabel (``edits``, ``relabels``, ``editor`` on the mask)."""

    version: DbInt = Field(description="the version you read; a stale one gets a 409")
    rle: RLE | None = None
    label: str | None = Field(None, max_length=256, description="'' removes the class")
    class_id: DbInt | None = None
    prompts: dict[str, Any] | None = None
    seconds: float | None = Field(None, ge=0, le=86_400)
    author: str | None = Field(None, max_length=128)
    editor: str | None = Field(None, max_length=128, description="who made this change")
    review: Review | None = Field(None, description="a review decision (needs reviewer)")
    reviewer: str | None = Field(None, max_length=128)
    note: str | None = Field(
        None, max_length=2000, description="the reviewer's note with the decision (review)"
    )
    window: list[int] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="x0, y0, x1, y1: the window of a large image worked on (image pixels; "
        "segany.server.windows): the rle is the window's size and replaces the mask there; "
        "outside it the mask is kept",
    )


class MaskOut(BaseModel):
    id: int
    image_id: int
    rle: RLE
    bbox: list[int]
    area: int
    label: str
    class_id: int | None
    author: str
    origin: str
    prompts: dict[str, Any]
    model_version: int | None
    predicted_iou: float | None
    seconds: float
    version: int
    review: Review
    reviewer: str
    review_note: str = Field("", description="the reviewer's note with the last decision")
    editor: str
    edits: int
    relabels: int
    window: list[int] | None = Field(
        None, description="asked with a window: rle is the mask's part in it (bbox, area: whole)"
    )


class ClassIn(Strict):
    name: str = Field(min_length=1, max_length=256)
    color: str | None = Field(None, description="#rrggbb (default: the next of a palette)")


class ClassPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=256)
    color: str | None = None


class ClassOut(BaseModel):
    id: int
    name: str
    color: str
    masks: int = Field(0, description="masks of this class (any review state)")


class ExportIn(Strict):
    format: Literal["sa1b", "coco", "yolo", "png"]
    polygons: bool = Field(
        False, description="COCO: segmentations as polygons (a mask with holes stays RLE)"
    )
    accepted_only: bool = Field(False, description="only masks a reviewer accepted")


class ExportOut(BaseModel):
    format: str
    folder: str
    files: list[str]
    masks: int
    warnings: list[str] = Field(default_factory=list, description="what the export leaves out")


class ImportCocoIn(Strict):
    annotations: str = Field(description="a COCO instances JSON inside the project (POSIX)")
    images: str | None = Field(
        None, description="the folder its file_name values are relative to (default: its own)"
    )
    author: str = Field("import", max_length=128)


class ImportOut(BaseModel):
    images: int = Field(description="images of the file found and registered")
    masks: int = Field(description="masks added (origin 'imported', review 'unreviewed')")
    duplicates: int = Field(description="masks already in the project, left out")
    classes: int = Field(description="classes added (one per new category name)")
    missing: list[str] = Field(description="file names of the file not found in the folder")


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


Role = Literal["annotator", "reviewer", "admin"]


class LoginIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    id: int
    name: str
    role: Role
    images: int = Field(0, description="images assigned to the user")


class MeOut(BaseModel):
    team: bool = Field(description="the project has users: every API call needs a sign-in")
    user: UserOut | None = Field(description="who is signed in (None: single-user project)")


class UserIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    role: Role
    password: str = Field(min_length=8, max_length=1024)


class UserPatch(Strict):
    role: Role | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)


class AssignIn(Strict):
    user_id: DbInt | None = Field(description="the user (None: nobody)")


class SwitchIn(Strict):
    version: DbInt = Field(description="a version of GET /api/models")


class ModelOut(BaseModel):
    version: int
    source: str
    parent: int | None
    note: str
    current: bool
    metrics: dict[str, Any]


PrefillOut.model_rebuild()
