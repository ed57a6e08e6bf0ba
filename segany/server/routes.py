"""The JSON API under ``/api`` (documented at ``/docs``, schema at ``/openapi.json``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, File, Request, Response, UploadFile
from fastapi.responses import FileResponse

from segany.errors import InputError
from segany.server import schemas
from segany.server.project import NotFound
from segany.server.prompt_checks import DecodePrompts
from segany.server.state import state_of
from segany.server.views import image_out
from segany.server.windows import empty_rle, parse_window, window_key

router = APIRouter()
UPLOAD = File(..., description="an image file (JPEG, PNG, BMP, TIFF, WebP)")


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
        # images above max_pixels (up to this) are worked on by windows (segany.server.windows)
        "max_large_pixels": st.settings.max_large_pixels,
        "max_convert_pixels": st.settings.max_convert_pixels,
        # Refined masks and zoomed corrections need the image's pixels: the page then decodes
        # on the server.
        "decoder_onnx": _decoder_available()
        and not st.settings.refine
        and st.settings.zoom_clicks is None,
        "refine": st.settings.refine,
        "zoom_clicks": st.settings.zoom_clicks,
        # What a pre-fill without thresholds uses: the current model's own (its file's
        # generator_defaults, else the official ones); the page starts from these.
        "prefill": st.hub.prefill_thresholds(st.settings.prefill_points_per_side),
    }


@router.get("/images", response_model=schemas.ImageList, summary="Images with progress")
def list_images(request: Request, mine: bool = False) -> schemas.ImageList:
    """Every image (``mine``: those assigned to the signed-in user). ``next_id``: the first
    image to do; for a signed-in user, one assigned to them first, then one assigned to
    nobody (an annotator is never sent to another's image)."""
    from segany.server.users import user_of

    st = state_of(request)
    rows, counts = st.notes.images()
    user = user_of(request)
    if mine and user is not None:
        rows = [(r, t) for r, t in rows if r.assignee_id == user["id"]]
    todo = [r for r, _ in rows if r.status == "todo"]
    if user is not None:
        todo = [r for r in todo if r.assignee_id == user["id"]] or [
            r for r in todo if r.assignee_id is None
        ]
    names = st.users.names()
    return schemas.ImageList(
        images=[image_out(r, t, names=names) for r, t in rows],
        counts=counts,
        next_id=todo[0].id if todo else None,
    )


@router.post(
    "/images",
    status_code=201,
    response_model=schemas.ImageOut,
    summary="Upload",
    responses={200: {"description": "the same file was there already: that image, as it is"}},
)
def upload_image(
    request: Request, response: Response, file: UploadFile = UPLOAD
) -> schemas.ImageOut:
    st = state_of(request)
    limit = st.settings.max_upload_bytes
    data = file.file.read(limit + 1)
    path, info = st.project.store_upload(data, file.filename or "upload.png")
    row, created = st.notes.add_image(path, info)
    if not created:
        response.status_code = 200
    return image_out(row, st.notes.tally(row.id), request=request)


@router.post("/images/import", response_model=schemas.ImageList, summary="Add a project folder")
def import_folder(request: Request, body: schemas.ImportIn) -> schemas.ImageList:
    """Register the images of a folder inside the project (default ``images/``)."""
    from segany.server.users import require

    require(request, doing="adding a project folder")
    st = state_of(request)
    added = [st.notes.add_image(path, info) for path, info in st.project.scan(body.folder)]
    new = [r for r, created in added if created]
    _, counts = st.notes.images()
    images = [image_out(r, st.notes.tally(r.id)) for r in new]
    return schemas.ImageList(images=images, counts=counts, next_id=None)


@router.get("/images/{image_id}", response_model=schemas.ImageOut)
def get_image(request: Request, image_id: int) -> schemas.ImageOut:
    st = state_of(request)
    row = st.notes.image(image_id)
    return image_out(row, st.notes.tally(image_id), request=request)


@router.get(
    "/images/{image_id}/file",
    summary="The image file, or a window of it as PNG",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
)
def image_file(
    request: Request, image_id: int, window: str | None = None, scale: int = 1
) -> Response:
    """The file as it was added; with ``window`` (x0,y0,x1,y1 image pixels) and/or ``scale``
    (a whole factor the pixels are shrunk by, block means), those pixels as a PNG. A large
    image (``segany.server.windows``) is sent only so, within ``max_pixels``."""
    from segany.atomic import write_bytes_atomic
    from segany.formats.png import encode_png

    st = state_of(request)
    row = st.notes.image(image_id)
    path = st.project.inside(row.path)
    if not path.is_file():
        raise NotFound(f"the file of image {image_id} is missing from the project")
    box = st.project.large.window(row, parse_window(window), scale=scale)
    if box is None and scale == 1:
        return FileResponse(path)
    headers = {"Cache-Control": "private, max-age=3600", "X-Scale": str(scale)}
    if box is not None:
        headers["X-Window"] = ",".join(map(str, box))
    # A large image's overview reads all of it (2.4 s for 40 000² here): kept in the project.
    kept = None
    if box is None and st.project.large.is_large(row):
        kept = st.project.root / "overviews" / f"{row.sha256}-s{scale}.png"
        if kept.is_file():
            return FileResponse(kept, media_type="image/png", headers=headers)
    data = encode_png(st.project.large.read(st.project.region_file(row), box, scale))
    if kept is not None:
        write_bytes_atomic(kept, data)
    return Response(data, media_type="image/png", headers=headers)


@router.put("/images/{image_id}/status", response_model=schemas.ImageOut)
def set_status(request: Request, image_id: int, body: schemas.StatusIn) -> schemas.ImageOut:
    """A skipped image is left out of exports: the answer's ``warning`` says what that drops."""
    from segany.server.users import check_image_access

    st = state_of(request)
    check_image_access(request, st.notes.image(image_id))
    row = st.notes.set_status(image_id, body.status)
    tally = st.notes.tally(image_id)
    warning = None
    if body.status == "skipped" and (tally["masks"] or tally["proposals"]):
        warning = (
            f"{row.path} is skipped: its {tally['masks']} masks are left out of exports and "
            "retraining (mark it annotated to keep them)"
        )
    return image_out(row, tally, warning, request=request)


# ----- model calls ----------------------------------------------------------------------------
def _source(
    request: Request, image_id: int, window: Any = None
) -> tuple[str, Callable[[], np.ndarray]]:
    """The image's (or its window's) key, its content hash with the window, and a reader of
    its pixels h×w×3 uint8 (called on a miss). ``window``: x0, y0, x1, y1 image pixels (a
    list, or the query's text), needed for a large image (``segany.server.windows``)."""
    from segany.formats import read_image

    st = state_of(request)
    row = st.notes.image(image_id)
    path = st.project.inside(row.path)
    box = st.project.large.window(row, parse_window(window))
    if box is None:
        return row.sha256, lambda: read_image(path)
    return window_key(row.sha256, box), lambda: st.project.large.read(
        st.project.region_file(row), box
    )


def _image(request: Request, image_id: int, window: Any = None) -> np.ndarray:
    """The image's (window's) pixels h×w×3 uint8 (the last one read is kept: an annotator
    clicks on one image many times)."""
    key, read = _source(request, image_id, window)
    return state_of(request).hub.pixels(key, read)  # type: ignore[no-any-return]


@router.get(
    "/images/{image_id}/embedding",
    summary="The image embedding (float32 bytes, C order)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def embedding(request: Request, image_id: int, window: str | None = None) -> Response:
    """The bytes are what the ONNX decoder takes as ``image_embeddings`` (of the ``window``,
    x0,y0,x1,y1, when given: a large image's).
    Headers: ``X-Shape`` (1,C,h,w), ``X-Original-Size`` (H,W), ``X-Input-Size`` (h',w'),
    ``X-Model-Version``. Computed once per image and model encoder, then cached."""
    emb = state_of(request).hub.embedding(*_source(request, image_id, window))
    headers = {
        "X-Shape": ",".join(map(str, emb.features.shape)),
        "X-Original-Size": ",".join(map(str, emb.original_size)),
        "X-Input-Size": ",".join(map(str, emb.input_size)),
        "X-Model-Version": str(state_of(request).hub.current),
        "Cache-Control": "no-store",
    }
    data = np.ascontiguousarray(emb.features.numpy(), dtype="<f4").tobytes()
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get(
    "/images/{image_id}/early",
    summary="The image's early feature map (SAM-HQ; float32 bytes, C order)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def early_map(request: Request, image_id: int, window: str | None = None) -> Response:
    """What a SAM-HQ model's ONNX decoder takes as ``interm_embeddings`` (its first map):
    the encoder's early feature map, 1×h×w×E (1×64×64×768, 12.6 MB, for sam_hq_vit_b; 2.6 MB
    for sam_hq_vit_tiny), kept with the embedding. Headers: ``X-Shape``, ``X-Model-Version``.
    404 for a model whose decoder reads the embedding alone, and for SAM 2, whose decoder's
    maps come from ``/images/ID/high_res``."""
    st = state_of(request)
    emb = st.hub.embedding(*_source(request, image_id, window))
    if emb.early is None or not st.hub.model().is_hq:
        raise NotFound(
            "this model's decoder reads no early feature map (only SAM-HQ's does; SAM 2's "
            "high-resolution maps are at /images/ID/high_res)"
        )
    headers = {
        "X-Shape": ",".join(map(str, emb.early.shape)),
        "X-Model-Version": str(st.hub.current),
        "Cache-Control": "no-store",
    }
    data = np.ascontiguousarray(emb.early.numpy(), dtype="<f4").tobytes()
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get(
    "/images/{image_id}/high_res",
    summary="The image's two high-resolution maps (SAM 2 / 2.1; float32 bytes, C order)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def high_res_maps(request: Request, image_id: int, window: str | None = None) -> Response:
    """What a SAM 2 model's ONNX decoder takes as ``high_res_feats_0`` and ``high_res_feats_1``,
    in that order in one body: the stride-4 map after the decoder's ``conv_s0``, 1×C/8×4h×4w,
    then the stride-8 map after ``conv_s1``, 1×C/4×2h×2w (1×32×256×256 and 1×64×128×128,
    12.6 MB together, for the released SAM 2 / 2.1 models). Unpacked from the map kept with the
    embedding (``unpack_high_res``, a reshuffle: exact). Headers: ``X-Shape-0``, ``X-Shape-1``,
    ``X-Stability`` (delta, threshold of SAM 2's single-mask choice), ``X-Model-Version``.
    404 for a model that is not SAM 2's."""
    from segany.modeling.hiera.encoder import unpack_high_res

    st = state_of(request)
    model = st.hub.model()
    emb = st.hub.embedding(*_source(request, image_id, window))
    if emb.early is None or not model.is_sam2:
        raise NotFound("this model's decoder reads no high-resolution maps (only SAM 2's does)")
    decoder = model.mask_decoder
    s0, s1 = unpack_high_res(emb.early, int(decoder.transformer_dim))
    headers = {
        "X-Shape-0": ",".join(map(str, s0.shape)),
        "X-Shape-1": ",".join(map(str, s1.shape)),
        "X-Stability": f"{decoder.stability_delta!r},{decoder.stability_thresh!r}",
        "X-Model-Version": str(st.hub.current),
        "Cache-Control": "no-store",
    }
    data = b"".join(np.ascontiguousarray(m.numpy(), dtype="<f4").tobytes() for m in (s0, s1))
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get("/images/{image_id}/windows", response_model=schemas.WindowGridOut)
def windows(request: Request, image_id: int) -> schemas.WindowGridOut:
    """The windows the page opens on the image: tiles of the whole image of side S·2^k (S
    the model's input size; at most 4096 px and ``max_pixels``), the grid of
    ``segany.tasks.regions``' level of that side (``segany.server.windows.window_grid``).
    Window (i, j) is ``[x[i], y[j], min(W, x[i] + side), min(H, y[j] + side)]``."""
    from segany.server.windows import window_grid

    st = state_of(request)
    row = st.notes.image(image_id)
    side, overlap, xs, ys = window_grid(
        (int(row.height), int(row.width)),
        int(st.hub.model().image_size),
        st.project.large.max_pixels,
    )
    return schemas.WindowGridOut(side=side, overlap=overlap, x=xs, y=ys)


def _decode_in_image(
    request: Request,
    image_id: int,
    body: schemas.DecodeIn,
    prompts: DecodePrompts,
    refine: bool,
) -> schemas.DecodeOut | None:
    """``decode`` for a click made zoomed into a window of a large image: answered on the
    tiles of the whole image (``ModelHub.decode_in_image``), its masks cut to the window and
    its ``logits_frame`` in window pixels (it may reach past the window: the tile the logits
    lie in). None where the window's embedding answers (a small image: always)."""
    from segany.limits import pixel_limit
    from segany.masks import place_rle
    from segany.tasks.regions import check_view
    from segany.tasks.tiles import FramedPrediction, check_frame

    st = state_of(request)
    row = st.notes.image(image_id)
    if not st.project.large.is_large(row):
        return None
    window = st.project.large.window(row, parse_window(body.window))
    assert window is not None and body.view is not None
    x0, y0, x1, y1 = window
    check_view(body.view, (y1 - y0, x1 - x0))  # (in the window's pixels, as sent)
    frame_in = body.mask_input_frame
    if frame_in is not None:
        moved_frame = [int(v) + (x0, y0)[i % 2] for i, v in enumerate(frame_in)]
        try:
            check_frame(moved_frame, (int(row.height), int(row.width)))
        except InputError:
            raise InputError(
                f"mask_input_frame {list(frame_in)} (window pixels: the logits_frame that came "
                f"with the logits) is not a region of the image seen from the window "
                f"{list(window)}"
            ) from None
    shift = np.array([x0, y0], dtype=np.float64)
    moved = DecodePrompts(
        points=None if prompts.points is None else prompts.points + shift,
        labels=prompts.labels,
        box=None if prompts.box is None else prompts.box + np.tile(shift, 2),
        mask_input=prompts.mask_input,
    )
    with pixel_limit(st.project.large.max_large_pixels):  # (the whole image's tiles)
        out: FramedPrediction | None = st.hub.decode_in_image(
            row.sha256,
            st.project.large.source(st.project.region_file(row)),
            window,
            view=[float(v) + float(shift[i % 2]) for i, v in enumerate(body.view)],
            prompts=moved,
            mask_input_frame=None if frame_in is None else moved_frame,
            multimask=body.multimask,
            refine=refine,
            max_frame=st.project.large.max_pixels,
        )
    if out is None:
        return None
    fx0, fy0, fx1, fy1 = out.frame
    cx0, cy0, cx1, cy1 = max(fx0, x0), max(fy0, y0), min(fx1, x1), min(fy1, y1)
    size = (y1 - y0, x1 - x0)
    rles = []
    for c in range(len(out.masks)):
        if not (cx0 < cx1 and cy0 < cy1):  # (the frame holds the click, so it meets the window)
            rles.append(empty_rle(*size))
            continue
        piece = np.asarray(out.masks[c][cy0 - fy0 : cy1 - fy0, cx0 - fx0 : cx1 - fx0])
        piece = piece if piece.dtype == np.bool_ else piece > out.threshold
        rles.append(place_rle(piece, size, (cx0 - x0, cy0 - y0)))
    return schemas.DecodeOut(
        masks=[schemas.RLE(**r) for r in rles],
        scores=[float(v) for v in out.scores],
        low_res_logits=schemas.Tensor.of(out.logits),
        logits_frame=[fx0 - x0, fy0 - y0, fx1 - x0, fy1 - y0],
        model_version=st.hub.current,
        window=list(window),
    )


@router.post("/images/{image_id}/decode", response_model=schemas.DecodeOut)
def decode(request: Request, image_id: int, body: schemas.DecodeIn) -> schemas.DecodeOut:
    """Prompts → masks (COCO RLE), IoU scores and low-res logits (feed one back as
    ``mask_input`` on the next call, as the paper's interactive loop does). With a ``window``
    the window is the image: prompts, view and masks are in its pixels."""
    from segany.masks import encode_rles, place_rle
    from segany.server.prompt_checks import decode_prompts

    st = state_of(request)
    prompts = decode_prompts(body, st.hub.mask_input_size())
    if body.mask_input_frame is not None and st.settings.zoom_clicks is None and body.view is None:
        raise InputError(
            "mask_input_frame is for a server that zooms corrections (--zoom-clicks) or a click "
            "sent with its view"
        )
    sha256, read = _source(request, image_id, body.window)
    refine = st.settings.refine if body.refine is None else body.refine
    frame = None
    region = None
    if body.view is not None and body.window is not None:
        # Zoomed into a large image's window: the whole image's tiles may answer it.
        found = _decode_in_image(request, image_id, body, prompts, refine)
        if found is not None:
            return found
    if body.view is not None:  # a click made zoomed in: the region's tiles may answer it
        region = st.hub.decode_region(
            sha256,
            read,
            _image(request, image_id, body.window),
            view=body.view,
            prompts=prompts,
            mask_input_frame=body.mask_input_frame,
            multimask=body.multimask,
            refine=refine,
        )
    if region is not None:
        pred, frame = region
    elif st.settings.zoom_clicks is not None:
        pred, frame = st.hub.decode_zoomed(
            sha256,
            read,
            _image(request, image_id, body.window),
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
            image=_image(request, image_id, body.window) if refine else None,
        )
    if region is not None and frame is not None:
        # A tile's masks are empty outside it: encoded from the tile, not the whole image
        x0, y0, x1, y1 = frame
        size = pred.masks.shape[-2:]
        rles = [place_rle(m[y0:y1, x0:x1], size, (x0, y0)) for m in pred.masks]
    else:
        rles = encode_rles(pred.masks)
    return schemas.DecodeOut(
        masks=[schemas.RLE(**r) for r in rles],
        scores=[float(s) for s in pred.scores],
        low_res_logits=schemas.Tensor.of(pred.logits),
        logits_frame=None if frame is None else list(frame),
        model_version=st.hub.current,
        window=None if body.window is None else [int(v) for v in body.window],
    )


@router.post("/images/{image_id}/prefill", response_model=schemas.PrefillOut)
def prefill(request: Request, image_id: int, body: schemas.PrefillIn) -> schemas.PrefillOut:
    """Segment everything (the semi-automatic stage): confident masks as proposals, with the
    model's own thresholds unless given, by default only where the image's masks leave room
    (``segany.automatic.semi``, as ``segany engine``'s semi-automatic mode). A proposal that
    duplicates a mask the image has (any review state: mask IoU > 0.7,
    ``segany.server.proposals``) is left out. Saved proposals wait for a review
    (``PATCH /api/masks/{id}`` with ``review``) before exports hold them. With a pre-fill tile
    (``segany serve --tile``) an image larger than a tile is segmented tile by tile
    (``ModelHub.prefill``)."""
    from segany.automatic.semi import annotated_pixels
    from segany.masks import decode_rle
    from segany.rle_windows import crop_rle, paste_rle
    from segany.server.users import check_image_access, user_of
    from segany.server.windows import empty_rle, in_window, meets

    st = state_of(request)
    row = st.notes.image(image_id)
    user = user_of(request)
    if body.save:
        check_image_access(request, row)
    key, read = _source(request, image_id, body.window)
    box = None if body.window is None else st.project.large.window(row, body.window)
    size = (row.height, row.width) if box is None else (box[3] - box[1], box[2] - box[0])
    annotated = None
    if body.skip_annotated:
        masks = st.notes.masks(image_id, ("proposed", "unreviewed", "accepted"))
        if box is not None:  # the window's parts of the masks that meet it
            masks = [m for m in masks if meets(m["bbox"], box)]
        rles = (m["rle"] if box is None else crop_rle(m["rle"], box) for m in masks)
        annotated = annotated_pixels((decode_rle(r, trusted=True) for r in rles), size)
    tile = st.settings.prefill_tile
    records, used = st.hub.prefill(
        key,
        read,
        annotated,
        tile=tile,
        overlap=st.settings.prefill_tile_overlap,
        progress=None if tile is None else st.project.root / "tiles" / key,
        points_per_side=body.points_per_side or st.settings.prefill_points_per_side,
        pred_iou_thresh=body.pred_iou_thresh,
        stability_score_thresh=body.stability_score_thresh,
    )
    keep = st.notes.novel(image_id, [r.mask() for r in records], box)
    proposals = [
        schemas.Proposal(
            rle=schemas.RLE(**r.segmentation),
            bbox=[int(v) for v in r.bbox],
            area=int(r.area),
            predicted_iou=float(r.predicted_iou),
            stability_score=float(r.stability_score),
            point_coords=r.point_coords,
        )
        for r, new in zip(records, keep, strict=True)
        if new
    ]
    saved = []
    if body.save:
        author = (body.author or "").strip() or f"model v{st.hub.current}"
        if user is not None:  # a team's proposals are signed by who asked for them
            author = user["name"]
        for p in proposals:
            rle = p.rle.model_dump()
            points = p.point_coords
            if box is not None:  # into the image, at the window
                rle = paste_rle(empty_rle(row.height, row.width), rle, box)
                points = [[x + box[0], y + box[1]] for x, y in points]
            fields = {
                "rle": rle,
                "origin": "prefill",
                "review": "proposed",
                "author": author,
                "prompts": {"points": points, "labels": [1]},
                "model_version": st.hub.current,
                "predicted_iou": p.predicted_iou,
            }
            mask = st.notes.add_mask(image_id, fields)
            saved.append(schemas.MaskOut(**in_window(mask, box)))
    return schemas.PrefillOut(
        proposals=proposals,
        saved=saved,
        duplicates=len(keep) - len(proposals),
        thresholds=used,
        model_version=st.hub.current,
    )


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


# ----- training and models --------------------------------------------------------------------
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
    from segany.server.users import require

    require(request, doing="retraining")
    st = state_of(request)
    job_id = st.retrainer.start(body.steps, body.masks_per_image, body.lr, body.freeze)
    return _job_out(st.retrainer.job(job_id))


@router.get("/train", response_model=list[schemas.TrainOut], summary="Every retraining job")
def train_jobs(request: Request) -> list[schemas.TrainOut]:
    """Newest first, with their state, progress and the version each made."""
    return [_job_out(job) for job in state_of(request).retrainer.jobs()]


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


@router.put(
    "/models/current",
    response_model=list[schemas.ModelOut],
    summary="Switch to a model version, or roll back to an earlier one",
)
def switch_model(request: Request, body: schemas.SwitchIn) -> list[schemas.ModelOut]:
    """The version decodes, embeds and pre-fills from now on (kept across restarts); masks
    keep the version that made them; every open page reloads its model."""
    from segany.server.users import require

    require(request, doing="switching the model")
    st = state_of(request)
    st.retrainer.switch(body.version)
    st.events.publish("model", version=body.version, action="current")
    return models(request)


def _include_others() -> None:
    from segany.server import routes_masks, routes_team

    router.include_router(routes_masks.router)
    router.include_router(routes_team.router)


_include_others()
