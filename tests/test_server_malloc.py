"""``segany serve`` caps glibc's malloc arenas (the app's resident size grew with one arena per
request thread under 50 clients; benchmarks/README.md)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
import types

import pytest

from segany.server import malloc_arenas
from segany.server.malloc_arenas import cap_malloc_arenas

# Six threads allocate at once, then glibc prints one "Arena N:" block per arena to stderr.
_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    if sys.argv[1] == "cap":
        from segany.server.malloc_arenas import cap_malloc_arenas
        assert cap_malloc_arenas()
    together = threading.Barrier(6)
    def work():
        held = [bytearray(40_000) for _ in range(20)]
        together.wait()
        del held
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctypes.CDLL(None).malloc_stats()
    """
)


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS, mode], env=env, capture_output=True, text=True, check=True
    )
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "malloc_stats")),
    reason="glibc's malloc_stats counts the arenas",
)
def test_the_cap_keeps_concurrent_threads_to_two_arenas():
    assert _arenas("none") >= 4  # one arena per allocating thread without the cap
    assert _arenas("cap") <= malloc_arenas.DEFAULT_ARENAS


def test_the_environment_setting_wins(monkeypatch):
    calls = []

    def mallopt(*args):
        calls.append(args)
        return 1

    monkeypatch.setattr(
        malloc_arenas.ctypes, "CDLL", lambda _name: types.SimpleNamespace(mallopt=mallopt)
    )
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_malloc_arenas() and calls == []
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert cap_malloc_arenas()
    assert len(calls) == 1 and calls[0][1] == 2


def test_a_c_library_without_mallopt_changes_nothing(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(malloc_arenas.ctypes, "CDLL", lambda _name: object())
    assert cap_malloc_arenas() is False
