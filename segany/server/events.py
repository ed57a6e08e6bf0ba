"""Live updates: what changed in the project, pushed to every open page (server-sent events).

``Events.publish`` is called where the database changes (``Annotations``, ``Classes``), from
any request thread; each page listening on ``GET /api/events`` gets one ``text/event-stream``
message per change: ``event: <kind>`` (``mask``, ``image``, ``classes``, ``model``: another
version is current; ``reload`` asks for everything) and ``data:`` a JSON object (``image_id``,
``mask_id``, ``action``). A page reloads what it shows when a change concerns it. A comment
line every ``HEARTBEAT`` seconds keeps proxies from closing an idle stream and lets the server
notice a page that has gone.

The hub lives in one server process: several processes on one PostgreSQL database each tell
only their own pages (their pages still get a 409 on a stale edit, as before).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

HEARTBEAT = 15.0
QUEUE_SIZE = 256  # a page that falls this far behind is told to reload everything


class Events:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = []
        self.published = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, **data: Any) -> None:
        """Tell every listening page (thread-safe; never blocks the caller)."""
        message = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        with self._lock:
            subscribers = list(self._subscribers)
            self.published += 1
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, message)
            except RuntimeError:  # that page's loop is closed: it is gone
                self._drop(queue)

    def _drop(self, queue: asyncio.Queue[str]) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s[1] is not queue]

    async def stream(self, is_disconnected: Any) -> AsyncIterator[str]:
        """One page's messages until it goes (``is_disconnected``: an async callable)."""
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        try:
            yield "retry: 2000\n\n"  # a dropped connection is retried after 2 s
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), HEARTBEAT)
                except asyncio.TimeoutError:
                    if await is_disconnected():
                        return
                    yield ": still here\n\n"
        finally:
            self._drop(queue)


def _offer(queue: asyncio.Queue[str], message: str) -> None:
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:  # far behind: drop what is queued and ask for a full reload
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait("event: reload\ndata: {}\n\n")
