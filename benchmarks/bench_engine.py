"""Throughput of ``segany engine`` (images/hour): bundled model and seeded vit_b, 1 and 2
workers, local processes and Ray.

    python benchmarks/bench_engine.py [--images 8] [--vit-b-images 4] [--size 256]
        [--points-per-side 16] [--models tiny,vit_b] [--executors local,ray,ray-joined]
        [--workers 1,2]

Each configuration annotates the same generated collection (synthetic scenes, ``--size`` px on
the long side) into a fresh output folder. Two figures per run:
- ``run img/h``: images / whole run time, worker start-up (imports, model load) included;
- ``steady img/h``: the images after each worker's first / the time from the moment every
  worker has delivered once to the last result: the rate a long run settles at (needs more
  images than workers; nan otherwise).
Ray is started once (``num_cpus`` = the machine's cores, listening on 127.0.0.1 only) before
its runs; its start is in neither figure. ``ray-joined``: a cluster started apart (``ray start
--head`` on 127.0.0.1, token authentication as this Ray sets it up) that the command line joins
by ``--address``, as a user would, from its own process; ``steady`` is not measured there.
The vit_b weights are random (seeded) and saved to a
temporary file: the throughput does not depend on the values, and no download is needed.
Speeds on a shared machine vary with the other load: the load average is printed with the
results.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import perturb_  # noqa: E402

from segany.engine import EngineConfig, WorkerSpec, run_engine  # noqa: E402


def make_collection(folder: Path, count: int, size: int) -> None:
    import cv2
    import numpy as np

    from segany.train.synth import SynthConfig, iter_scenes

    folder.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(long_side=size, min_short_side=size * 3 // 4)
    for i, (image, _) in enumerate(iter_scenes(5, count, cfg)):
        cv2.imwrite(str(folder / f"img_{i:04d}.jpg"), np.ascontiguousarray(image[..., ::-1]))


def seeded_vit_b(path: Path) -> str:
    import torch

    from segany.checkpoints import save_model
    from segany.models import build_sam, get_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_sam(get_config("vit_b"))
    save_model(perturb_(model, 0).eval(), path)
    return str(path)


def run_one(sources: Path, out: Path, model: str | None, executor: str, workers: int, pps: int):
    stamps: list[float] = []
    spec = WorkerSpec(
        model=model,
        options={"points_per_side": pps},
        threads=max(1, (os.cpu_count() or 1) // workers),
    )
    config = EngineConfig(
        [str(sources)], str(out), spec=spec, workers=workers, executor=executor, shard_size=100
    )
    summary = run_engine(config, on_progress=lambda n: stamps.append(time.perf_counter()))
    # From the moment every worker has delivered once (start-up over) to the last result.
    n = summary["processed_this_run"]
    steady = (
        3600 * (n - workers) / (stamps[-1] - stamps[workers - 1]) if n > workers else float("nan")
    )
    return summary, steady


class JoinedCluster:
    """``ray start --head`` on 127.0.0.1 in its own session and temporary folder."""

    def __init__(self) -> None:
        import shutil
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmp = tempfile.mkdtemp(prefix="segray")
        ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_TMPDIR=self.tmp)
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), self.env.get("PYTHONPATH", "")])
        self.head = subprocess.Popen(
            [ray_cli, "start", "--head", f"--port={self.port}", f"--num-cpus={os.cpu_count()}"]
            + ["--node-ip-address=127.0.0.1", "--include-dashboard=false"]
            + ["--disable-usage-stats", "--block", f"--temp-dir={self.tmp}"],
            env=dict(self.env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:  # the head's GCS port opens when the cluster is up
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Ray head did not come up") from None
                time.sleep(0.5)

    def run(self, sources: Path, out: Path, model: str | None, workers: int, pps: int) -> dict:
        import json
        import subprocess

        cmd = [sys.executable, "-m", "segany", "engine", "run", str(sources), "-o", str(out)]
        cmd += ["--executor", "ray", "--address", f"127.0.0.1:{self.port}", "-q"]
        cmd += ["-w", str(workers), "--points-per-side", str(pps)]
        cmd += ["--threads-per-worker", str(max(1, (os.cpu_count() or 1) // workers))]
        cmd += ["--shard-size", "100"] + (["-m", model] if model else [])
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads((out / "summary.json").read_text())

    def stop(self) -> None:
        import shutil
        import signal

        os.killpg(self.head.pid, signal.SIGTERM)  # --block stops the head's processes
        self.head.wait(timeout=60)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8, help="images for the bundled model")
    ap.add_argument("--vit-b-images", type=int, default=4, help="images for vit_b")
    ap.add_argument("--size", type=int, default=256, help="long side of the images")
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--models", default="tiny,vit_b")
    ap.add_argument("--executors", default="local,ray,ray-joined")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    rows = []
    started = time.perf_counter()
    executors = args.executors.split(",")
    if "ray" in executors:
        import ray

        from segany.engine.raysession import loopback_only

        with loopback_only():  # on 127.0.0.1 only, as the engine's own Ray
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
            )
    joined = JoinedCluster() if "ray-joined" in executors else None
    for name in args.models.split(","):
        count = args.images if name == "tiny" else args.vit_b_images
        sources = tmp / f"images_{name}"
        make_collection(sources, count, args.size)
        model = None if name == "tiny" else seeded_vit_b(tmp / "vit_b_seeded.safetensors")
        for executor in executors:
            for workers in (int(w) for w in args.workers.split(",")):
                out = tmp / f"out_{name}_{executor}_{workers}"
                if executor == "ray-joined":
                    assert joined is not None
                    summary = joined.run(sources, out, model, workers, args.points_per_side)
                    steady = float("nan")
                else:
                    summary, steady = run_one(
                        sources, out, model, executor, workers, args.points_per_side
                    )
                rows.append((name, executor, workers, summary, steady))
                per_run = summary["images_per_hour"]
                print(
                    f"{name:6s} {executor:10s} workers={workers} threads/worker="
                    f"{summary['threads_per_worker']}: {per_run:8.0f} img/h run, "
                    f"{steady:8.0f} img/h steady ({summary['processed_this_run']} images, "
                    f"{summary['seconds']:.1f} s, {summary['masks_per_image']} masks/image)",
                    flush=True,
                )
    if joined is not None:
        joined.stop()
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()}, "
        f"bench {time.perf_counter() - started:.0f} s; images {args.size} px, "
        f"{args.points_per_side}x{args.points_per_side} grid; outputs in {tmp}"
    )


if __name__ == "__main__":
    main()
