"""``export_decoder`` and ``export_encoder``: a segany ``Sam`` to ONNX files.

The decoder has the official web-demo interface (see ``segany.export.decoder``). The encoder takes
``image`` 1×3×S×S float32 (S = 1024 officially): the image resized so its longest side is S,
normalised with the model's pixel mean/std and zero-padded at the bottom and right, i.e. exactly
what ``Sam.preprocess`` returns; it outputs ``image_embeddings`` 1×C×h×w (1×256×64×64).
Normalisation stays outside the graph so the encoder is the plain ViT and the caller's numpy
preprocessing (``segany.export.runtime``) is the single place that knows the padding rule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from segany.export.decoder import DECODER_INPUTS, SamOnnxDecoder
from segany.export.onnx_files import trace_to_bytes, with_metadata, write_model
from segany.modeling import Sam

ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
DEFAULT_OPSET = 17
#: File names ``export_pair`` writes (and ``OnnxPredictor.from_dir`` reads).
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"


def _metadata(model: Sam, kind: str, **extra: object) -> dict[str, str]:
    """What the numpy runtime needs to preprocess and postprocess without the torch model."""
    name = getattr(model.config, "name", None)
    meta = {
        "segany.kind": kind,
        "segany.model": str(name) if name else "custom",
        "segany.image_size": str(int(model.image_size)),
        "segany.encoder_size": str(int(model.encoder_size)),
        "segany.pixel_mean": json.dumps(model.pixel_mean.flatten().tolist()),
        "segany.pixel_std": json.dumps(model.pixel_std.flatten().tolist()),
        "segany.mask_threshold": repr(float(model.mask_threshold)),
    }
    meta.update({f"segany.{k}": json.dumps(v) for k, v in extra.items()})
    return meta


def decoder_example_inputs(model: Sam, num_points: int = 5) -> tuple[torch.Tensor, ...]:
    """Seeded example inputs for tracing the decoder (shapes as in ``SamOnnxDecoder``)."""
    pe = model.prompt_encoder
    size = model.image_size
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, pe.embed_dim, *pe.image_embedding_size, generator=gen),
        torch.randint(0, size, (1, num_points, 2), generator=gen).float(),
        torch.randint(0, 4, (1, num_points), generator=gen).float(),
        torch.randn(1, 1, *pe.mask_input_size, generator=gen),
        torch.tensor([1.0]),
        torch.tensor([1500.0, 2250.0]),
    )


def export_decoder(
    model: Sam,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    return_single_mask: bool = True,
    quantize: bool = False,
    use_stability_score: bool = False,
    return_extra_metrics: bool = False,
) -> Path:
    """Write the prompt encoder + mask decoder of ``model`` to ``path`` (.onnx); returns the path.

    The points axis is dynamic (any N ≥ 1) and so is the output size (from ``orig_im_size``).
    ``quantize``: int8 dynamic quantisation of the weights (smaller file, looser accuracy).
    """
    module = SamOnnxDecoder(
        model,
        return_single_mask=return_single_mask,
        use_stability_score=use_stability_score,
        return_extra_metrics=return_extra_metrics,
    ).eval()
    points_axis = {1: "num_points"}
    data = trace_to_bytes(
        module,
        decoder_example_inputs(model),
        input_names=DECODER_INPUTS,
        output_names=module.output_names,
        dynamic_axes={"point_coords": points_axis, "point_labels": points_axis},
        opset=opset,
    )
    meta = _metadata(
        model,
        "decoder",
        return_single_mask=return_single_mask,
        use_stability_score=use_stability_score,
        return_extra_metrics=return_extra_metrics,
        quantized=quantize,
    )
    return write_model(with_metadata(data, meta), path, quantize=quantize)


def export_encoder(
    model: Sam,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
) -> Path:
    """Write the image encoder of ``model`` to ``path`` (.onnx): ``image`` 1×3×S×S normalised and
    padded -> ``image_embeddings`` 1×C×h×w. ``quantize``: int8 dynamic quantisation of the
    weights (MatMul/linear layers), for CPUs without fast bf16."""
    encoder = model.image_encoder.eval()
    size = model.encoder_size
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    data = trace_to_bytes(
        encoder,
        (example,),
        input_names=(ENCODER_INPUT,),
        output_names=(ENCODER_OUTPUT,),
        dynamic_axes=None,
        opset=opset,
    )
    meta = _metadata(model, "encoder", quantized=quantize)
    return write_model(with_metadata(data, meta), path, quantize=quantize)


def export_pair(
    model: Sam,
    folder: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and a multimask ``decoder.onnx`` (all 4 mask tokens, what
    ``OnnxPredictor`` needs) into ``folder``; returns both paths."""
    out = Path(folder)
    encoder = export_encoder(model, out / ENCODER_FILE, opset=opset, quantize=quantize)
    decoder = export_decoder(
        model, out / DECODER_FILE, opset=opset, return_single_mask=False, quantize=quantize
    )
    return encoder, decoder
