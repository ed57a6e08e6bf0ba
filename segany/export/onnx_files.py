"""Write ONNX files: trace with the TorchScript exporter, optionally quantise, rename atomically.

torch 2.13's default exporter (``dynamo=True``) needs ``onnxscript`` and rewrites the graph through
torch.export; the TorchScript exporter (``dynamo=False``) traces these modules reliably with
standard ops only, so it is used here. Files are built in memory (or in a temporary sibling for
quantisation) and renamed into place, so a reader never sees a half-written model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segany.errors import InputError, MissingExtraError
from segany.formats._atomic import write_bytes_atomic

#: Protobuf's limit: larger models (vit_h's encoder, 2.5 GB in fp32) would need external data.
_PROTO_LIMIT = 2**31 - 1


def require_onnx() -> Any:
    """Import ``onnx`` or raise the error that names the extra."""
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("ONNX export", "onnx", "onnx") from e
    return onnx


def trace_to_bytes(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    opset: int,
) -> bytes:
    """Export ``module`` called on ``args`` to ONNX bytes (TorchScript exporter)."""
    require_onnx()
    if not 11 <= opset <= 20:
        raise InputError(f"opset must be between 11 and 20, got {opset}")
    n_params = sum(p.numel() for p in module.parameters())
    if n_params * 4 >= _PROTO_LIMIT:
        raise InputError(
            f"the module has {n_params:,} parameters ({n_params * 4 / 2**30:.1f} GiB in fp32), "
            "over ONNX's 2 GiB single-file limit; export a smaller variant"
        )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer warns about shape-derived values it keeps symbolic (what we want).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects
            export_params=True,
            verbose=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
            dynamo=False,
        )
    return buffer.getvalue()


def with_metadata(data: bytes, metadata: Mapping[str, str]) -> bytes:
    """ONNX ``data`` with ``metadata`` added to the model's metadata_props (read back with
    ``InferenceSession.get_modelmeta().custom_metadata_map``)."""
    onnx = require_onnx()
    proto = onnx.load_from_string(data)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return bytes(proto.SerializeToString())


def write_model(data: bytes, path: str | os.PathLike[str], *, quantize: bool) -> Path:
    """Write ONNX ``data`` to ``path`` atomically; with ``quantize``, int8 dynamic quantisation of
    the weights first (onnxruntime.quantization.quantize_dynamic, QUInt8 as the official export)."""
    target = Path(path)
    if target.suffix != ".onnx":
        raise InputError(f"an ONNX file name must end in .onnx, got {target.name!r}")
    if not quantize:
        write_bytes_atomic(target, data)
        return target
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("int8 quantisation", "onnx", "onnxruntime") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        fp32.write_bytes(data)
        # It prints progress notes and logs a generic pre-processing hint on the root logger.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_dynamic(
                    fp32,
                    int8,
                    per_channel=False,
                    reduce_range=False,
                    weight_type=QuantType.QUInt8,
                )
        finally:
            root.setLevel(level)
        write_bytes_atomic(target, int8.read_bytes())
    return target
