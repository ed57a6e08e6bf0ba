"""The FastAPI application: state, token check, error mapping, the page.

Every error becomes a JSON ``{"detail": ...}`` with a 4xx status: 400 bad input, 401 missing
token, 404 unknown id, 409 stale edit (with ``current``), 413 oversized upload, 422 a body that
does not match the schema. A write refused for space (a full disk, the database's included) is a
507; a request the database could not serve (stopped, restarting, unreachable, locked past
the timeout) is a 503 saying nothing was saved, and the next request after it is back
succeeds, with no restart; any other unexpected exception is a 500 with a JSON body (and a
bug).
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

from segany.errors import InputError, MissingExtraError
from segany.server.settings import ServerSettings
from segany.server.state import AppState, state_of

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "segany_token"
log = logging.getLogger("segany.server")


def build_state(settings: ServerSettings, model: Any = None) -> AppState:
    """Open (or create) the project: folder, database (migrated), model versions."""
    import torch
    from sqlalchemy import select, update

    from segany.checkpoints import load_model
    from segany.inference.embedding_cache import resolve_cache
    from segany.inference.precision import resolve_precision
    from segany.server import exporting
    from segany.server.annotations import Annotations
    from segany.server.classes import Classes, read_classes_file
    from segany.server.db import ModelVersion, TrainJob, current_version, now, open_database
    from segany.server.events import Events
    from segany.server.modelhub import ModelHub
    from segany.server.project import ProjectFolder
    from segany.server.training import Retrainer
    from segany.server.turned_sizes import fix_turned_sizes
    from segany.server.users import Users, read_users_file

    # A bad classes or users file is refused before the project folder is made.
    specs = read_classes_file(settings.classes_file) if settings.classes_file else None
    team = read_users_file(settings.users_file) if settings.users_file else None
    project = ProjectFolder(
        settings.project_dir,
        max_pixels=settings.max_pixels,
        max_upload_bytes=settings.max_upload_bytes,
        max_large_pixels=settings.max_large_pixels,
        max_convert_pixels=settings.max_convert_pixels,
    )
    engine, sessions = open_database(settings.database_url, settings.db_timeout)
    fix_turned_sizes(project, sessions)  # (once per project: images recorded unturned)

    def loader(source: str | None) -> Any:
        if source is not None and not Path(source).is_absolute() and source.startswith("models/"):
            source = str(project.root / source)
        return load_model(source, device=settings.device, progress=False)

    precision = resolve_precision(settings.precision, torch.device(settings.device))
    hub = ModelHub(
        project.root / "embeddings",
        loader,
        cache_size=settings.embedding_cache,
        precision=precision,
        disk_cache=resolve_cache(settings.cache),
    )
    with sessions.begin() as s:
        versions = list(s.scalars(select(ModelVersion).order_by(ModelVersion.version)))
        if not versions:
            v0 = ModelVersion(version=0, source=settings.model or "", note="the starting model")
            s.add(v0)
            versions = [v0]
        elif settings.model is not None and versions[0].source != settings.model:
            log.warning("this project started with model %r", versions[0].source or "(default)")
        # Jobs a previous run left unfinished cannot resume: say so instead of "running".
        s.execute(
            update(TrainJob)
            .where(TrainJob.status.in_(("queued", "running")))
            .values(status="failed", message="interrupted by a server restart", finished_at=now())
        )
    for v in versions:
        hub.register(v.version, v.source or None, (v.metrics or {}).get("encoder_version"))
    hub.current = current_version(versions)
    if model is not None and hub.current == 0:
        hub.add_loaded(0, model)
    events = Events()
    notes = Annotations(sessions, events)
    classes = Classes(sessions, events)
    if specs:
        added, recoloured = classes.merge(specs)
        log.info(
            "classes from %s: %d added, %d recoloured", settings.classes_file, added, recoloured
        )

    users = Users(sessions)
    if team:
        added, changed = users.merge(team)
        log.info("users from %s: %d added, %d with a new role", settings.users_file, added, changed)

    def export_sa1b(folder: Path) -> int:
        # Retraining reads each image whole: a large one (worked on by windows) is left out.
        docs = [
            (path, doc)
            for path, doc in exporting.documents(project, notes)
            if doc.size[0] * doc.size[1] <= project.max_pixels
        ]
        exporting.write_sa1b_folder(folder, docs)
        return sum(len(d.annotations) for _, d in docs)

    retrainer = Retrainer(project.root, sessions, export_sa1b, hub)
    return AppState(
        settings, project, notes, hub, retrainer, sessions, engine, classes, events, users
    )


def create_app(settings: ServerSettings, *, model: Any = None) -> Any:
    """The app for ``settings``; ``model`` (a loaded ``Sam``) skips loading version 0."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, JSONResponse
        from fastapi.staticfiles import StaticFiles
        from starlette.concurrency import run_in_threadpool
    except ImportError as e:
        raise MissingExtraError("segany serve", "server", e.name or "fastapi") from None
    from sqlalchemy.exc import SQLAlchemyError

    from segany import __version__
    from segany.server.db import database_unavailable
    from segany.server.project import Conflict, NotFound, TooLarge
    from segany.server.routes import router
    from segany.server.users import SESSION_COOKIE, Forbidden, LockedOut, Unauthorized

    state = build_state(settings, model)
    app = FastAPI(
        title="segany annotation app",
        version=__version__,
        description="Annotate images with Segment Anything: prompts, pre-fill, masks, "
        "export, retraining. Coordinates are XY pixels of the original image; masks are "
        "COCO RLE.",
    )
    app.state.segany = state

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        token = settings.token
        cookie = None
        if token:
            given = (
                request.headers.get("x-segany-token")
                or _bearer(request.headers.get("authorization"))
                or request.query_params.get("token")
                or request.cookies.get(TOKEN_COOKIE)
            )
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse(
                    {"detail": "this server needs its token (header X-Segany-Token)"}, 401
                )
            cookie = request.query_params.get("token")
        length = request.headers.get("content-length")
        limit = settings.max_upload_bytes + 64 * 1024  # multipart framing
        if length is not None and (not length.isdigit() or int(length) > limit):
            return JSONResponse(
                {"detail": f"request body over the limit of {settings.max_upload_bytes} bytes"},
                413,
            )
        path = request.url.path
        if path.startswith("/api/") and path not in SIGN_IN_PATHS:
            # A project with users: every call names its signed-in user (None: single-user).
            session = request.cookies.get(SESSION_COOKIE)
            try:
                user = await run_in_threadpool(_signed_in, state.users, session)
            except Exception as e:
                if not database_unavailable(e):
                    raise
                return _unavailable(e)
            if user is False:
                detail = "sign in first (POST /api/login with your name and password)"
                return JSONResponse({"detail": detail}, 401)
            request.state.user = user
        response = await call_next(request)
        if cookie:  # the page was opened with ?token=...: its scripts and calls carry a cookie
            response.set_cookie(TOKEN_COOKIE, cookie, httponly=True, samesite="strict")
        return response

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, e: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(e), "current": e.current}, 409)

    @app.exception_handler(InputError)
    async def bad_input(_request: Request, e: InputError) -> JSONResponse:
        kinds = ((NotFound, 404), (TooLarge, 413), (Unauthorized, 401), (Forbidden, 403))
        status = next((code for kind, code in kinds if isinstance(e, kind)), 400)
        if isinstance(e, LockedOut):
            status = 429
        return JSONResponse({"detail": str(e)}, status)

    @app.exception_handler(RequestValidationError)
    async def bad_body(_request: Request, e: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", ""))} for err in e.errors()
        ]
        detail = "the request does not match the schema"
        return JSONResponse({"detail": detail, "errors": errors}, 422)

    @app.exception_handler(OverflowError)
    async def out_of_range(_request: Request, e: OverflowError) -> JSONResponse:
        # An id or number past what the database stores (SQLite: 64-bit): nothing has it.
        return JSONResponse({"detail": f"a number is out of the range stored here ({e})"}, 400)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, e: SQLAlchemyError) -> JSONResponse:
        # Handled here rather than as any Exception, which Starlette re-raises after answering.
        if database_unavailable(e) and not _disk_full(e):
            return _unavailable(e)  # type: ignore[no-any-return]
        return await internal(request, e)

    @app.exception_handler(Exception)
    async def internal(_request: Request, e: Exception) -> JSONResponse:
        if _disk_full(e):  # the server's condition, not a bug: say so (507 Insufficient Storage)
            log.error("disk full: %s", e)
            detail = "the server's disk is full: nothing was saved; free some space and retry"
            return JSONResponse({"detail": detail}, 507)
        log.exception("internal error")
        return JSONResponse({"detail": f"internal error: {type(e).__name__}"}, 500)

    app.include_router(router, prefix="/api")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _unavailable(error: BaseException) -> Any:
    from fastapi.responses import JSONResponse

    log.error("database unavailable: %s", str(error).splitlines()[0] if str(error) else error)
    detail = (
        "the database is unavailable (stopped, restarting or locked): nothing was saved; "
        "retry in a moment"
    )
    return JSONResponse({"detail": detail}, 503, headers={"Retry-After": "5"})


SIGN_IN_PATHS = frozenset({"/api/login", "/api/logout", "/api/me"})


def _signed_in(users: Any, token: str | None) -> dict[str, Any] | None | bool:
    """None in a single-user project; else the session's user, or False (not signed in)."""
    if not users.team():
        return None
    return users.user_for(token) or False


def _disk_full(error: BaseException | None) -> bool:
    """A write refused for space: ENOSPC/EDQUOT, SQLite's 'database or disk is full' or
    PostgreSQL's disk_full (53100), raised directly or as the cause of a wrapper."""
    import errno

    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(error) or getattr(error, "pgcode", None) == "53100":
            return True
        error = error.__cause__ or getattr(error, "orig", None)
    return False


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


__all__ = ["AppState", "create_app", "state_of", "InputError"]
