"""The JSON API's masks, label set, exports and imports (mounted under ``/api`` with the rest)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from segany.errors import InputError
from segany.rle_windows import paste_rle, shrink_rle
from segany.server import exporting, schemas
from segany.server.project import NotFound
from segany.server.state import state_of
from segany.server.users import check_image_access, require, user_of
from segany.server.windows import (
    Window,
    empty_rle,
    in_window,
    meets,
    parse_window,
    prompts_in_image,
)

router = APIRouter()


def _may_change(request: Request, image_id: int) -> None:
    """404 for an unknown image, 403 for an annotator on another's image."""
    check_image_access(request, state_of(request).notes.image(image_id))


# ----- masks ----------------------------------------------------------------------------------
@router.get("/images/{image_id}/masks", response_model=list[schemas.MaskOut])
def list_masks(
    request: Request, image_id: int, window: str | None = None, scale: int = 1
) -> list[dict[str, Any]]:
    """Every mask of the image, proposals and rejected ones included (see ``review``). With a
    ``window`` (x0,y0,x1,y1 image pixels; a large image's, ``segany.server.windows``): the
    masks whose box meets it, each RLE cut to the window. With a ``scale`` k > 1 each RLE
    (the window's, or the image's) is shrunk k times, ⌈H/k⌉×⌈W/k⌉, a pixel set where any of
    its k×k block is (``segany.rle_windows.shrink_rle``): the masks' shapes on a large
    image's overview (``GET .../file?scale=k``), made from the runs. Boxes and areas stay the
    image's."""
    st = state_of(request)
    masks = st.notes.masks(image_id)
    row = st.notes.image(image_id)
    box = None if window is None else _window(request, image_id, parse_window(window))
    x0, y0, x1, y1 = box or (0, 0, row.width, row.height)
    if not 1 <= scale <= max(x1 - x0, y1 - y0):
        raise InputError(
            f"scale must be a whole number from 1 to the {'window' if box else 'image'}'s "
            f"longer side ({max(x1 - x0, y1 - y0)}), got {scale}"
        )
    if box is not None:
        masks = [in_window(m, box) for m in masks if meets(m["bbox"], box)]
    if scale > 1:
        masks = [{**m, "rle": shrink_rle(m["rle"], scale)} for m in masks]
    return masks  # type: ignore[no-any-return]


def _window(request: Request, image_id: int, window: Any) -> Window | None:
    st = state_of(request)
    return st.project.large.window(st.notes.image(image_id), window)  # type: ignore[no-any-return]


@router.post("/images/{image_id}/masks", status_code=201, response_model=schemas.MaskOut)
def add_mask(request: Request, image_id: int, body: schemas.MaskIn) -> dict[str, Any]:
    """In a team project the mask's ``author`` is the signed-in user. With a ``window`` the
    RLE is the window's size and is pasted into the image there."""
    _may_change(request, image_id)
    notes = state_of(request).notes
    fields = body.model_dump(exclude={"window"})
    box = _window(request, image_id, body.window) if body.window is not None else None
    if box is not None:
        row = notes.image(image_id)
        fields["rle"] = paste_rle(empty_rle(row.height, row.width), fields["rle"], box)
        fields["prompts"] = prompts_in_image(fields["prompts"], box)
    user = user_of(request)
    if user is not None:
        fields["author"] = user["name"]
    return in_window(notes.add_mask(image_id, fields), box)


@router.get("/masks/{mask_id}", response_model=schemas.MaskOut)
def get_mask(request: Request, mask_id: int) -> dict[str, Any]:
    return state_of(request).notes.mask(mask_id)  # type: ignore[no-any-return]


@router.patch(
    "/masks/{mask_id}",
    response_model=schemas.MaskOut,
    responses={409: {"description": "stale version: the body holds the current mask"}},
)
def update_mask(request: Request, mask_id: int, body: schemas.MaskPatch) -> dict[str, Any]:
    """Edit (shape, class, prompts, seconds) and/or review (``review`` + ``reviewer``) a mask.
    Accepting a proposal makes it a mask; rejecting keeps it out of exports and out of later
    pre-fills. In a team project a review needs the reviewer or admin role, and ``editor`` and
    ``reviewer`` are the signed-in user. With a ``window`` the RLE is the window's size and
    replaces the mask inside it; outside it the mask is kept."""
    notes = state_of(request).notes
    current = notes.mask(mask_id)
    _may_change(request, current["image_id"])
    changes = body.model_dump(exclude={"version", "window"})
    box = _window(request, current["image_id"], body.window) if body.window is not None else None
    if changes.get("rle") is not None:
        changes["rle"] = body.rle.model_dump() if body.rle else None
        if box is not None:  # the window's part replaced, the rest as it was
            changes["rle"] = paste_rle(current["rle"], changes["rle"], box)
    changes["prompts"] = prompts_in_image(changes.get("prompts"), box)
    user = user_of(request)
    if user is not None:
        if body.review is not None:
            require(request, "reviewer", doing="a review decision")
            changes["reviewer"] = user["name"]
        changes["editor"] = user["name"]
    return in_window(notes.update_mask(mask_id, body.version, changes), box)


@router.delete("/masks/{mask_id}", status_code=204, responses={409: {"description": "stale"}})
def delete_mask(request: Request, mask_id: int, version: int) -> Response:
    notes = state_of(request).notes
    _may_change(request, notes.mask(mask_id)["image_id"])
    notes.delete_mask(mask_id, version)
    return Response(status_code=204)


# ----- the label set --------------------------------------------------------------------------
@router.get("/classes", response_model=list[schemas.ClassOut], summary="The project's classes")
def list_classes(request: Request) -> list[dict[str, Any]]:
    return state_of(request).classes.all()  # type: ignore[no-any-return]


@router.post(
    "/classes",
    status_code=201,
    response_model=schemas.ClassOut,
    responses={409: {"description": "a class has that name"}},
)
def add_class(request: Request, body: schemas.ClassIn) -> dict[str, Any]:
    return state_of(request).classes.add(body.name, body.color)  # type: ignore[no-any-return]


@router.patch("/classes/{class_id}", response_model=schemas.ClassOut)
def update_class(request: Request, class_id: int, body: schemas.ClassPatch) -> dict[str, Any]:
    """Rename (its masks' labels follow) and/or recolour a class."""
    require(request, "reviewer", doing="changing a class")
    classes = state_of(request).classes
    return classes.update(class_id, body.name, body.color)  # type: ignore[no-any-return]


@router.delete("/classes/{class_id}", status_code=204)
def delete_class(request: Request, class_id: int) -> Response:
    """Remove a class; its masks stay, unlabelled."""
    require(request, "reviewer", doing="removing a class")
    state_of(request).classes.delete(class_id)
    return Response(status_code=204)


# ----- live updates -----------------------------------------------------------------------------
@router.get(
    "/events",
    summary="Live updates (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(request: Request) -> StreamingResponse:
    """One ``text/event-stream`` message per change to the project's masks, images and classes
    (``segany.server.events``), so every open page shows others' changes as they happen."""
    stream = state_of(request).events.stream(request.is_disconnected)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


# ----- figures ---------------------------------------------------------------------------------
@router.get("/stats", summary="The data engine's figures per stage and model version")
def stats(request: Request) -> dict[str, Any]:
    """Masks per image, seconds per mask, and what became of the model's proposals (kept,
    edited, rejected), per stage (assisted-manual, semi-automatic, imported) and per model
    version: ``segany.server.stats``."""
    from segany.server.stats import figures

    return figures(state_of(request).sessions)


# ----- export and import ----------------------------------------------------------------------
@router.post("/export", response_model=schemas.ExportOut)
def export(request: Request, body: schemas.ExportIn) -> schemas.ExportOut:
    """Write an export under ``exports/`` (see ``segany.server.exporting`` for the layouts);
    ``warnings`` say what it leaves out."""
    require(request, "reviewer", doing="an export")
    st = state_of(request)
    options = exporting.ExportOptions(polygons=body.polygons, accepted_only=body.accepted_only)
    result = exporting.export(st.project, st.notes, st.classes, body.format, options)
    files = sorted(st.project.relative(p) for p in result.folder.rglob("*") if p.is_file())
    return schemas.ExportOut(
        format=body.format,
        folder=st.project.relative(result.folder),
        files=files,
        masks=result.masks,
        warnings=result.warnings,
    )


@router.get("/exports/{path:path}", response_class=FileResponse, summary="An exported file")
def export_file(request: Request, path: str) -> FileResponse:
    st = state_of(request)
    target = st.project.inside(f"exports/{path}")
    if not target.is_file():
        raise NotFound(f"no exported file {path!r}")
    return FileResponse(target)


@router.post("/import/coco", response_model=schemas.ImportOut)
def import_coco(request: Request, body: schemas.ImportCocoIn) -> schemas.ImportOut:
    """Add a COCO instances file's images and masks (RLE or polygons) to the project, so an
    existing dataset can be corrected: categories become classes (by name), masks arrive
    unreviewed with origin 'imported'; masks the project has already are left out."""
    from segany.server.importing import import_coco as run

    require(request, doing="a COCO import")
    st = state_of(request)
    result = run(st.project, st.notes, body.annotations, body.images, body.author)
    return schemas.ImportOut(**result)
