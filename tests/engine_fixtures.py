"""A small generated collection for the engine tests: synthetic scenes plus broken inputs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segany.engine import WorkerSpec
from segany.train.synth import SynthConfig, iter_scenes

#: Small generator settings: a 6×6 grid and thresholds the bundled model passes on the scenes.
OPTIONS = {"points_per_side": 6, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}
MAX_PIXELS = 150 * 150  # big.png (160×160) is over it, the scenes (≤ 96×96) are not
SPEC = WorkerSpec(options=OPTIONS, threads=1, max_pixels=MAX_PIXELS)

#: Broken inputs and the words their reason must contain.
BAD = {
    "notimage.png": "not an image",
    "trunc.jpg": "cannot decode",
    "empty.jpg": "empty",
    "big.png": "too large",
}


def scene_files(count: int, seed: int = 3) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(name, JPEG bytes, SA-1B ground truth) for ``count`` small synthetic scenes."""
    from segany.train.synth import sa1b_record

    cfg = SynthConfig(long_side=96, min_short_side=72, max_objects=5)
    out = []
    for i, (image, masks) in enumerate(iter_scenes(seed, count, cfg)):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]))
        assert ok
        name = f"sa_{i}.jpg"
        out.append((name, buf.tobytes(), sa1b_record(i, name, image, masks)))
    return out


def bad_files() -> dict[str, bytes]:
    good = scene_files(1, seed=99)[0][1]
    ok, big = cv2.imencode(".png", np.full((160, 160, 3), 128, np.uint8))
    assert ok
    return {
        "notimage.png": b"this is text, not pixels\n",
        "trunc.jpg": good[: len(good) // 3],
        "empty.jpg": b"",
        "big.png": big.tobytes(),
    }


def make_folder(root: Path, count: int = 6, *, with_json: bool = False) -> Path:
    """``root/imgs/sub{0,1}/sa_N.jpg`` (+ ``sa_N.json``) and ``root/imgs/bad/*``."""
    folder = root / "imgs"
    for i, (name, data, record) in enumerate(scene_files(count)):
        sub = folder / f"sub{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).write_bytes(data)
        if with_json:
            (sub / name).with_suffix(".json").write_text(json.dumps(record))
    (folder / "bad").mkdir(parents=True, exist_ok=True)
    for name, data in bad_files().items():
        (folder / "bad" / name).write_bytes(data)
    return folder


def make_tars(root: Path, count: int = 6, per_tar: int = 4) -> list[Path]:
    """SA-1B style shards ``sa_00000N.tar`` of ``sa_N.jpg`` + ``sa_N.json``; the broken files
    go into the last shard."""
    import io

    scenes = scene_files(count)
    members: list[list[tuple[str, bytes]]] = []
    for start in range(0, count, per_tar):
        part = []
        for name, data, record in scenes[start : start + per_tar]:
            part += [(name, data), (name[:-4] + ".json", json.dumps(record).encode())]
        members.append(part)
    members[-1] += list(bad_files().items())
    paths = []
    root.mkdir(parents=True, exist_ok=True)
    for n, part in enumerate(members):
        path = root / f"sa_{n:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in part:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def documents(out: Path) -> dict[str, dict[str, Any]]:
    """Image file name -> its SA-1B document, from a finished engine output."""
    from segany.engine.check import iter_documents

    docs = {}
    for _entry, doc in iter_documents(out):
        name = doc["image"]["file_name"]
        assert name not in docs, f"{name} annotated twice"
        docs[name] = doc
    return docs


def annotations_only(docs: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Documents without the run-specific image info (image ids follow the item order)."""
    return {k: v["annotations"] for k, v in sorted(docs.items())}


# ----- a Ray cluster of several nodes on loopback, for the cluster tests -----------------------

#: Run by the holder process: Ray's own cluster utilities start a head and worker nodes in this
#: process's session with multi-node address resolution off, so every node is 127.0.0.1 (a
#: worker node by `ray start --address` refuses to start in that mode). Prints the address and
#: each node's process ids, then holds the cluster until its stdin closes.
_HOLDER = """
import json, sys
from ray.cluster_utils import Cluster
cpus = [int(x) for x in sys.argv[1:]]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus[0],
                  "include_dashboard": False}, shutdown_at_exit=True)
nodes = [cluster.add_node(num_cpus=n) for n in cpus[1:]]
def pids(node):
    return [p.process.pid for ps in node.all_processes.values() for p in ps]
print(json.dumps({"address": cluster.address, "head": pids(cluster.head_node),
                  "nodes": [pids(n) for n in nodes]}), flush=True)
sys.stdin.read()
cluster.shutdown()
"""


def ray_environment(tmp: str) -> dict[str, str]:
    """The environment for a command that runs or joins a test's Ray: Ray's files in ``tmp``
    (short: Ray's socket paths must fit), so Ray's "current cluster" file, which a bare
    ray.init() follows, stays out of the host's /tmp/ray; segany importable."""
    import os

    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, RAY_TMPDIR=tmp, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    env.pop("RAY_ADDRESS", None)
    return env


class LoopbackCluster:
    """``with LoopbackCluster([2, 1]) as c:`` a head with 2 CPUs and a worker node with 1, all on
    127.0.0.1, in a temporary folder of its own; ``c.address``, ``c.env`` (for commands that
    join it), ``c.kill_node(0)`` (SIGKILL of that node's raylet and everything under it).
    Leaving stops every process the cluster started, and only those."""

    def __init__(self, cpus: list[int]) -> None:
        self.cpus = cpus

    def __enter__(self) -> LoopbackCluster:
        import subprocess
        import sys
        import tempfile

        self.tmp = tempfile.mkdtemp(prefix="segray")
        self.env = ray_environment(self.tmp)
        holder_env = dict(self.env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, *map(str, self.cpus)],
            env=holder_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            info = json.loads(line)
        except ValueError:
            self.__exit__(None, None, None)
            raise RuntimeError("the test cluster did not start") from None
        self.address: str = info["address"]
        self.head_pids: list[int] = info["head"]
        self.node_pids: list[list[int]] = info["nodes"]
        return self

    def tree(self, pids: list[int]) -> list[Any]:
        import psutil

        procs = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                procs += [p, *p.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return procs

    def kill_node(self, n: int) -> list[int]:
        """SIGKILL worker node ``n``'s processes (its raylet and the workers under it)."""
        import psutil

        procs = self.tree(self.node_pids[n])
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        return [p.pid for p in procs]

    def __exit__(self, *exc: Any) -> None:
        import shutil
        import subprocess

        import psutil

        everything = self.tree([self.proc.pid])
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            pass
        for p in everything:  # whatever the cluster's own shutdown left: ours only
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(everything, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses the given processes (and their children) listen on."""
    import psutil

    hosts = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                conns = p.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            hosts.update(c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN)
    return hosts
