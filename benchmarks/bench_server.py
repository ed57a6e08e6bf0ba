"""Load run of the annotation app on loopback: concurrent clients working as annotators do.

    python benchmarks/bench_server.py [--clients 50] [--seconds 60] [--decodes 3]
        [--size 320x240] [--team] [--no-events]

Starts ``segany serve`` (bundled tiny model, SQLite) in a temporary project on 127.0.0.1 and a
free port, then runs ``--clients`` threads for ``--seconds``. Each client, in a loop, does what
the page does for one image: lists the images, uploads a new one (unique pixels, so each costs
one encoder run), fetches its embedding, sends ``--decodes`` decode requests with a random
click (the server's decoder, the page's fallback), saves the last mask, lists the image's
masks, gives the mask a class, marks the image annotated, and every fifth image reads the
figures (``/api/stats``). Each client also keeps the live-update stream (``/api/events``) open
and counts the events it receives (``--no-events``: none). With ``--team`` the project has
users: an admin and one annotator per client, each client signed in as its own (every request
then goes through the sign-in check).

Requests in flight when the time is up finish and count. Prints requests/s, p50/p95 latency
per endpoint, errors (any non-2xx or exception: by endpoint and status, with the first bodies),
the server's resident memory over time (sampled every 5 s: first, middle, last, peak, and the
change between the middle and the last third of the run), the load average before and after,
and the CPU. Nothing leaves the machine; the run stops by itself.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import socket
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
PASSWORD = "bench-password"


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


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Results:
    """Latencies by endpoint, errors by (endpoint, status), events received; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self.bodies: list[str] = []
        self.events = 0

    def call(self, http, name: str, method: str, path: str, ok: tuple[int, ...], **kw):
        t = time.perf_counter()
        try:
            r = http.request(method, path, **kw)
            status = str(r.status_code)
        except Exception as e:  # noqa: BLE001 - every failure is an error of the run
            r, status = None, type(e).__name__
        elapsed = time.perf_counter() - t
        with self.lock:
            self.times[name].append(elapsed)
            if r is None or r.status_code not in ok:
                self.errors[(name, status)] += 1
                if len(self.bodies) < 5:
                    self.bodies.append(f"{name} {status}: {r.text[:200] if r else ''}")
                return None
        return r


def listen(url: str, cookies: dict, stop: float, out: Results) -> None:
    """Hold the live-update stream open until ``stop``, counting its events."""
    import httpx

    try:
        with httpx.Client(base_url=url, cookies=cookies, timeout=httpx.Timeout(20.0)) as http:
            with http.stream("GET", "/api/events") as r:
                for line in r.iter_lines():
                    if line.startswith("event:"):
                        with out.lock:
                            out.events += 1
                    if time.time() > stop:
                        return
    except httpx.HTTPError:
        if time.time() < stop:
            with out.lock:
                out.errors[("events stream", "dropped")] += 1


def client(url: str, n: int, args: argparse.Namespace, stop: float, out: Results) -> None:
    import httpx

    rng = np.random.default_rng(n)
    w, h = args.width, args.height
    with httpx.Client(base_url=url, timeout=300) as http:
        if args.team:
            login = {"name": f"ann{n}", "password": PASSWORD}
            if not out.call(http, "POST /api/login", "POST", "/api/login", (200,), json=login):
                return
        if args.events:
            cookies = dict(http.cookies)
            threading.Thread(target=listen, args=(url, cookies, stop, out), daemon=True).start()
        loops = 0
        while time.time() < stop:
            loops += 1
            out.call(http, "GET /api/images", "GET", "/api/images", (200,))
            files = {"file": (f"c{n}.png", image_bytes(rng, w, h), "image/png")}
            r = out.call(http, "POST /api/images", "POST", "/api/images", (201,), files=files)
            if r is None:
                continue
            image = f"/api/images/{r.json()['id']}"
            out.call(http, "GET embedding", "GET", f"{image}/embedding", (200,))
            rle = None
            for _ in range(args.decodes):
                click = [[float(rng.uniform(0, w)), float(rng.uniform(0, h))]]
                body = {"points": click, "labels": [1], "multimask": False}
                r = out.call(http, "POST decode", "POST", f"{image}/decode", (200,), json=body)
                if r is not None:
                    rle = r.json()["masks"][0]
            mask = None
            if rle is not None:
                body = {"rle": rle, "origin": "clicks", "seconds": 1.0}
                # an empty mask is refused (400) by design: not an error of the server
                mask = out.call(http, "POST masks", "POST", f"{image}/masks", (201, 400), json=body)
            out.call(http, "GET masks", "GET", f"{image}/masks", (200,))
            if mask is not None and mask.status_code == 201:
                m = mask.json()
                body = {"version": m["version"], "label": f"thing{loops % 5}"}
                out.call(http, "PATCH mask", "PATCH", f"/api/masks/{m['id']}", (200,), json=body)
            body = {"status": "annotated"}
            out.call(http, "PUT status", "PUT", f"{image}/status", (200,), json=body)
            if loops % 5 == 0:
                out.call(http, "GET /api/stats", "GET", "/api/stats", (200,))


def make_team(url: str, clients: int) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        admin = {"name": "admin", "role": "admin", "password": PASSWORD}
        http.post("/api/users", json=admin).raise_for_status()
        http.post("/api/login", json={"name": "admin", "password": PASSWORD}).raise_for_status()
        for n in range(clients):
            body = {"name": f"ann{n}", "role": "annotator", "password": PASSWORD}
            http.post("/api/users", json=body).raise_for_status()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--decodes", type=int, default=3, help="decodes per uploaded image")
    ap.add_argument("--size", default="320x240", help="uploaded image size WxH")
    ap.add_argument("--team", action="store_true", help="users and sign-in (one per client)")
    ap.add_argument("--no-events", dest="events", action="store_false")
    args = ap.parse_args()
    args.width, args.height = (int(v) for v in args.size.split("x"))
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="segany-bench-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "segany", "serve", f"{tmp}/project", "--port", str(port)]
        server = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"{url}/api/me", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            if args.team:
                make_team(url, args.clients)
            results = Results()
            memory: list[tuple[float, float]] = []
            start = time.time()
            stop = start + args.seconds

            def sample() -> None:
                while time.time() < stop:
                    memory.append((time.time() - start, rss_mb(server.pid)))
                    time.sleep(5)

            threading.Thread(target=sample, daemon=True).start()
            threads = [
                threading.Thread(target=client, args=(url, i, args, stop, results))
                for i in range(args.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.time() - start
            memory.append((elapsed, rss_mb(server.pid)))
            peak = rss_mb(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(30)

    load_after = os.getloadavg()
    total = sum(len(v) for v in results.times.values())
    errors = sum(results.errors.values())
    print(f"{args.clients} clients{' (team: each signed in)' if args.team else ''}, "
          f"{args.seconds:.0f} s (ran {elapsed:.1f} s), {args.width}x{args.height} uploads, "
          f"{args.decodes} decodes per upload; {cpu_name()}, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f}")  # fmt: skip
    print(f"requests: {total} ({total / elapsed:.2f}/s), errors: {errors}, "
          f"live events received: {results.events}")  # fmt: skip
    for (name, status), count in sorted(results.errors.items()):
        print(f"  error {name}: {status} x{count}")
    for body in results.bodies:
        print(f"  {body}")
    print(f"{'endpoint':18s} {'n':>6s} {'p50 ms':>9s} {'p95 ms':>9s}")
    for name, values in results.times.items():
        print(f"{name:18s} {len(values):6d} {pct(values, 50):9.1f} {pct(values, 95):9.1f}")
    rss = [m for _, m in memory]
    third = max(1, len(rss) // 3)
    growth = np.mean(rss[-third:]) - np.mean(rss[third : 2 * third] or rss[-third:])
    print(f"server memory (VmRSS, every 5 s): first {rss[0]:.0f} MiB, middle "
          f"{rss[len(rss) // 2]:.0f} MiB, last {rss[-1]:.0f} MiB, peak (VmHWM) {peak:.0f} MiB; "
          f"last third minus middle third: {growth:+.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
