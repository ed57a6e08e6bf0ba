"""``segany serve``: the annotation app for a project folder (needs the ``server`` extra).

Opens or creates PROJECT_DIR (images, annotations database, embeddings, exports, model
versions) and serves the page and its JSON API (OpenAPI at /docs). Binds 127.0.0.1 unless
told otherwise; any other address needs a token (--token or SEGANY_TOKEN), checked on every
request.

``--tile [SIDE]``: the pre-fill (segment everything) of an image larger than SIDE px runs on
overlapping tiles and the whole image (``segany.tasks.generate_tiled``, as ``segany auto
--tile``), so small objects of a large scan are found at full resolution; finished tiles are kept
in PROJECT_DIR/tiles/ until the run ends (a server stopped midway resumes there).
"""

from __future__ import annotations

import argparse
import os
import sys

from segany.cli.common import (
    CLICK_ZOOM_MARGIN,
    Console,
    UsageError,
    add_cache_options,
    add_output_options,
    add_precision_option,
    cache_from_args,
    check_device,
    finite_float,
    non_negative_int,
    plain_doc,
    positive_int,
    set_threads,
)
from segany.cli.tile_flags import MODEL_SIZE
from segany.errors import MissingExtraError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="the annotation app: annotate a project's images in the browser",
        description=plain_doc(__doc__),
    )
    p.add_argument("project", metavar="PROJECT_DIR", help="project folder (created if missing)")
    p.add_argument("--images", metavar="DIR", help="copy this folder's images into the project")
    p.add_argument(
        "-m",
        "--model",
        metavar="NAME_OR_PATH",
        help="the project's starting model (variant name or weights file; default: bundled)",
    )
    p.add_argument("--device", help="torch device for the model (default: cpu)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for torch")
    add_precision_option(p, default="fp32")
    add_cache_options(p)
    p.add_argument(
        "--refine",
        action="store_true",
        help="snap every decoded mask to the image's edges (segany.refine); a request can "
        "still ask for either",
    )
    p.add_argument(
        "--zoom-clicks",
        type=finite_float,
        nargs="?",
        const=CLICK_ZOOM_MARGIN,
        metavar="MARGIN",
        help="answer each corrective click on a crop around the mask it corrects (segany.zoom), "
        f"MARGIN times its side on each side (default {CLICK_ZOOM_MARGIN}); crops are encoded "
        "on the server as they are needed",
    )
    p.add_argument(
        "--tile",
        type=non_negative_int,
        nargs="?",
        const=MODEL_SIZE,
        metavar="SIDE",
        help="pre-fill (segment everything) images larger than SIDE px tile by tile, on "
        "overlapping SIDE-px tiles and the whole image, as `segany auto --tile` (default SIDE: "
        "the model's input size); zoomed clicks always use region tiles",
    )
    p.add_argument(
        "--tile-overlap",
        type=non_negative_int,
        metavar="PX",
        help="with --tile: pixels neighbouring tiles share (default a quarter of a tile)",
    )
    p.add_argument(
        "--classes",
        metavar="FILE",
        help="the project's classes: JSON (a list of names or of {name, color}) or text, one "
        "name per line with an optional #rrggbb colour; added to those it has",
    )
    p.add_argument(
        "--users",
        metavar="FILE",
        help="the team: JSON, a list of {name, role, password} (roles annotator, reviewer, "
        "admin); users the project lacks are added, others take the file's role. A project "
        "with users asks everyone to sign in",
    )
    p.add_argument(
        "--db", metavar="URL", help="SQLAlchemy database URL (default: SQLite in the project)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--token",
        help="require this token on every request (default: $SEGANY_TOKEN; required for a "
        "non-loopback --host)",
    )
    p.add_argument(
        "--max-upload-mb", type=positive_int, metavar="MB", help="upload size limit (default 32)"
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help="pixel limit per image, and per window of a large image (default 40M)",
    )
    p.add_argument(
        "--max-large-pixels",
        type=int,
        metavar="N",
        help="images above --max-pixels and up to N px are worked on by windows (TIFFs read "
        "by region, other formats converted: --max-convert-pixels; default 4e9; 0: refused)",
    )
    p.add_argument(
        "--max-convert-pixels",
        type=int,
        metavar="N",
        help="PNGs, JPEGs and other non-TIFF images above --max-pixels and up to N px are "
        "decoded once into a tiled TIFF kept in the project and worked on by windows (about "
        "6 bytes a pixel while decoding, 8 if EXIF-turned; default 3e8; 0: refused)",
    )
    add_output_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    console = Console(args)
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("segany serve", "server", "uvicorn") from None
    from segany.server import create_app
    from segany.server.malloc_arenas import cap_malloc_arenas
    from segany.server.settings import ServerSettings, is_loopback

    set_threads(args.threads)
    cap_malloc_arenas()  # before the request threads exist: their arenas are what grew
    options = {}
    if args.max_upload_mb is not None:
        options["max_upload_bytes"] = args.max_upload_mb * 2**20
    if args.max_pixels is not None:
        options["max_pixels"] = args.max_pixels
    if args.max_large_pixels is not None:
        options["max_large_pixels"] = args.max_large_pixels
    if args.max_convert_pixels is not None:
        options["max_convert_pixels"] = args.max_convert_pixels
    if args.tile_overlap is not None and args.tile is None:
        raise UsageError("--tile-overlap goes with --tile")
    settings = ServerSettings(
        project_dir=args.project,
        db_url=args.db,
        model=args.model,
        device=check_device(args.device) if args.device else "cpu",
        precision=args.precision,
        cache=cache_from_args(args),
        refine=args.refine,
        zoom_clicks=args.zoom_clicks,
        prefill_tile=args.tile,
        prefill_tile_overlap=args.tile_overlap,
        classes_file=args.classes,
        users_file=args.users,
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get("SEGANY_TOKEN") or None,
        **options,
    )
    app = create_app(settings)
    state = app.state.segany
    if args.images:
        from pathlib import Path

        copied, present = state.project.copy_in(Path(args.images))
        added = [
            state.notes.add_image(path, info)[1] for path, info in state.project.scan("images")
        ]
        console.info(
            f"copied {len(copied)} new images from {args.images} into the project "
            f"({len(present)} were there already; {sum(added)} added to the image list)"
        )
    rows, counts = state.notes.images()
    names = [c["name"] for c in state.classes.all()]
    team = state.users.all()
    if team:
        who = ", ".join(f"{u['name']} ({u['role']})" for u in team)
        console.info(f"{len(team)} users: {who}; everyone signs in")
    console.info(
        f"project {settings.project_dir}: {len(rows)} images "
        f"({counts['annotated']} annotated, {counts['skipped']} skipped, {counts['todo']} to do, "
        f"{counts['reviewed']} reviewed); classes: {', '.join(names) or 'none yet'}"
    )
    url = f"http://{args.host}:{args.port}/"
    if settings.token:
        where = "on this machine only" if is_loopback(args.host) else f"on {args.host}"
        console.info(f"serving {where}; every request needs the token: open {url}?token=...")
    else:
        console.info(f"serving on this machine only: open {url} (API docs at {url}docs)")
    sys.stderr.flush()
    # Pages keep a live-update stream open: a stop waits for them at most a few seconds.
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3
    )
    return 0
