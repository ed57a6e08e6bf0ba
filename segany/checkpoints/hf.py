"""Hugging Face ``transformers`` SAM <-> official key names, and their config.json.

segany's modules use the official attribute names, so this is the one place where a
``transformers.SamModel`` state dict is renamed. No tensor is reshaped: the two layouts differ in
names only (fused ``qkv`` and ``rel_pos_h/w`` keep their official shapes in transformers too).

What differs:
- the encoder's names: its family's ``hf_prefix_rules`` (for ViT, ``image_encoder.blocks.N.norm1``
  / ``neck.0..3`` / ``patch_embed.proj`` become ``vision_encoder.layers.N.layer_norm1`` /
  ``neck.conv1, layer_norm1, conv2, layer_norm2`` / ``patch_embed.projection``); transformers'
  ``SamModel`` holds SAM 1's ViT, so its ``vision_config`` is read by the ViT family;
- the random-Fourier matrix ``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix`` is
  ``shared_image_embedding.positional_embedding`` (older files also repeat it, tied, as
  ``prompt_encoder.shared_embedding.positional_embedding``);
- the ``nn.Sequential`` indices of ``mask_downscaling`` and ``output_upscaling`` become names;
- the official ``MLP.layers.0..L-1`` of the IoU head and hypernetworks become ``proj_in``,
  ``layers.0..L-3`` and ``proj_out``.

transformers' ``SamHQModel`` (SAM-HQ) has the same names plus its HQ decoder's, which
``segany.checkpoints.hf_hq`` lists; its config.json is told apart by ``model_type`` "sam_hq".

One number differs too: transformers gives the decoder's two-way blocks LayerNorm eps
``mask_decoder_config.layer_norm_eps`` (default 1e-6) where the official code uses 1e-5. segany
computes as the official code; the config.json written here sets 1e-5 so transformers does too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from segany.checkpoints.hf_hq import (
    HF_HQ_MODEL_TYPE,
    HQ_KEY_RULES,
    HQ_MLP_HEAD,
    check_hq_decoder,
    hq_head_to_hf,
    hq_head_to_official,
    to_hq_config,
)
from segany.config import DecoderConfig, PromptConfig
from segany.errors import CheckpointError
from segany.modeling.families import families, family_of, get_family
from segany.models import PIXEL_MEAN, PIXEL_STD, SamConfig, name_known_variant

# The encoder family of transformers' SamModel.
_HF_SAM_FAMILY = "vit"

# (official prefix, HF prefix) of the prompt encoder and decoder; "{n}" / "{m}" stand for a layer
# number. The first rule whose pattern matches a key's start wins, so the specific rules come
# before the generic ones; the encoder families' rules come first.
_PROMPT_DECODER_RULES: tuple[tuple[str, str], ...] = (
    (
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "shared_image_embedding.positional_embedding",
    ),
    ("prompt_encoder.point_embeddings.{n}.", "prompt_encoder.point_embed.{n}."),
    ("prompt_encoder.not_a_point_embed.", "prompt_encoder.not_a_point_embed."),
    ("prompt_encoder.no_mask_embed.", "prompt_encoder.no_mask_embed."),
    ("prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
    ("prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
    ("prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
    ("prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
    ("prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
    (
        "mask_decoder.transformer.layers.{n}.norm{m}.",
        "mask_decoder.transformer.layers.{n}.layer_norm{m}.",
    ),
    ("mask_decoder.transformer.layers.{n}.", "mask_decoder.transformer.layers.{n}."),
    (
        "mask_decoder.transformer.final_attn_token_to_image.",
        "mask_decoder.transformer.final_attn_token_to_image.",
    ),
    (
        "mask_decoder.transformer.norm_final_attn.",
        "mask_decoder.transformer.layer_norm_final_attn.",
    ),
    ("mask_decoder.iou_token.", "mask_decoder.iou_token."),
    ("mask_decoder.mask_tokens.", "mask_decoder.mask_tokens."),
    ("mask_decoder.output_upscaling.0.", "mask_decoder.upscale_conv1."),
    ("mask_decoder.output_upscaling.1.", "mask_decoder.upscale_layer_norm."),
    ("mask_decoder.output_upscaling.3.", "mask_decoder.upscale_conv2."),
)

# Heads built from the official MLP class: layers.0..L-1 <-> proj_in, layers.0..L-3, proj_out.
_MLP_HEADS = (
    r"mask_decoder\.output_hypernetworks_mlps\.\d+\.",
    r"mask_decoder\.iou_prediction_head\.",
)
# (SAM-HQ's HQ-token head is one more, named differently on each side: see hf_hq.)
_OFFICIAL_HEADS = "|".join((*_MLP_HEADS, re.escape(HQ_MLP_HEAD[0])))
_HF_HEADS = "|".join((*_MLP_HEADS, re.escape(HQ_MLP_HEAD[1])))
_OFFICIAL_MLP = re.compile(rf"^({_OFFICIAL_HEADS})layers\.(\d+)\.(.*)$")
_HF_MLP = re.compile(rf"^({_HF_HEADS})(proj_in|proj_out|layers\.(\d+))\.(.*)$")

# Tied duplicate that older HF files carry next to shared_image_embedding.positional_embedding.
_HF_TIED_PE = "prompt_encoder.shared_embedding.positional_embedding"
_HF_PE = "shared_image_embedding.positional_embedding"


def _compile(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern).replace(r"\{n\}", r"(?P<n>\d+)").replace(r"\{m\}", r"(?P<m>\d+)")
    return re.compile("^" + body)


def _fill(template: str, match: re.Match[str]) -> str:
    groups = match.groupdict()
    return template.replace("{n}", groups.get("n") or "").replace("{m}", groups.get("m") or "")


def _rules(to_hf: bool) -> list[tuple[re.Pattern[str], str]]:
    pairs = [r for f in families() for r in f.hf_prefix_rules]
    pairs += [*_PROMPT_DECODER_RULES, *HQ_KEY_RULES]
    return [(_compile(o), h) if to_hf else (_compile(h), o) for o, h in pairs]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        m = pattern.match(key)
        if m:
            return _fill(template, m) + key[m.end() :]
    return None


def _mlp_depths(keys: list[str], pattern: re.Pattern[str], hf: bool) -> dict[str, int]:
    """Number of Linear layers of each MLP head found in ``keys`` (head prefix -> depth)."""
    depth: dict[str, int] = {}
    for key in keys:
        m = pattern.match(key)
        if not m:
            continue
        if hf:
            # layers.j is the (j+2)-th Linear, proj_out comes after it
            idx = int(m.group(3)) + 3 if m.group(3) is not None else 2
        else:
            idx = int(m.group(2)) + 1
        depth[m.group(1)] = max(depth.get(m.group(1), 0), idx)
    return depth


def official_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official / segany keys -> ``transformers.SamModel`` keys (as ``save_pretrained`` writes).

    Keys that match no rule are kept unchanged so a strict load reports them as unexpected."""
    keys = list(state)
    depths = _mlp_depths(keys, _OFFICIAL_MLP, hf=False)
    to_hf = _rules(to_hf=True)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _OFFICIAL_MLP.match(key)
        if m:
            head, idx, rest = m.group(1), int(m.group(2)), m.group(3)
            last = depths[head] - 1
            name = "proj_in" if idx == 0 else "proj_out" if idx == last else f"layers.{idx - 1}"
            new = hq_head_to_hf(f"{head}{name}.{rest}")
        else:
            new = _rename(key, to_hf) or key
        out[new] = value
    return out


def hf_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``transformers.SamModel`` keys -> official / segany keys.

    The tied positional-embedding copy is dropped (after checking it equals the shared one)."""
    state = dict(state)
    tied = state.pop(_HF_TIED_PE, None)
    if tied is not None:
        shared = state.setdefault(_HF_PE, tied)
        same = shared is tied or (
            shared.shape == tied.shape and (shared.is_meta or torch.equal(shared, tied))
        )
        if not same:
            raise CheckpointError(
                f"Hugging Face weights: {_HF_TIED_PE} and {_HF_PE} should be the same tied "
                "tensor but differ"
            )
    keys = list(state)
    depths = _mlp_depths(keys, _HF_MLP, hf=True)
    to_official = _rules(to_hf=False)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _HF_MLP.match(key)
        if m:
            head, name, mid, rest = m.group(1), m.group(2), m.group(3), m.group(4)
            if name == "proj_in":
                idx = 0
            elif name == "proj_out":
                idx = depths[head] - 1
            else:
                idx = int(mid) + 1
            new = hq_head_to_official(f"{head}layers.{idx}.{rest}")
        else:
            new = _rename(key, to_official) or key
        out[new] = value
    return out


def looks_like_hf(keys: list[str]) -> bool:
    """True when the keys are transformers' SAM names rather than the official ones."""
    return any(k.startswith(("vision_encoder.", "shared_image_embedding.")) for k in keys)


# --- config.json -------------------------------------------------------------------------------

# transformers' defaults for fields a config.json may leave out (the official numbers).
_HF_DECODER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "mlp_dim": 2048,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "attention_downsample_rate": 2,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
}
_HF_PROMPT_DEFAULTS: dict[str, Any] = {"mask_input_channels": 16, "num_point_embeddings": 4}


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise CheckpointError(f"Hugging Face config.json: {what} is not supported by segany")


def config_from_hf(
    config: Mapping[str, Any],
    preprocessor: Mapping[str, Any] | None = None,
) -> SamConfig:
    """A ``SamConfig`` from transformers' SAM or SAM-HQ ``config.json`` (and
    ``preprocessor_config.json``, whose image_mean/std are on the 0-1 scale, for the pixel
    normalisation)."""
    model_type = config.get("model_type")
    if model_type not in ("sam", HF_HQ_MODEL_TYPE):
        raise CheckpointError(
            f"config.json has model_type {model_type!r}; expected 'sam' or "
            f"'{HF_HQ_MODEL_TYPE}' (a transformers SamModel or SamHQModel folder)"
        )
    vision = dict(config.get("vision_config") or {})
    decoder = {**_HF_DECODER_DEFAULTS, **(config.get("mask_decoder_config") or {})}
    prompt = {**_HF_PROMPT_DEFAULTS, **(config.get("prompt_encoder_config") or {})}
    _require(decoder["attention_downsample_rate"] == 2, "attention_downsample_rate != 2")
    _require(prompt["mask_input_channels"] == 16, "mask_input_channels != 16")
    _require(prompt["num_point_embeddings"] == 4, "num_point_embeddings != 4")
    _require(
        vision.get("output_channels", 256) == decoder["hidden_size"],
        "vision output_channels different from the decoder hidden_size",
    )
    hq = model_type == HF_HQ_MODEL_TYPE
    if hq:
        check_hq_decoder(decoder, vision)
    try:
        encoder = get_family(_HF_SAM_FAMILY).config_from_hf(vision)
    except ValueError as e:
        raise CheckpointError(f"Hugging Face config.json: {e}") from None
    mean, std = PIXEL_MEAN, PIXEL_STD
    if preprocessor and "image_mean" in preprocessor and "image_std" in preprocessor:
        # HF normalises 0-1 pixels; segany (like the official code) normalises 0-255 pixels.
        mean = tuple(round(float(v) * 255.0, 6) for v in preprocessor["image_mean"])  # type: ignore[assignment]
        std = tuple(round(float(v) * 255.0, 6) for v in preprocessor["image_std"])  # type: ignore[assignment]
    cfg = SamConfig(
        name="custom",
        encoder=encoder,
        prompt=PromptConfig(embed_dim=int(decoder["hidden_size"])),
        decoder=DecoderConfig(
            depth=int(decoder["num_hidden_layers"]),
            num_heads=int(decoder["num_attention_heads"]),
            mlp_dim=int(decoder["mlp_dim"]),
            num_multimask_outputs=int(decoder["num_multimask_outputs"]),
            iou_head_depth=int(decoder["iou_head_depth"]),
            iou_head_hidden_dim=int(decoder["iou_head_hidden_dim"]),
            hq=hq,
        ),
        pixel_mean=mean,
        pixel_std=std,
    )
    return name_known_variant(cfg)


def config_to_hf(cfg: SamConfig) -> dict[str, Any]:
    """transformers' SAM ``config.json`` for ``cfg`` (``SamModel.from_pretrained`` reads it;
    ``SamHQModel``'s for a SAM-HQ ``cfg``)."""
    if cfg.decoder.iou_head_depth < 2:
        # transformers' IoU head always has a proj_in and a proj_out Linear.
        raise CheckpointError("transformers' SamModel needs iou_head_depth >= 2")
    if cfg.encoder.family != _HF_SAM_FAMILY:
        kind = "SamHQModel" if cfg.decoder.hq else "SamModel"
        raise CheckpointError(
            f"transformers' {kind} holds a {_HF_SAM_FAMILY} image encoder; this model's is "
            f"{family_of(cfg.encoder).name}: keep it as .pth or .safetensors"
        )
    dim, dec = cfg.prompt.embed_dim, cfg.decoder
    config = {
        "architectures": ["SamModel"],
        "model_type": "sam",
        "initializer_range": 0.02,
        "vision_config": get_family(_HF_SAM_FAMILY).config_to_hf(cfg.encoder, dim),
        "prompt_encoder_config": {
            "model_type": "sam_prompt_encoder",
            "hidden_size": dim,
            "image_size": cfg.image_size,
            "patch_size": cfg.image_size // cfg.embedding_size,
            "mask_input_channels": 16,
            "num_point_embeddings": 4,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
        },
        "mask_decoder_config": {
            "model_type": "sam_mask_decoder",
            "hidden_size": dim,
            "mlp_dim": dec.mlp_dim,
            "num_hidden_layers": dec.depth,
            "num_attention_heads": dec.num_heads,
            "attention_downsample_rate": 2,
            "num_multimask_outputs": dec.num_multimask_outputs,
            "iou_head_depth": dec.iou_head_depth,
            "iou_head_hidden_dim": dec.iou_head_hidden_dim,
            "hidden_act": "relu",
            # transformers applies this eps to the two-way blocks' LayerNorms, where the official
            # code (and segany) use torch's default 1e-5; its default 1e-6 shifts logits ~1e-4.
            "layer_norm_eps": 1e-5,
        },
    }
    if dec.hq:
        return to_hq_config(config, get_family(_HF_SAM_FAMILY).early_width(cfg.encoder))
    return config


def preprocessor_to_hf(cfg: SamConfig) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``SamProcessor``: ``cfg``'s sizes and normalisation."""
    low_res = cfg.low_res_mask_size
    return {
        "image_processor_type": "SamImageProcessor",
        "processor_class": "SamProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"longest_edge": cfg.image_size},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [v / 255.0 for v in cfg.pixel_mean],
        "image_std": [v / 255.0 for v in cfg.pixel_std],
        "do_pad": True,
        "pad_size": {"height": cfg.image_size, "width": cfg.image_size},
        "mask_size": {"longest_edge": low_res},
        "mask_pad_size": {"height": low_res, "width": low_res},
    }
