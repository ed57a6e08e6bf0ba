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
from torch import nn

from segany.errors import InputError
from segany.export.decoder import SamOnnxDecoder
from segany.export.onnx_files import trace_to_bytes, with_metadata, write_model
from segany.modeling import MaskDecoderHQ, MaskDecoderSAM2, Sam, Sam2
from segany.modeling.families import family_of_module
from segany.modeling.hiera.encoder import unpack_high_res

ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
#: A SAM-HQ encoder's second output, the name SAM-HQ's decoder export gives that input.
ENCODER_EARLY_OUTPUT = "interm_embeddings"
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
    """Seeded example inputs for tracing the decoder (shapes as in ``SamOnnxDecoder``; a
    SAM-HQ model's also hold ``interm_embeddings`` 1×1×h×w×E, ``SamHQOnnxDecoder``; a SAM 2
    model's the two high-res maps, ``Sam2OnnxDecoder``)."""
    pe = model.prompt_encoder
    size = model.image_size
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(1, pe.embed_dim, *pe.image_embedding_size, generator=gen)
    early: tuple[torch.Tensor, ...] = ()
    if isinstance(model.mask_decoder, MaskDecoderHQ):  # the early map, channels last
        width = model.mask_decoder.vit_dim
        early = (torch.randn(1, 1, *pe.image_embedding_size, width, generator=gen),)
    elif model.is_sam2:  # the high-res maps: C/8 at 4× the embedding's side, C/4 at 2×
        h, w = pe.image_embedding_size
        early = tuple(
            torch.randn(1, pe.embed_dim // d, f * h, f * w, generator=gen)
            for d, f in ((8, 4), (4, 2))
        )
    return (
        embeddings,
        *early,
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
    multimask_output: bool = False,
    hq_token_only: bool = False,
) -> Path:
    """Write the prompt encoder + mask decoder of ``model`` to ``path`` (.onnx); returns the path.

    The points axis is dynamic (any N ≥ 1) and so is the output size (from ``orig_im_size``).
    ``quantize``: int8 dynamic quantisation of the weights (smaller file, looser accuracy).
    SAM-HQ models: the decoder also takes ``interm_embeddings`` (K×1×h×w×E, K dynamic), and
    with ``return_single_mask`` answers as SAM-HQ's export script does, ``multimask_output``
    and ``hq_token_only`` choosing the answer (see ``segany.export.decoder_hq``).
    SAM 2 models: the decoder also takes ``high_res_feats_0/1``, and with
    ``return_single_mask`` gives SAM 2's single-mask answer (``segany.export.decoder_sam2``).
    """
    extra: dict[str, bool] = {}
    if model.is_hq:
        from segany.export.decoder_hq import SamHQOnnxDecoder

        extra = {"multimask_output": multimask_output, "hq_token_only": hq_token_only}
        module: SamOnnxDecoder = SamHQOnnxDecoder(
            model,
            return_single_mask=return_single_mask,
            use_stability_score=use_stability_score,
            return_extra_metrics=return_extra_metrics,
            **extra,
        )
    elif hq_token_only or multimask_output:  # (SAM 2's too: its single answer is fixed)
        raise InputError(
            "multimask_output and hq_token_only choose a SAM-HQ decoder's answer; this model's "
            "decoder is SAM's (its file answers with every mask token, or with "
            "return_single_mask the official demo's choice)"
        )
    elif model.is_sam2:
        from segany.export.decoder_sam2 import Sam2OnnxDecoder

        module = Sam2OnnxDecoder(
            model,
            return_single_mask=return_single_mask,
            use_stability_score=use_stability_score,
            return_extra_metrics=return_extra_metrics,
        )
    else:
        module = SamOnnxDecoder(
            model,
            return_single_mask=return_single_mask,
            use_stability_score=use_stability_score,
            return_extra_metrics=return_extra_metrics,
        )
    extra_meta: dict[str, list[float]] = {}
    dec = model.mask_decoder
    if isinstance(dec, MaskDecoderSAM2):  # its single-answer rule, for the numpy runtime
        extra_meta["sam2_stability"] = [float(dec.stability_delta), float(dec.stability_thresh)]
    module.eval()
    points_axis = {1: "num_points"}
    dynamic = {"point_coords": points_axis, "point_labels": points_axis}
    if model.is_hq:
        dynamic["interm_embeddings"] = {0: "num_interm"}
    data = trace_to_bytes(
        module,
        decoder_example_inputs(model),
        input_names=module.input_names,
        output_names=module.output_names,
        dynamic_axes=dynamic,
        opset=opset,
    )
    meta = _metadata(
        model,
        "decoder",
        return_single_mask=return_single_mask,
        use_stability_score=use_stability_score,
        return_extra_metrics=return_extra_metrics,
        quantized=quantize,
        hq=model.is_hq,
        sam2=model.is_sam2,
        **extra,
        **extra_meta,
    )
    return write_model(with_metadata(data, meta), path, quantize=quantize)


class _EncoderWithHighRes(nn.Module):
    """SAM 2's encoder with the decoder's two high-resolution maps as outputs:
    B×3×S×S -> (B×C×h×w, B×C/8×4h×4w, B×C/4×2h×2w)."""

    def __init__(self, encoder: nn.Module, width: int) -> None:
        super().__init__()
        family = family_of_module(encoder)
        if family is None:
            raise InputError("a SAM 2 model needs an encoder of a registered family")
        self.encoder, self.family, self.width = encoder, family, width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embeddings, packed = self.family.forward_with_early(self.encoder, images)
        s0, s1 = unpack_high_res(packed, self.width)  # a reshuffle of the packed map, exact
        return embeddings, s0, s1


class _EncoderWithEarly(nn.Module):
    """An encoder with its family's early feature map as a second output, stacked as SAM-HQ's
    decoder export takes it: B×3×S×S -> (B×C×h×w, 1×B×h×w×E)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        family = family_of_module(encoder)
        if family is None:
            raise InputError("a SAM-HQ model needs an encoder of a registered family")
        self.encoder, self.family = encoder, family

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings, early = self.family.forward_with_early(self.encoder, images)
        return embeddings, early[None]


def export_encoder(
    model: Sam,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
) -> Path:
    """Write the image encoder of ``model`` to ``path`` (.onnx): ``image`` 1×3×S×S normalised and
    padded -> ``image_embeddings`` 1×C×h×w (SAM-HQ models: and ``interm_embeddings``
    1×1×h×w×E, the early map in the layout SAM-HQ's decoder export takes; SAM 2 models, whose
    image is stretched to S×S instead of padded: and ``high_res_feats_0`` 1×C/8×4h×4w,
    ``high_res_feats_1`` 1×C/4×2h×2w). ``quantize``: int8
    dynamic quantisation of the weights (MatMul/linear layers), for CPUs without fast bf16."""
    encoder: nn.Module = model.image_encoder.eval()
    outputs: tuple[str, ...] = (ENCODER_OUTPUT,)
    if model.is_hq:  # SAM-HQ's decoder also reads the early map: a second output
        encoder, outputs = _EncoderWithEarly(encoder).eval(), (*outputs, ENCODER_EARLY_OUTPUT)
    elif model.is_sam2:  # SAM 2's decoder reads the two high-res maps
        from segany.export.decoder_sam2 import HIGH_RES_NAMES

        width = model.prompt_encoder.embed_dim
        encoder, outputs = _EncoderWithHighRes(encoder, width).eval(), (*outputs, *HIGH_RES_NAMES)
    size = model.encoder_size
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    data = trace_to_bytes(
        encoder,
        (example,),
        input_names=(ENCODER_INPUT,),
        output_names=outputs,
        dynamic_axes=None,
        opset=opset,
    )
    stats: dict[str, object] = {}
    if isinstance(model, Sam2):  # its normalisation on [0, 1] pixels, as the model holds it
        stats = {"unit_pixel_mean": list(model._unit_mean), "unit_pixel_std": list(model._unit_std)}
    meta = _metadata(model, "encoder", quantized=quantize, **stats)
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
