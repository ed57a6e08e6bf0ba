"""Seconds for one training forward and backward of an image encoder (seeded weights).

Times whatever ``segany`` is imported; to compare two commits, run it once per checkout,
alternating, e.g. for the autograd attention fix (da55e87) against the commit before it:

    git worktree add /tmp/before 2804cc0
    for i in 1 2; do
      PYTHONPATH=/tmp/before python benchmarks/bench_train_encoder.py --variant vit_b
      python benchmarks/bench_train_encoder.py --variant vit_b
    done

On the 2-core AVX2 host (2 threads, one 1024-px image): before 37-41 s forward and 86-102 s
backward, after 24.7-25.9 s and 29.2-31.0 s.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import segany.modeling.vit.encoder as ie
from segany.models import build_sam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="vit_b", help="vit_b, vit_l or vit_h")
    ap.add_argument("--batch", type=int, default=1, help="images per step")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    enc = build_sam(args.variant).image_encoder.train()
    size = enc.img_size
    x = torch.randn(args.batch, 3, size, size)
    t0 = time.perf_counter()
    y = enc(x)
    t1 = time.perf_counter()
    y.square().mean().backward()
    t2 = time.perf_counter()
    row = {"segany": ie.__file__, "variant": args.variant, "size": size, "batch": args.batch}
    print(json.dumps({**row, "forward_s": round(t1 - t0, 2), "backward_s": round(t2 - t1, 2)}))


if __name__ == "__main__":
    main()
