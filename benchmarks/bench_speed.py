"""The speed table of issue 10: reference vs segany on the same weights, in one run.

    python benchmarks/bench_speed.py [--model vit_b|bundled|both] [--repeats 2] [--threads 2]
        [--no-auto] [--no-onnx] [--bf16 always|native] [--quantized-engine onednn]

Rows: set_image in fp32 / bf16 / int8 (with each fast mode's embedding cosine and mask IoU
against fp32 on the parity prompts), one point prompt end to end (masks at full resolution),
the onnxruntime backend's set_image and one point (fp32 and int8; skipped with --no-onnx),
16 boxes in one call (the reference: a loop), and the automatic generator with default options
(reference vs segany fp32, and segany with the fastest native mode). Each timed pair alternates
and keeps the fastest of ``--repeats`` (load on a shared machine only adds time); the
set_image calls each run once untimed first (int8 quantises its copy of the encoder then,
~2 s for vit_b, once per model and process). "peak MB" is the largest resident memory above the
process's level before the call, sampled every 5 ms.
vit_b is the official architecture with seeded weights (the speed does not depend on the
values); "bundled" is segany's tiny model, run by the reference code with the same weights.
bf16 is timed only where it is native unless ``--bf16 always`` (emulated bf16 takes minutes).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "stubs")]

from helpers import max_rel_err, reference_model, seeded_model  # noqa: E402

from segany.inference import precision as P  # noqa: E402
from segany.inference.predictor import Predictor  # noqa: E402
from segany.models import get_config  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakRSS:
    """Largest resident set size above the starting level while the block runs, in bytes."""

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process)


def cpu_model() -> str:
    """The CPU's model name, family and model numbers (a ratio is tuned to a CPU)."""
    info: dict[str, str] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    name, family, model = info.get("model name", "?"), info.get("cpu family"), info.get("model")
    return f"{name} (family {family}, model {model})"


def race(
    fns: list[Callable[[], Any]], repeats: int, warm_up: bool = False
) -> list[tuple[float, float]]:
    """Alternate the calls; per call the fastest time (s) and the largest peak memory (MB).
    ``warm_up``: call each once first, untimed (one-time setup such as int8's quantised copy
    of the encoder then counts in neither column)."""
    if warm_up:
        for fn in fns:
            fn()
    best = [(float("inf"), 0.0)] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            with PeakRSS() as mem:
                t = CLOCK()
                fn()
                dt = CLOCK() - t
            best[i] = (min(best[i][0], dt), max(best[i][1], mem.mb))
    return best


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _prompts(h: int, w: int) -> list[dict]:
    """The parity tests' prompts (tests/test_predictor_parity.py)."""
    from test_predictor_parity import _cases

    return list(_cases(h, w).values())


def _mask_iou(exact: Predictor, fast: Predictor, image: np.ndarray) -> float:
    """Mean IoU of the fast mode's masks with fp32's over the parity prompts (3 masks each)."""
    ious = []
    for prompt in _prompts(*image.shape[:2]):
        for a, b in zip(exact.predict(**prompt).masks, fast.predict(**prompt).masks, strict=True):
            union = (a | b).sum()
            ious.append(1.0 if union == 0 else (a & b).sum() / union)
    return float(np.mean(ious))


def bench_model(name: str, args: argparse.Namespace) -> list[str]:  # noqa: PLR0915
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor
    from skimage import data

    from segany.automatic import MaskGenerator
    from segany.checkpoints import load_model

    model = seeded_model(get_config("vit_b"), seed=0) if name == "vit_b" else load_model(None)
    ref_model = reference_model(model.config, model.state_dict())
    image = data.astronaut()[:480, :, :]  # 480×512, not square
    ref = SamPredictor(ref_model)
    exact = Predictor(model, cache=False)
    modes = {"int8": Predictor(model, precision="int8", cache=False)}
    native_bf16 = P.runs_fast("bf16", torch.device("cpu"))
    if native_bf16 or args.bf16 == "always":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", P.PerformanceWarning)
            modes["bf16"] = Predictor(model, precision="bf16", cache=False)
    rows = _Rows(
        f"{name} ({model.config.name}), image 480×512, {args.threads} threads, "
        f"{args.clock} clock, best of {args.repeats}"
    )

    calls = [lambda: ref.set_image(image), lambda: exact.set_image(image)]
    calls += [lambda p=p: p.set_image(image) for p in modes.values()]
    times = race(calls, args.repeats, warm_up=True)
    (t_ref, m_ref), (t_fp32, m_fp32) = times[:2]
    err = max_rel_err(exact.get_image_embedding(), ref.get_image_embedding())
    rows.append(("set_image fp32", t_ref, m_ref, t_fp32, m_fp32, f"max rel err {err:.1e}"))
    for (mode, pred), (t, m) in zip(modes.items(), times[2:], strict=True):
        cos = _cosine(pred.get_image_embedding(), exact.get_image_embedding())
        iou = _mask_iou(exact, pred, image)
        rows.append((f"set_image {mode}", t_ref, m_ref, t, m, f"cos {cos:.5f}, mask IoU {iou:.4f}"))
    if "bf16" not in modes:
        slow = 1 / P.matmul_speedup("bf16")
        rows.append(("set_image bf16", t_ref, m_ref, None, None, f"emulated: {slow:.1f}x slower"))

    point = dict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]))
    exact.predict(**point)  # the first call on an image also prepares its shared decoder work
    (t_r, m_r), (t_o, m_o) = race(
        [lambda: ref.predict(**point), lambda: exact.predict(**point)], args.repeats * 5
    )
    ours_full = exact.predict(**point, return_logits=True).masks
    err = max_rel_err(ours_full, ref.predict(**point, return_logits=True)[0])
    rows.append(("one point (full-res masks)", t_r, m_r, t_o, m_o, f"max rel err {err:.1e}"))
    boxes = np.array([[100.0, 80.0, 400.0, 420.0]] * 16) + np.arange(16)[:, None] * 4
    (t_r, m_r), (t_o, m_o) = race(
        [lambda: [ref.predict(box=b) for b in boxes], lambda: exact.predict(box=boxes)],
        args.repeats,
    )
    ours_b = exact.predict(box=boxes).logits
    err = max(max_rel_err(ours_b[i], ref.predict(box=b)[2]) for i, b in enumerate(boxes))
    rows.append(("16 boxes, one call", t_r, m_r, t_o, m_o, f"max rel err {err:.1e}"))

    if args.onnx:
        _onnx_rows(rows, model, ref, exact, image, point, args)

    if args.auto:
        from bench_automatic import compare

        gens = [SamAutomaticMaskGenerator(ref_model), MaskGenerator(model, cache=False)]
        fast = P.resolve_precision("auto", torch.device("cpu"))
        if fast != "fp32":
            gens.append(MaskGenerator(model, precision=fast, cache=False))
        outs: list[Any] = [None] * len(gens)

        def run(i: int) -> None:
            outs[i] = gens[i].generate(image)

        times = race([lambda i=i: run(i) for i in range(len(gens))], 1)
        (t_r, m_r), (t_o, m_o) = times[:2]
        problem = compare(outs[1], outs[0])
        same = "identical masks" if not problem else f"DIFFER: {problem}"
        rows.append(("automatic, fp32", t_r, m_r, t_o, m_o, f"{len(outs[1])} masks, {same}"))
        if len(gens) == 3:
            t, m = times[2]
            matched = _matched_iou(outs[2], outs[1])
            # The default thresholds may pass no mask of seeded weights; with both at 0 every
            # candidate is kept, so the fast mode's masks are compared on many (untimed).
            every = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, cache=False)
            kept = [
                MaskGenerator(model, precision=mode, **every).generate(image)  # type: ignore[arg-type]
                for mode in ("fp32", fast)
            ]
            matched += f"; thresholds 0: {_matched_iou(kept[1], kept[0])}"
            rows.append((f"automatic, {fast}", t_r, m_r, t, m, matched))

    return rows.lines


def _onnx_rows(rows, model, ref, exact, image, point, args) -> None:
    """set_image and one point on onnxruntime (fp32, int8), the whole pipeline exported."""
    import tempfile

    try:
        from segany.export import OnnxPredictor, export_pair
    except ImportError as e:  # the onnx extra is missing
        rows.append(("onnxruntime", 0.0, 0.0, None, None, f"not run: {e}"))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for mode, quantize in (("fp32", False), ("int8", True)):
            folder = Path(tmp) / mode
            export_pair(model, folder, quantize=quantize)
            onnx = OnnxPredictor.from_dir(folder, threads=args.threads)
            (t_r, m_r), (t_o, m_o) = race(
                [lambda: ref.set_image(image), lambda o=onnx: o.set_image(image)],
                args.repeats,
                warm_up=True,
            )
            emb = torch.as_tensor(np.asarray(onnx.get_image_embedding()))
            cos = _cosine(emb, exact.get_image_embedding())
            rows.append((f"set_image onnxruntime {mode}", t_r, m_r, t_o, m_o, f"cos {cos:.5f}"))
            onnx.predict(**point)
            (t_r, m_r), (t_o, m_o) = race(
                [lambda: ref.predict(**point), lambda o=onnx: o.predict(**point)],
                args.repeats * 5,
            )
            ours, theirs = exact.predict(**point), onnx.predict(**point)
            best = int(np.argmax(ours.scores))
            a, b = ours.masks[best], theirs.masks[best]
            iou = (a & b).sum() / max((a | b).sum(), 1)
            note = f"best mask IoU {iou:.4f} vs torch fp32"
            rows.append((f"one point onnxruntime {mode}", t_r, m_r, t_o, m_o, note))
        # the reference's current image is the astronaut again for the rows that follow
        ref.set_image(image)


class _Rows:
    """The table, printed row by row as the measurements come in."""

    def __init__(self, title: str) -> None:
        self.lines = [title, _header()]
        print("\n".join(self.lines), flush=True)

    def append(self, row: tuple) -> None:
        step, tr, mr, to, mo, note = row
        if to is None:
            line = f"| {step} | {tr:.3f} | {mr:.0f} | — | — | — | {note} |"
        else:
            ratio = f"{tr / to:.2f}x"
            line = f"| {step} | {tr:.3f} | {mr:.0f} | {to:.3f} | {mo:.0f} | {ratio} | {note} |"
        self.lines.append(line)
        print(line, flush=True)


def _matched_iou(ours: list, base: list) -> str:
    """Mean best-match IoU of the fast mode's masks against fp32's (and the counts)."""
    if not ours or not base:
        return f"{len(ours)} vs {len(base)} masks"
    a = np.stack([r.mask() for r in ours]).reshape(len(ours), -1).astype(np.float32)
    b = np.stack([r.mask() for r in base]).reshape(len(base), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    best = (inter / np.maximum(union, 1)).max(1)
    return f"{len(ours)} vs {len(base)} masks, matched IoU {best.mean():.4f}"


def _header() -> str:
    return (
        "| step | reference s | ref peak MB | segany s | segany peak MB | ratio | accuracy |\n"
        "|---|---|---|---|---|---|---|"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("vit_b", "bundled", "both"), default="both")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-auto", dest="auto", action="store_false")
    ap.add_argument("--no-onnx", dest="onnx", action="store_false")
    ap.add_argument("--bf16", choices=("native", "always"), default="native")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: CPU seconds of this process (use with --threads 1 on a machine shared with "
        "other jobs: waiting for a core is then not counted)",
    )
    ap.add_argument(
        "--quantized-engine",
        choices=torch.backends.quantized.supported_engines,
        help="torch's int8 engine (default: torch's, which runs dynamic int8 through fbgemm). To "
        "imitate an AVX2-only CPU on a newer one, cap every library's instruction set: "
        "FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 "
        "MKL_ENABLE_INSTRUCTIONS=AVX2 (onnxruntime has no such cap: add --no-onnx)",
    )
    args = ap.parse_args()
    if args.quantized_engine:
        torch.backends.quantized.engine = args.quantized_engine
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    flags = P.cpu_flags() or frozenset()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni")
    print(f"CPU: {cpu_model()}")
    print(f"torch {torch.__version__}; CPU flags: {' '.join(f for f in wanted if f in flags)}")
    print(f"auto precision here: {P.resolve_precision('auto', torch.device('cpu'))}")
    names = ["vit_b", "bundled"] if args.model == "both" else [args.model]
    started = time.perf_counter()
    for name in names:
        bench_model(name, args)
        print()
    print(f"benchmark ran {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
