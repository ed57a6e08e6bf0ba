"""The app's state (project, database, models, training) and how a route reaches it.

Its own module so the routes and the app that mounts them do not import each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segany.server.settings import ServerSettings


@dataclass
class AppState:
    settings: ServerSettings
    project: Any  # ProjectFolder
    notes: Any  # Annotations
    hub: Any  # ModelHub
    retrainer: Any  # Retrainer
    sessions: Any
    engine: Any
    classes: Any  # Classes
    events: Any  # Events
    users: Any  # Users


def state_of(request: Any) -> AppState:
    return request.app.state.segany  # type: ignore[no-any-return]
