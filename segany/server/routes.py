"""The JSON API under ``/api`` (documented at ``/docs``, schema at ``/openapi.json``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, File, Request, Response, UploadFile
from fastapi.responses import FileResponse

from segany.errors import InputError
from segany.server import exporting, schemas
from segany.server.project import NotFound
from segany.server.state import state_of

router = APIRouter()
UPLOAD = File(..., description="an image file (JPEG, PNG, BMP, TIFF, WebP)")


def _image_out(row: Any, masks: int) -> schemas.ImageOut:
    return schemas.ImageOut(
        id=row.id,
        path=row.path,
        width=row.width,
        height=row.height,
        status=row.status,
        masks=masks,
        url=f"/api/images/{row.id}/file",
    )


# ----- project and images ---------------------------------------------------------------------
@router.get("/project", summary="Project summary: counts, model version, limits")
def project(request: Request) -> dict[str, Any]:
    st = state_of(request)
    _, counts = st.notes.images()
    return {
        "counts": counts,
        "model_version": st.hub.current,
        "max_upload_bytes": st.settings.max_upload_bytes,
        "max_pixels": st.settings.max_pixels,
        # Refined masks and zoomed corrections need the image's pixels: the page then decodes
        # on the server.
        "decoder_onnx": _decoder_available()
        and not st.settings.refine
        and st.settings.zoom_clicks is None,
        "refine": st.settings.refine,
        "zoom_clicks": st.settings.zoom_clicks,
    }


@router.get("/images", response_model=schemas.ImageList, summary="Images with progress")
def list_images(request: Request) -> schemas.ImageList:
    rows, counts = state_of(request).notes.images()
    todo = [r.id for r, _ in rows if r.status == "todo"]
    return schemas.ImageList(
        images=[_image_out(r, n) for r, n in rows],
        counts=counts,
        next_id=todo[0] if todo else None,
    )


@router.post("/images", status_code=201, response_model=schemas.ImageOut, summary="Upload")
def upload_image(request: Request, file: UploadFile = UPLOAD) -> schemas.ImageOut:
    st = state_of(request)
    limit = st.settings.max_upload_bytes
    data = file.file.read(limit + 1)
    path, info = st.project.store_upload(data, file.filename or "upload.png")
    row, _ = st.notes.add_image(path, info)
    return _image_out(row, 0)


@router.post("/images/import", response_model=schemas.ImageList, summary="Add a project folder")
def import_folder(request: Request, body: schemas.ImportIn) -> schemas.ImageList:
    """Register the images of a folder inside the project (default ``images/``)."""
    st = state_of(request)
    added = [st.notes.add_image(path, info) for path, info in st.project.scan(body.folder)]
    new = [r for r, created in added if created]
    _, counts = st.notes.images()
    return schemas.ImageList(images=[_image_out(r, 0) for r in new], counts=counts, next_id=None)


@router.get("/images/{image_id}", response_model=schemas.ImageOut)
def get_image(request: Request, image_id: int) -> schemas.ImageOut:
    st = state_of(request)
    row = st.notes.image(image_id)
    return _image_out(row, len(st.notes.masks(image_id)))


@router.get("/images/{image_id}/file", summary="The image file", response_class=FileResponse)
def image_file(request: Request, image_id: int) -> FileResponse:
    st = state_of(request)
    path = st.project.inside(st.notes.image(image_id).path)
    if not path.is_file():
        raise NotFound(f"the file of image {image_id} is missing from the project")
    return FileResponse(path)


@router.put("/images/{image_id}/status", response_model=schemas.ImageOut)
def set_status(request: Request, image_id: int, body: schemas.StatusIn) -> schemas.ImageOut:
    st = state_of(request)
    row = st.notes.set_status(image_id, body.status)
    return _image_out(row, len(st.notes.masks(image_id)))


# ----- model calls ----------------------------------------------------------------------------
def _source(request: Request, image_id: int) -> tuple[str, Callable[[], np.ndarray]]:
    """The image's content hash and a reader of its pixels H×W×3 uint8 (called on a miss)."""
    from segany.formats import read_image

    st = state_of(request)
    row = st.notes.image(image_id)
    path = st.project.inside(row.path)
    return row.sha256, lambda: read_image(path)


def _image(request: Request, image_id: int) -> np.ndarray:
    """The image's pixels H×W×3 uint8 (the last one read is kept: an annotator clicks on one
    image many times)."""
    sha256, read = _source(request, image_id)
    return state_of(request).hub.pixels(sha256, read)  # type: ignore[no-any-return]


@router.get(
    "/images/{image_id}/embedding",
    summary="The image embedding (float32 bytes, C order)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def embedding(request: Request, image_id: int) -> Response:
    """The bytes are what the ONNX decoder takes as ``image_embeddings``.
    Headers: ``X-Shape`` (1,C,h,w), ``X-Original-Size`` (H,W), ``X-Input-Size`` (h',w'),
    ``X-Model-Version``. Computed once per image and model encoder, then cached."""
    emb = state_of(request).hub.embedding(*_source(request, image_id))
    headers = {
        "X-Shape": ",".join(map(str, emb.features.shape)),
        "X-Original-Size": ",".join(map(str, emb.original_size)),
        "X-Input-Size": ",".join(map(str, emb.input_size)),
        "X-Model-Version": str(state_of(request).hub.current),
        "Cache-Control": "no-store",
    }
    data = np.ascontiguousarray(emb.features.numpy(), dtype="<f4").tobytes()
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.post("/images/{image_id}/decode", response_model=schemas.DecodeOut)
def decode(request: Request, image_id: int, body: schemas.DecodeIn) -> schemas.DecodeOut:
    """Prompts → masks (COCO RLE), IoU scores and low-res logits (feed one back as
    ``mask_input`` on the next call, as the paper's interactive loop does)."""
    from segany.masks import encode_rles
    from segany.server.prompt_checks import decode_prompts

    st = state_of(request)
    prompts = decode_prompts(body, st.hub.mask_input_size())
    if body.mask_input_frame is not None and st.settings.zoom_clicks is None:
        raise InputError("mask_input_frame is for a server that zooms corrections (--zoom-clicks)")
    sha256, read = _source(request, image_id)
    refine = st.settings.refine if body.refine is None else body.refine
    frame = None
    if st.settings.zoom_clicks is not None:
        pred, frame = st.hub.decode_zoomed(
            sha256,
            read,
            _image(request, image_id),
            click_margin=st.settings.zoom_clicks,
            prompts=prompts,
            mask_input_frame=body.mask_input_frame,
            multimask=body.multimask,
            refine=refine,
        )
    else:
        pred = st.hub.decode(
            sha256,
            read,
            prompts,
            multimask=body.multimask,
            image=_image(request, image_id) if refine else None,
        )
    return schemas.DecodeOut(
        masks=[schemas.RLE(**r) for r in encode_rles(pred.masks)],
        scores=[float(s) for s in pred.scores],
        low_res_logits=schemas.Tensor.of(pred.logits),
        logits_frame=None if frame is None else list(frame),
        model_version=st.hub.current,
    )


@router.post("/images/{image_id}/prefill", response_model=schemas.PrefillOut)
def prefill(request: Request, image_id: int, body: schemas.PrefillIn) -> schemas.PrefillOut:
    """Segment everything (the semi-automatic stage): confident masks as proposals, by default
    only where the image's masks leave room (``segany.automatic.semi``, as ``segany engine``'s
    semi-automatic mode). Lower the thresholds for a weak model (the bundled tiny one rarely
    predicts IoU > 0.7)."""
    from segany.automatic.semi import annotated_pixels
    from segany.masks import decode_rle

    st = state_of(request)
    annotated = None
    if body.skip_annotated:
        row = st.notes.image(image_id)
        masks = (decode_rle(m["rle"]) for m in st.notes.masks(image_id))
        annotated = annotated_pixels(masks, (row.height, row.width))
    records = st.hub.prefill(
        *_source(request, image_id),
        annotated,
        points_per_side=body.points_per_side or st.settings.prefill_points_per_side,
        pred_iou_thresh=body.pred_iou_thresh,
        stability_score_thresh=body.stability_score_thresh,
    )
    proposals = [
        schemas.Proposal(
            rle=schemas.RLE(**r.segmentation),
            bbox=[int(v) for v in r.bbox],
            area=int(r.area),
            predicted_iou=float(r.predicted_iou),
            stability_score=float(r.stability_score),
            point_coords=r.point_coords,
        )
        for r in records
    ]
    saved = []
    if body.save:
        for p in proposals:
            fields = {
                "rle": p.rle.model_dump(),
                "origin": "prefill",
                "prompts": {"points": p.point_coords, "labels": [1]},
                "model_version": st.hub.current,
                "predicted_iou": p.predicted_iou,
            }
            saved.append(schemas.MaskOut(**st.notes.add_mask(image_id, fields)))
    return schemas.PrefillOut(proposals=proposals, saved=saved, model_version=st.hub.current)


@router.get(
    "/decoder.onnx",
    summary="The current model's prompt decoder as ONNX (for the in-browser decoder)",
    response_class=FileResponse,
)
def decoder_onnx(request: Request) -> FileResponse:
    st = state_of(request)
    if not _decoder_available():
        raise NotFound("this installation has no ONNX decoder export (segany.export)")
    path = st.project.root / "models" / f"decoder-v{st.hub.current}.onnx"
    with st.hub.lock:
        if not path.is_file():
            _export_decoder(st.hub.model(), path)
    return FileResponse(path, media_type="application/octet-stream")


def _decoder_available() -> bool:
    """segany.export is there and so is ``onnx``, which writing the file needs."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("segany.export", "onnx"))
    except (ImportError, ValueError):
        return False


def _export_decoder(model: Any, path: Any) -> None:
    from segany.export import export_decoder

    # All 4 mask tokens: the page cycles the 3 multimask outputs of a first click and uses the
    # single-mask token once earlier logits are fed back (what the decode endpoint does).
    export_decoder(model, path, return_single_mask=False)


# ----- masks ----------------------------------------------------------------------------------
@router.get("/images/{image_id}/masks", response_model=list[schemas.MaskOut])
def list_masks(request: Request, image_id: int) -> list[dict[str, Any]]:
    return state_of(request).notes.masks(image_id)  # type: ignore[no-any-return]


@router.post("/images/{image_id}/masks", status_code=201, response_model=schemas.MaskOut)
def add_mask(request: Request, image_id: int, body: schemas.MaskIn) -> dict[str, Any]:
    fields = body.model_dump()
    return state_of(request).notes.add_mask(image_id, fields)  # type: ignore[no-any-return]


@router.get("/masks/{mask_id}", response_model=schemas.MaskOut)
def get_mask(request: Request, mask_id: int) -> dict[str, Any]:
    return state_of(request).notes.mask(mask_id)  # type: ignore[no-any-return]


@router.patch(
    "/masks/{mask_id}",
    response_model=schemas.MaskOut,
    responses={409: {"description": "stale version: the body holds the current mask"}},
)
def update_mask(request: Request, mask_id: int, body: schemas.MaskPatch) -> dict[str, Any]:
    changes = body.model_dump(exclude={"version"})
    if changes.get("rle") is not None:
        changes["rle"] = body.rle.model_dump() if body.rle else None
    notes = state_of(request).notes
    return notes.update_mask(mask_id, body.version, changes)  # type: ignore[no-any-return]


@router.delete("/masks/{mask_id}", status_code=204, responses={409: {"description": "stale"}})
def delete_mask(request: Request, mask_id: int, version: int) -> Response:
    state_of(request).notes.delete_mask(mask_id, version)
    return Response(status_code=204)


# ----- export, retraining, models -------------------------------------------------------------
@router.post("/export", response_model=schemas.ExportOut)
def export(request: Request, body: schemas.ExportIn) -> schemas.ExportOut:
    st = state_of(request)
    folder, count = exporting.export(st.project, st.notes, body.format)
    files = sorted(st.project.relative(p) for p in folder.rglob("*") if p.is_file())
    return schemas.ExportOut(
        format=body.format, folder=st.project.relative(folder), files=files, masks=count
    )


@router.get("/exports/{path:path}", response_class=FileResponse, summary="An exported file")
def export_file(request: Request, path: str) -> FileResponse:
    st = state_of(request)
    target = st.project.inside(f"exports/{path}")
    if not target.is_file():
        raise NotFound(f"no exported file {path!r}")
    return FileResponse(target)


def _job_out(job: Any) -> schemas.TrainOut:
    return schemas.TrainOut(
        id=job.id,
        status=job.status,
        step=job.step,
        steps=job.steps,
        base_version=job.base_version,
        result_version=job.result_version,
        message=job.message,
    )


@router.post("/train", status_code=202, response_model=schemas.TrainOut)
def retrain(request: Request, body: schemas.TrainIn) -> schemas.TrainOut:
    """Fine-tune the current model on the accepted masks, in the background."""
    st = state_of(request)
    job_id = st.retrainer.start(body.steps, body.masks_per_image, body.lr, body.freeze)
    return _job_out(st.retrainer.job(job_id))


@router.get("/train/{job_id}", response_model=schemas.TrainOut, summary="Progress of a job")
def train_job(request: Request, job_id: int) -> schemas.TrainOut:
    return _job_out(state_of(request).retrainer.job(job_id))


@router.get("/models", response_model=list[schemas.ModelOut])
def models(request: Request) -> list[schemas.ModelOut]:
    from sqlalchemy import select

    from segany.server.db import ModelVersion

    st = state_of(request)
    with st.sessions() as s:
        rows = list(s.scalars(select(ModelVersion).order_by(ModelVersion.version)))
    return [
        schemas.ModelOut(
            version=r.version,
            source=r.source or "(bundled default)",
            parent=r.parent,
            note=r.note,
            current=r.version == st.hub.current,
            metrics=r.metrics or {},
        )
        for r in rows
    ]
