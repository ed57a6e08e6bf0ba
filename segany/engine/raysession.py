"""Starting or joining Ray for a run, on loopback unless a remote cluster is named.

On Linux, Ray replaces ``127.0.0.1``/``localhost`` with the machine's interface address
wherever it resolves an address (its ``resolve_ip_for_localhost``), and a Ray started by
``ray.init()`` listens on every interface: an unauthenticated Ray on the network runs code for
whoever reaches it (its job API, its workers). Ray keeps loopback addresses as they are when its
multi-node mode is off, which its documented switch ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
does (read when ``ray`` is imported; ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` is the
value it reads later, set here too in case ``ray`` was imported first). Then every Ray process
of a local run listens on 127.0.0.1 only, and a driver joins a cluster at ``127.0.0.1:PORT``
as such (the cluster must have been started the same way, e.g.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head``; see docs/engine.md).

A host that is not loopback is a remote cluster: Ray is left to its own defaults, because the
user asked for a cluster on the network by naming it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from segany.errors import InputError

CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_ENV = "RAY_AUTH_MODE"
CONNECT_TIMEOUT_S = 10.0  # for the TCP check of a cluster address


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host:port`` -> (host, port); ``InputError`` otherwise."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"Ray address {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)


def is_loopback(address: str | None) -> bool:
    """No address (a local Ray for the run), or a host:port whose host is loopback."""
    if address is None or address == "local":
        return True
    if address == "auto":
        return False
    host, _ = split_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise InputError unless ``host:port`` (or ``ray://host:port``) accepts a TCP connection.
    ``auto`` and ``local`` are Ray's own words and are left to it."""
    if address in ("auto", "local"):
        return
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise InputError(
            f"no Ray cluster answers at {address} ({e.strerror or e}): start one with "
            "`ray start --head`, or leave out the address to start a local Ray for the run"
        ) from None


@contextmanager
def loopback_only() -> Iterator[None]:
    """While inside: Ray keeps 127.0.0.1 as the node address (see the module's doc). Child
    processes Ray starts meanwhile (its servers, raylet, workers) inherit the setting."""
    from ray._private import ray_constants

    before_env = os.environ.get(CLUSTER_ENV)
    before = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(CLUSTER_ENV, None)
        else:
            os.environ[CLUSTER_ENV] = before_env


@contextmanager
def ray_session(address: str | None, num_cpus: int) -> Iterator[Any]:
    """Ray, initialised for a run and shut down after it (unless it was initialised before,
    by the caller, which is then used as is)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    loopback = is_loopback(address)
    saved_auth = os.environ.get(AUTH_ENV)
    if address is not None:
        check_reachable(address)
    try:
        if loopback:
            with loopback_only():
                _init(ray, address, num_cpus)
            node = ray.util.get_node_ip_address()
            if not is_loopback(f"{node}:0"):
                raise RuntimeError(f"Ray took the address {node}, not loopback; stopped")
        else:
            _init(ray, address, num_cpus)
        yield ray
    finally:
        ray.shutdown()
        # ray.init() of a new local Ray switches token authentication on in os.environ.
        if saved_auth is None:
            os.environ.pop(AUTH_ENV, None)
        else:
            os.environ[AUTH_ENV] = saved_auth


def _init(ray: Any, address: str | None, num_cpus: int) -> None:
    common = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        # "local": a new instance, never a `ray start` one found on this host
        ray.init(address="local", num_cpus=num_cpus, **common)
        return
    try:
        ray.init(address=address, **common)
    except ConnectionError as e:
        hint = ""
        if AUTH_ENV not in os.environ:
            hint = (
                " (a cluster that uses Ray's token authentication also needs "
                f"{AUTH_ENV}=token, and its token, set for this command)"
            )
        raise ConnectionError(f"{e}{hint}") from None
