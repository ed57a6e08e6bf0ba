"""Load run of the annotation app on loopback: concurrent clients uploading and decoding.

    python benchmarks/bench_server.py [--clients 20] [--seconds 60] [--decodes 3] [--size 320x240]

Starts ``segany serve`` (bundled tiny model, SQLite) in a temporary project on 127.0.0.1 and a
free port, then runs ``--clients`` threads for ``--seconds``: each uploads a new image (unique
pixels, so every upload costs one encoder run), then sends ``--decodes`` decode requests with
a random click on it, and repeats. Requests in flight when the time is up finish and count.
Prints requests/s, p50/p95 latency per kind, errors (any non-2xx or exception), and the server
process's peak resident memory (VmHWM). Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_bytes(rng: np.random.Generator, w: int, h: int) -> bytes:
    # A few flat shapes on noise: something to segment, and unique content per upload.
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    for _ in range(4):
        x, y = rng.integers(0, w - 40), rng.integers(0, h - 40)
        img[y : y + rng.integers(20, 60), x : x + rng.integers(20, 60)] = rng.integers(80, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client(url: str, seed: int, args: argparse.Namespace, stop: float, out: dict) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    w, h = args.width, args.height
    with httpx.Client(base_url=url, timeout=300) as http:
        while time.time() < stop:
            data = image_bytes(rng, w, h)
            t = time.perf_counter()
            try:
                r = http.post("/api/images", files={"file": (f"c{seed}.png", data, "image/png")})
                ok = r.status_code == 201
            except httpx.HTTPError:
                ok = False
            out["upload"].append(time.perf_counter() - t)
            if not ok:
                out["errors"] += 1
                continue
            image_id = r.json()["id"]
            for _ in range(args.decodes):
                body = {"points": [[float(rng.uniform(0, w)), float(rng.uniform(0, h))]],
                        "labels": [1]}  # fmt: skip
                t = time.perf_counter()
                try:
                    r = http.post(f"/api/images/{image_id}/decode", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                out["decode"].append(time.perf_counter() - t)
                out["errors"] += 0 if ok else 1


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--decodes", type=int, default=3, help="decodes per uploaded image")
    ap.add_argument("--size", default="320x240", help="uploaded image size WxH")
    args = ap.parse_args()
    args.width, args.height = (int(v) for v in args.size.split("x"))

    with tempfile.TemporaryDirectory(prefix="segany-bench-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "segany", "serve", f"{tmp}/project", "--port", str(port)]
        server = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"{url}/api/project", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            results: dict = {"upload": [], "decode": [], "errors": 0}
            start = time.time()
            stop = start + args.seconds
            threads = [
                threading.Thread(target=client, args=(url, i, args, stop, results))
                for i in range(args.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.time() - start
            peak = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)

    total = len(results["upload"]) + len(results["decode"])
    print(f"{args.clients} clients, {args.seconds:.0f} s (ran {elapsed:.1f} s), "
          f"{args.width}x{args.height} uploads, {args.decodes} decodes per upload")  # fmt: skip
    print(f"requests: {total} ({total / elapsed:.2f}/s), errors: {results['errors']}")
    for kind in ("upload", "decode"):
        v = results[kind]
        print(
            f"{kind:7s} n={len(v):5d}  p50 {pct(v, 50):8.1f} ms  p95 {pct(v, 95):8.1f} ms"
            f"  mean {statistics.fmean(v) * 1000 if v else float('nan'):8.1f} ms"
        )
    print(f"server peak memory (VmHWM): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
