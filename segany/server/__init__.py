"""``segany serve``: the annotation app (the paper's data engine as a web tool).

- ``settings``: what a server run is configured with (project folder, database, limits, token).
- ``db``: the SQLAlchemy schema and its versioned migrations (kept in code).
- ``project``: the project folder (images, embeddings, exports, model versions) and its rules:
  sanitised names, upload and pixel limits, nothing read or written outside the folder.
- ``modelhub``: model versions, decode and pre-fill, through ``embeddings`` (the library's
  embedding cache in the project, plus a bounded LRU), ``sessions`` (one Predictor per
  image, kept across clicks) and ``prompt_checks`` (a request's prompts, checked once).
- ``exporting`` / ``training``: SA-1B, COCO and PNG exports; retraining in the background.
- ``users``: a team's users, roles, sign-in sessions and who may do what (none: single-user).
- ``app``: the FastAPI application (JSON API under ``/api``, OpenAPI at ``/docs``) and the page.

FastAPI, SQLAlchemy and uvicorn come with the ``server`` extra and are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segany.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def create_app(settings: ServerSettings, **kwargs: Any) -> Any:
    """The FastAPI app for ``settings`` (see ``segany.server.app.create_app``)."""
    from segany.server.app import create_app as build

    return build(settings, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "ServerSettings":
        from segany.server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'segany.server' has no attribute {name!r}")
