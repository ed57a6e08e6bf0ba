"""Cap glibc's malloc arenas for the server process.

glibc gives each thread that allocates concurrently an arena of its own, up to 8 per core, and
returns little of an arena's memory to the system. The app answers requests on a thread pool:
under 50 clients the resident size of ``segany serve`` kept climbing (315 -> 1609 MiB in five
minutes, benchmarks/README.md) although Python's own allocations stayed flat; with two arenas
the same run peaked at 1082 MiB and levelled off. ``MALLOC_ARENA_MAX`` in the environment does
this but must be set before the process starts; ``mallopt(M_ARENA_MAX, n)`` does it from
inside, for the arenas made from then on (the main one and those made so far stay).
"""

from __future__ import annotations

import ctypes
import os

#: glibc's mallopt parameter number for the arena cap (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
#: Arenas the server keeps: the measured setting (benchmarks/README.md, the app's load run).
DEFAULT_ARENAS = 2


def cap_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Limit glibc to ``arenas`` malloc arenas unless ``MALLOC_ARENA_MAX`` is set (the user's
    choice wins). True when the cap is in force (set here or by the environment); False on a C
    library without ``mallopt`` (musl, macOS, Windows), where nothing changes."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process is linked with
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, int(arenas)))
