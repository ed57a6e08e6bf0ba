"""The Ray executor on a local Ray instance (2 CPUs) gives the local executor's annotations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from engine_fixtures import SPEC, annotations_only, documents, make_tars, scene_files

from segany.engine import EngineConfig, run_engine
from segany.engine.check import verify

ray = pytest.importorskip("ray", reason="Ray is the optional extra segany[ray] (in dev on CI)")


@pytest.fixture(scope="module")
def local_ray():
    from segany.engine.raysession import ray_session

    with ray_session(None, 2):  # as the engine starts it: on loopback only
        yield


def test_a_local_ray_listens_on_loopback_only(local_ray) -> None:
    import os

    from engine_fixtures import listening_addresses

    @ray.remote
    def where() -> str:
        return ray.util.get_node_ip_address()

    assert ray.get(where.remote()) == "127.0.0.1"  # a worker's view
    hosts = listening_addresses([os.getpid()])  # Ray's servers and workers are our children
    assert hosts and all(h in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for h in hosts), hosts


def test_loopback_addresses_stay_on_loopback() -> None:
    from segany.engine.raysession import is_loopback

    for address in (None, "local", "127.0.0.1:6379", "localhost:1", "[::1]:2", "ray://127.0.0.5:3"):
        assert is_loopback(address), address
    for address in ("auto", "10.0.0.5:6379", "ray://head.example:10001", "192.0.2.2:1"):
        assert not is_loopback(address), address


@pytest.mark.slow
def test_ray_and_local_executors_give_the_same_annotations(local_ray, tmp_path: Path) -> None:
    tars = make_tars(tmp_path / "tars", 6, per_tar=4)
    outs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        config = EngineConfig(
            [str(t) for t in tars],
            str(out),
            spec=SPEC,
            workers=2,
            executor=executor,
            shard_size=4,
            shard_kind="tar",
        )
        summary = run_engine(config)
        assert summary["executor"] == executor
        assert summary["annotated"] == 6 and summary["failed"] == 4
        assert verify(out) == []
        outs[executor] = out
    local, on_ray = (annotations_only(documents(outs[k])) for k in ("local", "ray"))
    assert local == on_ray and sum(len(v) for v in local.values()) > 0
    assert (outs["local"] / "errors.csv").read_text() == (outs["ray"] / "errors.csv").read_text()
    # Same items in the same shards: the manifests agree entry by entry.
    manifests = [json.loads((outs[k] / "manifest.json").read_text()) for k in ("local", "ray")]
    assert manifests[0] == manifests[1]


def _fake_annotator(marker: str, spec):
    """A model-free worker that dies on images named die_*: die_once only the first time."""
    import os

    def annotate(task):
        flag = Path(marker) / (task.key.replace("/", "_") + ".seen")
        if "die_always" in task.key or ("die_once" in task.key and not flag.exists()):
            flag.touch()
            os._exit(9)
        info = {"image_id": task.index, "width": 1, "height": 1, "file_name": task.file_name}
        doc = {"image": info, "annotations": []}
        return {"index": task.index, "key": task.key, "ok": True, "doc": doc}

    return annotate


@pytest.mark.slow
def test_a_dead_ray_actor_is_replaced_and_its_image_retried_once(local_ray, tmp_path: Path) -> None:
    import sys
    from functools import partial

    from ray import cloudpickle

    from segany.engine.ray_executor import RayExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers lack tests/
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "die_once.png", "die_always.png", "b.png"):
        (src / name).write_bytes(b"bytes")
    (tmp_path / "marks").mkdir()
    executor = RayExecutor(SPEC, 2, factory=partial(_fake_annotator, str(tmp_path / "marks")))
    out = tmp_path / "out"
    summary = run_engine(EngineConfig([str(src)], str(out), spec=SPEC), executor=executor)
    assert summary["annotated"] == 3 and summary["failed"] == 1
    rows = (out / "errors.csv").read_text().splitlines()
    assert len(rows) == 2 and "die_always.png" in rows[1] and "died twice" in rows[1]


def _free_port() -> int:
    """A port that was free a moment ago: nothing listens there."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _listening() -> Iterator[str]:
    """host:port of a socket that accepts connections (and is no Ray cluster)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_an_address_nobody_answers_is_refused_at_once() -> None:
    import time

    from segany.engine.ray_executor import check_reachable
    from segany.errors import InputError

    port = _free_port()
    start = time.monotonic()
    with pytest.raises(InputError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(InputError, match="no Ray cluster answers"):
        check_reachable(f"ray://127.0.0.1:{port}")
    assert time.monotonic() - start < 5
    for bad in ("127.0.0.1", "host:port", ":6379"):
        with pytest.raises(InputError, match="expected host:port"):
            check_reachable(bad)
    with _listening() as address:
        check_reachable(address)
    check_reachable("auto")  # Ray's own word: left to Ray


def test_a_refused_connection_says_how_to_switch_on_token_auth(monkeypatch, tmp_path) -> None:
    # What Ray >= 2.5x says when a cluster with token authentication meets a driver without it.

    from segany.engine.ray_executor import RayExecutor

    asked: list[str] = []

    def refuse(**kwargs):
        asked.append(kwargs["address"])
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:1")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "shutdown", lambda: None)  # the module's Ray stays for later tests
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with _listening() as address:
        executor = RayExecutor(SPEC, 1, address=address)
        with pytest.raises(ConnectionError, match="RAY_AUTH_MODE=token"):
            executor.run(iter([]), lambda _: None)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # already set: Ray's message alone
    with _listening() as address:
        executor = RayExecutor(SPEC, 1, address=address)
        with pytest.raises(ConnectionError) as err:
            executor.run(iter([]), lambda _: None)
    assert "RAY_AUTH_MODE" not in str(err.value)
    assert len(asked) == 2 and all(a.startswith("127.0.0.1:") for a in asked)


@pytest.mark.slow
def test_the_command_joins_a_running_cluster_by_its_address(tmp_path: Path) -> None:
    """``ray start --head`` on loopback in its own session, then ``segany engine run
    --address 127.0.0.1:PORT``: the annotations are the local executor's, and nothing of the
    cluster listens beyond loopback."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    from engine_fixtures import OPTIONS, listening_addresses, scene_files

    src = tmp_path / "src"
    src.mkdir()
    for name, data, _ in scene_files(3):
        (src / name).write_bytes(data)
    port = _free_port()
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    # Its own temporary folder (short: Ray's socket paths must fit), so the host's
    # /tmp/ray/ray_current_cluster, which a bare ray.init() follows, never names this head.
    ray_tmp = tempfile.mkdtemp(prefix="segray")
    root = str(Path(__file__).resolve().parents[1])
    # This Ray turns token authentication on for `ray start` (a token exists or is made), and
    # a driver joining by address needs RAY_AUTH_MODE=token to send it.
    env = dict(os.environ, PYTHONWARNINGS="ignore", RAY_AUTH_MODE="token", RAY_TMPDIR=ray_tmp)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    head = subprocess.Popen(
        [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2"]
        + ["--node-ip-address=127.0.0.1", "--include-dashboard=false"]
        + ["--disable-usage-stats", "--block", f"--temp-dir={ray_tmp}"],
        env=dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"),  # keeps 127.0.0.1 (see raysession)
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # the head's GCS port opens when the cluster is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start --head exited"
                assert time.monotonic() < deadline, "the Ray head did not come up"
                time.sleep(0.5)
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "segany", "engine", "run", str(src), "-o", str(out)]
        cmd += ["--executor", "ray", "--address", f"127.0.0.1:{port}", "-q", "-w", "2"]
        cmd += ["--threads-per-worker", "1"]
        for key, value in OPTIONS.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        hosts = listening_addresses([head.pid])
        assert hosts and all(h in ("127.0.0.1", "::ffff:127.0.0.1") for h in hosts), hosts
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block stops the head's processes on SIGTERM
        head.wait(timeout=60)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "ray" and summary["annotated"] == 3
    assert verify(out) == []
    local = tmp_path / "local"
    run_engine(EngineConfig([str(src)], str(local), spec=SPEC, executor="local"))
    assert annotations_only(documents(out)) == annotations_only(documents(local))


def test_without_an_address_a_new_local_ray_is_started(monkeypatch) -> None:
    # Not a bare ray.init(): that joins whatever `ray start` last left on this host (or fails
    # on its stale address file) instead of starting the run's own Ray.
    from segany.engine.ray_executor import RayExecutor

    asked: list[dict] = []

    def stop_here(**kwargs):
        asked.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", stop_here)
    # The session shuts down what it started: not the module's Ray, which later tests use.
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(RuntimeError, match="stop here"):
        RayExecutor(SPEC, 2).run(iter([]), lambda _: None)
    assert asked[0]["address"] == "local" and asked[0]["num_cpus"] == 2 * SPEC.threads


def test_a_ray_worker_that_cannot_see_the_output_stops_the_run(local_ray, tmp_path) -> None:
    from functools import partial

    from segany.engine.ray_executor import RayExecutor
    from segany.engine.shards import OutputNotVisibleError, OutputSpec
    from segany.engine.worker import ShardWorker

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"bytes")
    elsewhere = OutputSpec(str(tmp_path / "elsewhere"), items=1, shard_size=1, token="x")
    executor = RayExecutor(SPEC, 1, factory=partial(ShardWorker, elsewhere))
    config = EngineConfig([str(src)], str(tmp_path / "out"), spec=SPEC)
    with pytest.raises(OutputNotVisibleError, match="shared file system"):
        run_engine(config, executor=executor)


@pytest.mark.slow
def test_workers_auto_on_ray_sizes_from_the_cluster_and_refuses_what_cannot_fit(
    local_ray, tmp_path: Path
) -> None:
    """The local Ray has one node of 2 CPUs; with memory for one worker there, auto picks one
    worker of two threads, and an explicit 2 is refused with the figures (Ray's memory)."""
    from segany.engine.sizing import ray_resources
    from segany.errors import InputError

    (node,) = ray_resources(ray)
    per_worker = int(node.memory * 0.6)
    src = tmp_path / "src"
    src.mkdir()
    for name, data, _ in scene_files(3, seed=4):
        (src / name).write_bytes(data)
    config = EngineConfig(
        [str(src)],
        str(tmp_path / "out"),
        spec=SPEC,
        workers="auto",
        executor="ray",
        memory_per_worker=per_worker,
    )
    summary = run_engine(config)
    assert summary["annotated"] == 3 and verify(tmp_path / "out") == []
    assert (summary["workers"], summary["threads_per_worker"]) == (1, 2)
    assert summary["sizing"]["fit_per_node"] == {node.name: 1}
    config.out, config.workers = str(tmp_path / "out2"), 2
    with pytest.raises(InputError, match="room for 1"):
        run_engine(config)


def test_a_plan_for_ray_sizes_from_what_ray_reports(local_ray, tmp_path: Path) -> None:
    """A plan for --executor ray without an address sizes as the run would: from Ray's view
    of this machine (its memory resource), not the local executor's."""
    from segany.engine.plan import plan_run
    from segany.engine.sizing import ray_resources

    src = tmp_path / "src"
    src.mkdir()
    for name, data, _ in scene_files(1, seed=4):
        (src / name).write_bytes(data)
    config = EngineConfig(
        [str(src)], str(tmp_path / "out"), spec=SPEC, workers="auto", executor="ray"
    )
    plan = plan_run(config, sample=0)
    (node,) = ray_resources(ray)
    assert plan["nodes"] == [{"name": node.name, "cpus": 2, "memory": node.memory, "gpus": 0}]
    assert plan["fit_per_node"] == {node.name: plan["workers"]}
