"""SAM-HQ's in-browser decoder beside SAM's, in headless Chromium, each on its own `segany serve`.

    python benchmarks/bench_browser_hq.py [--clicks 5]

Two ViT-B-shaped models (width 768, 12 heads, 1024-px input; 3 encoder blocks, since the
encoder's depth changes only the server's one-off encoding, not what a click costs): SAM's
decoder and SAM-HQ's, seeded weights. For each, the page opens a photo and the script reads
the bytes the page fetched for the image (the embedding, plus the early map for SAM-HQ), then
times one-point decodes in the page (onnxruntime-web, WebAssembly, one thread) and through the
server's decode endpoint (the fallback; the server runs the PyTorch decoder), the median of
``--clicks`` after one untimed click each. Needs the dev extra (playwright) and
/usr/bin/chromium. The CPU model and the load average are printed: read the times with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "stubs")]

TIMED = """async ([xy, where, n]) => {
  const prompt = {points: [xy], labels: [1], box: null};
  await window.segany.decode(prompt, true, where);
  const times = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await window.segany.decode(prompt, true, where);
    times.push(performance.now() - t);
  }
  return times;
}"""


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    from playwright.sync_api import sync_playwright
    from server_fixtures import coins_png
    from test_server_browser import ARGS, CHROMIUM, _serve, open_page

    from segany.config import DecoderConfig
    from segany.models import VIT_B, build_sam

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=5)
    args = parser.parse_args()
    encoder = dataclasses.replace(VIT_B.encoder, depth=3, global_attn_indexes=(1, 2))
    models = {
        "SAM (vit_b-shaped)": dataclasses.replace(VIT_B, name="b3", encoder=encoder),
        "SAM-HQ (vit_b-shaped)": dataclasses.replace(
            VIT_B, name="hq-b3", encoder=encoder, decoder=DecoderConfig(hq=True)
        ),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        photo = Path(tmp) / "coins.png"
        photo.write_bytes(coins_png())
        for name, cfg in models.items():
            root = Path(tmp) / cfg.name
            root.mkdir()
            torch.manual_seed(0)
            torch.save(build_sam(cfg).state_dict(), root / "model.pth")
            with _serve(root, "--model", str(root / "model.pth")) as (url, _):
                errors: list[str] = []
                page = open_page(browser, url, errors)
                assert page.get_attribute("body", "data-decoder") == "browser", name
                page.set_input_files("#upload", str(photo))
                page.wait_for_function("window.segany.state.embedding !== null", timeout=600_000)
                sent = page.evaluate(
                    "(() => { const e = window.segany.state.embedding;"
                    " return 4 * (e.data.length + (e.early ? e.early.data.length : 0)); })()"
                )
                xy = [157, 103]
                browser_ms = page.evaluate(TIMED, [xy, "browser", args.clicks])
                server_ms = page.evaluate(TIMED, [xy, "server", args.clicks])
                page.close()
                assert not errors, errors
            rows.append((name, sent, statistics.median(browser_ms), statistics.median(server_ms)))
            print(f"  {name} done, load average {os.getloadavg()[0]:.2f}", flush=True)
        browser.close()
    print(f"\n{_cpu()}, load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{'model':<24}{'MB per image':>14}{'page decode ms':>16}{'server decode ms':>18}")
    for name, sent, b, s in rows:
        print(f"{name:<24}{sent / 1e6:>14.1f}{b:>16.0f}{s:>18.0f}")


if __name__ == "__main__":
    main()
