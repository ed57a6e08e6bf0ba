"""Hugging Face ``transformers`` SAM 2 (``Sam2Model``, and ``Sam2VideoModel``'s image part) <->
segany's SAM 2 key names, and their config.json.

The SAM 1 counterpart is ``segany.checkpoints.hf``; this module reuses its renaming machinery
and its prompt-encoder / decoder rules, which hold for SAM 2 too, and adds what differs. Each
name below was checked against ``transformers/models/sam2/modeling_sam2.py`` (5.x):

- the encoder: the Hiera family's ``hf_prefix_rules`` (``image_encoder.trunk.`` is
  ``vision_encoder.backbone.``, ``norm1/2`` ``layer_norm1/2``, the blocks' ``mlp.layers.0/1``
  ``mlp.proj_in/proj_out``, ``patch_embed.proj`` ``patch_embed.projection``, the neck's
  ``convs.N.conv`` ``convs.N``); segany's ``image_encoder.conv_s0/s1`` are transformers'
  ``mask_decoder.conv_s0/s1`` and ``image_encoder.no_mem_embed`` its ``no_memory_embedding``;
- the prompt encoder's four point embeddings (``point_embeddings.0..3``, each 1×C) are one 4×C
  ``prompt_encoder.point_embed.weight``, split and stacked here (the one reshaping);
- the two-way transformer's attention out-projections ``out_proj`` are ``o_proj``, its MLPs'
  ``lin1/lin2`` ``proj_in/proj_out``;
- the object-score head is an MLP head like the IoU head (``layers.0..2`` <-> ``proj_in``,
  ``layers.0``, ``proj_out``);
- ``Sam2Model`` keeps two copies of the random-Fourier matrix (``shared_image_embedding`` and
  ``prompt_encoder.shared_embedding``, not tied): they must be equal, segany has one.

A ``Sam2VideoModel`` folder holds the same image weights plus the video ones, set aside by name;
its ``occlusion_spatial_embedding_parameter`` (the official 2.1's ``no_obj_embed_spatial``)
tells SAM 2.1 from 2.0. An image-only ``Sam2Model`` cannot tell: it reads as 2.1 (the two
releases' image models are the same network).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from segany.checkpoints.hf import _PROMPT_DECODER_RULES, _compile, _rename
from segany.config import DecoderConfig, PromptConfig
from segany.errors import CheckpointError
from segany.modeling.families import get_family
from segany.modeling.hiera.hf_config import vision_out_chans
from segany.models import PIXEL_MEAN, PIXEL_STD, SamConfig, name_known_variant

#: config.json ``model_type`` of transformers' SAM 2 image model and video model.
HF_SAM2_MODEL_TYPES = ("sam2", "sam2_video")

#: Top-level names of ``Sam2VideoModel``'s video-only weights.
HF_VIDEO_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "memory_temporal_positional_encoding",
    "no_memory_positional_encoding",
    "no_object_pointer",
    "object_pointer_proj.",
    "occlusion_spatial_embedding_parameter",
    "temporal_positional_encoding_projection_layer.",
    "mask_downsample.",
)
_HF_21_MARK = "occlusion_spatial_embedding_parameter"

_ATTNS = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
# (segany prefix, transformers prefix): SAM 2's own, ahead of SAM 1's generic decoder rules.
_SAM2_RULES: tuple[tuple[str, str], ...] = (
    *(
        (
            f"mask_decoder.transformer.layers.{{n}}.{a}.out_proj.",
            f"mask_decoder.transformer.layers.{{n}}.{a}.o_proj.",
        )
        for a in _ATTNS
    ),
    (
        "mask_decoder.transformer.final_attn_token_to_image.out_proj.",
        "mask_decoder.transformer.final_attn_token_to_image.o_proj.",
    ),
    (
        "mask_decoder.transformer.layers.{n}.mlp.lin1.",
        "mask_decoder.transformer.layers.{n}.mlp.proj_in.",
    ),
    (
        "mask_decoder.transformer.layers.{n}.mlp.lin2.",
        "mask_decoder.transformer.layers.{n}.mlp.proj_out.",
    ),
    ("mask_decoder.obj_score_token.", "mask_decoder.obj_score_token."),
)

_HEADS = "|".join(
    (
        r"mask_decoder\.output_hypernetworks_mlps\.\d+\.",
        r"mask_decoder\.iou_prediction_head\.",
        r"mask_decoder\.pred_obj_score_head\.",
    )
)
_SEGANY_HEAD = re.compile(rf"^({_HEADS})layers\.(\d+)\.(.*)$")
_HF_HEAD = re.compile(rf"^({_HEADS})(?:proj_in|proj_out|layers\.(\d+))\.(.*)$")

_POINTS = re.compile(r"^prompt_encoder\.point_embeddings\.(\d+)\.weight$")
_HF_POINTS = "prompt_encoder.point_embed.weight"
_HF_PE = "shared_image_embedding.positional_embedding"
_HF_PROMPT_PE = "prompt_encoder.shared_embedding.positional_embedding"


def _rules(to_hf: bool) -> list[tuple[re.Pattern[str], str]]:
    pairs = [*get_family("hiera").hf_prefix_rules, *_SAM2_RULES, *_PROMPT_DECODER_RULES]
    return [(_compile(s), h) if to_hf else (_compile(h), s) for s, h in pairs]


def is_hf_sam2(keys: list[str]) -> bool:
    """True when the keys are transformers' SAM 2 names (its Hiera trunk)."""
    return any(k.startswith(("vision_encoder.backbone.", "no_memory_embedding")) for k in keys)


def _head_depths(keys: list[str]) -> dict[str, int]:
    """Linear layers of each transformers MLP head (head prefix -> depth)."""
    depth: dict[str, int] = {}
    for key in keys:
        m = _HF_HEAD.match(key)
        if m:
            # proj_in is the 1st Linear, layers.j the (j+2)-th, proj_out the last
            idx = int(m.group(2)) + 3 if m.group(2) is not None else 2
            depth[m.group(1)] = max(depth.get(m.group(1), 0), idx)
    return depth


def _one_pe(state: dict[str, torch.Tensor]) -> None:
    """Keep one random-Fourier matrix (under ``_HF_PE``); the copies must agree."""
    prompt = state.pop(_HF_PROMPT_PE, None)
    if prompt is None:
        return
    shared = state.setdefault(_HF_PE, prompt)
    if shared is not prompt and not (
        shared.shape == prompt.shape and (shared.is_meta or torch.equal(shared, prompt))
    ):
        raise CheckpointError(
            f"transformers SAM 2 weights: {_HF_PE} and {_HF_PROMPT_PE} differ; the official "
            "model has one positional matrix for both (a converted checkpoint stores it twice)"
        )


def hf_sam2_to_segany(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """transformers SAM 2 keys -> (segany's SAM 2 state dict, the video-only tensors set aside,
    the release "2.0"/"2.1"). Keys no rule knows pass through, so the strict check names them."""
    image = {k: v for k, v in state.items() if not k.startswith(HF_VIDEO_PREFIXES)}
    video = {k: v for k, v in state.items() if k.startswith(HF_VIDEO_PREFIXES)}
    release = "2.0" if video and _HF_21_MARK not in video else "2.1"
    _one_pe(image)
    depths = _head_depths(list(image))
    rules = _rules(to_hf=False)
    out: dict[str, torch.Tensor] = {}
    for key, value in image.items():
        if key == _HF_POINTS:
            if value.ndim != 2:
                raise CheckpointError(
                    f"transformers SAM 2 weights: {key} should be N×C, got {tuple(value.shape)}"
                )
            for i in range(value.shape[0]):
                out[f"prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1]
            continue
        m = _HF_HEAD.match(key)
        if m:
            head, mid, rest = m.group(1), m.group(2), m.group(3)
            if key.startswith(head + "proj_in."):
                idx = 0
            elif key.startswith(head + "proj_out."):
                idx = depths[head] - 1
            else:
                idx = int(mid) + 1
            out[f"{head}layers.{idx}.{rest}"] = value
        else:
            out[_rename(key, rules) or key] = value
    return out, video, release


def segany_to_hf_sam2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """segany's SAM 2 keys -> the names ``Sam2Model.save_pretrained`` writes (both copies of
    the positional matrix, the point embeddings stacked)."""
    depth: dict[str, int] = {}
    for key in state:
        m = _SEGANY_HEAD.match(key)
        if m:
            depth[m.group(1)] = max(depth.get(m.group(1), 0), int(m.group(2)) + 1)
    rules = _rules(to_hf=True)
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for key, value in state.items():
        p = _POINTS.match(key)
        if p:
            points[int(p.group(1))] = value
            continue
        m = _SEGANY_HEAD.match(key)
        if m:
            head, idx, rest = m.group(1), int(m.group(2)), m.group(3)
            last = depth[head] - 1
            name = "proj_in" if idx == 0 else "proj_out" if idx == last else f"layers.{idx - 1}"
            out[f"{head}{name}.{rest}"] = value
            continue
        new = _rename(key, rules) or key
        out[new] = value
        if new == _HF_PE:
            out[_HF_PROMPT_PE] = value.clone()  # its own storage: safetensors refuses shared
    if points:
        if sorted(points) != list(range(len(points))):
            raise CheckpointError(f"point embeddings numbered {sorted(points)}")
        out[_HF_POINTS] = torch.cat([points[i] for i in range(len(points))], dim=0)
    return out


# --- config.json -------------------------------------------------------------------------------

# transformers' defaults for fields a config.json may leave out (the official numbers).
_PROMPT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "image_size": 1024,
    "patch_size": 16,
    "mask_input_channels": 16,
    "num_point_embeddings": 4,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "scale": 1,
}
_DECODER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "mlp_dim": 2048,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "attention_downsample_rate": 2,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise CheckpointError(f"Hugging Face SAM 2 config.json: {what} is not supported by segany")


def config_from_hf_sam2(
    config: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None
) -> SamConfig:
    """A ``SamConfig`` from transformers' ``Sam2Model`` / ``Sam2VideoModel`` ``config.json``
    (and ``preprocessor_config.json`` for the pixel normalisation, 0-1 scale there)."""
    model_type = config.get("model_type")
    if model_type not in HF_SAM2_MODEL_TYPES:
        raise CheckpointError(
            f"config.json has model_type {model_type!r}; expected one of "
            f"{', '.join(HF_SAM2_MODEL_TYPES)} (a transformers Sam2Model folder)"
        )
    vision = dict(config.get("vision_config") or {})
    prompt = {**_PROMPT_DEFAULTS, **(config.get("prompt_encoder_config") or {})}
    decoder = {**_DECODER_DEFAULTS, **(config.get("mask_decoder_config") or {})}
    dim = int(decoder["hidden_size"])
    _require(prompt["hidden_size"] == dim, "a prompt encoder wider or narrower than the decoder")
    _require(vision_out_chans(vision) == dim, "an FPN width different from the decoder's")
    _require(decoder["attention_downsample_rate"] == 2, "attention_downsample_rate != 2")
    # transformers' two-way MLPs have num_hidden_layers Linear layers (the official: 2).
    _require(decoder["num_hidden_layers"] == 2, "num_hidden_layers != 2")
    _require(decoder["dynamic_multimask_via_stability"] is True, "no stability fallback")
    _require(decoder["dynamic_multimask_stability_delta"] == 0.05, "a stability delta != 0.05")
    _require(decoder["dynamic_multimask_stability_thresh"] == 0.98, "a stability threshold != 0.98")
    _require(prompt["mask_input_channels"] == 16, "mask_input_channels != 16")
    _require(prompt["num_point_embeddings"] == 4, "num_point_embeddings != 4")
    _require(prompt["patch_size"] == 16, "a prompt patch_size other than 16")
    _require(prompt["scale"] == 1, "a positional scale other than 1")
    _require(prompt["hidden_act"] == "gelu", "a mask-embedding activation other than gelu")
    try:
        encoder = get_family("hiera").config_from_hf(vision)
    except ValueError as e:
        raise CheckpointError(f"Hugging Face SAM 2 config.json: {e}") from None
    _require(prompt["image_size"] == encoder.image_size, "prompt and vision image sizes differ")
    release = "2.1"
    if model_type == "sam2_video" and not config.get("enable_occlusion_spatial_embedding", True):
        release = "2.0"
    mean, std = PIXEL_MEAN, PIXEL_STD
    if preprocessor and "image_mean" in preprocessor and "image_std" in preprocessor:
        mean = tuple(round(float(v) * 255.0, 6) for v in preprocessor["image_mean"])  # type: ignore[assignment]
        std = tuple(round(float(v) * 255.0, 6) for v in preprocessor["image_std"])  # type: ignore[assignment]
    cfg = SamConfig(
        name="custom",
        encoder=encoder,
        prompt=PromptConfig(embed_dim=dim),
        decoder=DecoderConfig(
            depth=2,
            num_heads=int(decoder["num_attention_heads"]),
            mlp_dim=int(decoder["mlp_dim"]),
            num_multimask_outputs=int(decoder["num_multimask_outputs"]),
            iou_head_depth=int(decoder["iou_head_depth"]),
            iou_head_hidden_dim=int(decoder["iou_head_hidden_dim"]),
            sam2=release,
        ),
        pixel_mean=mean,
        pixel_std=std,
    )
    return name_known_variant(cfg)


def config_to_hf_sam2(cfg: SamConfig) -> dict[str, Any]:
    """transformers' ``Sam2Model`` ``config.json`` for a SAM 2 ``cfg``."""
    if not cfg.decoder.sam2 or cfg.encoder.family != "hiera":
        raise CheckpointError("transformers' Sam2Model holds a SAM 2 model (Hiera and its decoder)")
    if cfg.decoder.iou_head_depth < 2 or cfg.decoder.depth != 2:
        raise CheckpointError(
            "transformers' Sam2Model needs iou_head_depth >= 2 and a two-way transformer of depth 2"
        )
    dim, dec = cfg.prompt.embed_dim, cfg.decoder
    return {
        "architectures": ["Sam2Model"],
        "model_type": "sam2",
        "initializer_range": 0.02,
        "vision_config": get_family("hiera").config_to_hf(cfg.encoder, dim),
        "prompt_encoder_config": {
            "model_type": "sam2_prompt_encoder",
            **_PROMPT_DEFAULTS,
            "hidden_size": dim,
            "image_size": cfg.image_size,
        },
        "mask_decoder_config": {
            "model_type": "sam2_mask_decoder",
            **_DECODER_DEFAULTS,
            "hidden_size": dim,
            "hidden_act": "gelu",
            "mlp_dim": dec.mlp_dim,
            "num_attention_heads": dec.num_heads,
            "num_multimask_outputs": dec.num_multimask_outputs,
            "iou_head_depth": dec.iou_head_depth,
            "iou_head_hidden_dim": dec.iou_head_hidden_dim,
        },
    }


def preprocessor_to_hf_sam2(cfg: SamConfig) -> dict[str, Any]:
    """``preprocessor_config.json`` for transformers' ``Sam2Processor``: the square frame
    (stretched, no padding) and ``cfg``'s normalisation."""
    low_res = 4 * cfg.embedding_size
    return {
        "image_processor_type": "Sam2ImageProcessorFast",
        "processor_class": "Sam2Processor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"height": cfg.image_size, "width": cfg.image_size},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [v / 255.0 for v in cfg.pixel_mean],
        "image_std": [v / 255.0 for v in cfg.pixel_std],
        "mask_size": {"height": low_res, "width": low_res},
    }
