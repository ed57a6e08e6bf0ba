"""Hugging Face ``transformers`` SAM <-> official key names, and their config.json.

segany's modules use the official attribute names, so this is the one place where a
``transformers.SamModel`` state dict is renamed. No tensor is reshaped: the two layouts differ in
names only (fused ``qkv`` and ``rel_pos_h/w`` keep their official shapes in transformers too).

What differs:
- encoder ``image_encoder.blocks.N.norm1`` / ``neck.0..3`` / ``patch_embed.proj`` become
  ``vision_encoder.layers.N.layer_norm1`` / ``neck.conv1, layer_norm1, conv2, layer_norm2`` /
  ``patch_embed.projection``;
- the random-Fourier matrix ``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix`` is
  ``shared_image_embedding.positional_embedding`` (older files also repeat it, tied, as
  ``prompt_encoder.shared_embedding.positional_embedding``);
- the ``nn.Sequential`` indices of ``mask_downscaling`` and ``output_upscaling`` become names;
- the official ``MLP.layers.0..L-1`` of the IoU head and hypernetworks become ``proj_in``,
  ``layers.0..L-3`` and ``proj_out``.

One number differs too: transformers gives the decoder's two-way blocks LayerNorm eps
``mask_decoder_config.layer_norm_eps`` (default 1e-6) where the official code uses 1e-5. segany
computes as the official code; the config.json written here sets 1e-5 so transformers does too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from segany.errors import CheckpointError
from segany.models import PIXEL_MEAN, PIXEL_STD, SamConfig, name_known_variant

# (official prefix, HF prefix); "{n}" / "{m}" stand for a layer number. The first rule whose
# pattern matches a key's start wins, so the specific rules come before the generic ones.
_PREFIX_RULES: tuple[tuple[str, str], ...] = (
    ("image_encoder.patch_embed.proj.", "vision_encoder.patch_embed.projection."),
    ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    ("image_encoder.blocks.{n}.norm{m}.", "vision_encoder.layers.{n}.layer_norm{m}."),
    ("image_encoder.blocks.{n}.", "vision_encoder.layers.{n}."),
    ("image_encoder.neck.0.", "vision_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "vision_encoder.neck.layer_norm1."),
    ("image_encoder.neck.2.", "vision_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "vision_encoder.neck.layer_norm2."),
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
_OFFICIAL_MLP = re.compile(rf"^({'|'.join(_MLP_HEADS)})layers\.(\d+)\.(.*)$")
_HF_MLP = re.compile(rf"^({'|'.join(_MLP_HEADS)})(proj_in|proj_out|layers\.(\d+))\.(.*)$")

# Tied duplicate that older HF files carry next to shared_image_embedding.positional_embedding.
_HF_TIED_PE = "prompt_encoder.shared_embedding.positional_embedding"
_HF_PE = "shared_image_embedding.positional_embedding"


def _compile(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern).replace(r"\{n\}", r"(?P<n>\d+)").replace(r"\{m\}", r"(?P<m>\d+)")
    return re.compile("^" + body)


def _fill(template: str, match: re.Match[str]) -> str:
    groups = match.groupdict()
    return template.replace("{n}", groups.get("n") or "").replace("{m}", groups.get("m") or "")


_TO_HF = [(_compile(o), h) for o, h in _PREFIX_RULES]
_TO_OFFICIAL = [(_compile(h), o) for o, h in _PREFIX_RULES]


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
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _OFFICIAL_MLP.match(key)
        if m:
            head, idx, rest = m.group(1), int(m.group(2)), m.group(3)
            last = depths[head] - 1
            name = "proj_in" if idx == 0 else "proj_out" if idx == last else f"layers.{idx - 1}"
            new = f"{head}{name}.{rest}"
        else:
            new = _rename(key, _TO_HF) or key
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
            new = f"{head}layers.{idx}.{rest}"
        else:
            new = _rename(key, _TO_OFFICIAL) or key
        out[new] = value
    return out


def looks_like_hf(keys: list[str]) -> bool:
    """True when the keys are transformers' SAM names rather than the official ones."""
    return any(k.startswith(("vision_encoder.", "shared_image_embedding.")) for k in keys)


# --- config.json -------------------------------------------------------------------------------

# transformers' defaults for fields a config.json may leave out (they equal vit_b's numbers).
_HF_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 1024,
    "patch_size": 16,
    "window_size": 14,
    "global_attn_indexes": [2, 5, 8, 11],
    "mlp_ratio": 4.0,
    "mlp_dim": None,
    "output_channels": 256,
    "use_abs_pos": True,
    "use_rel_pos": True,
    "qkv_bias": True,
    "num_channels": 3,
}
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
    """A ``SamConfig`` from transformers' SAM ``config.json`` (and ``preprocessor_config.json``,
    whose image_mean/std are on the 0-1 scale, for the pixel normalisation)."""
    if config.get("model_type") != "sam":
        raise CheckpointError(
            f"config.json has model_type {config.get('model_type')!r}; expected 'sam' "
            "(a transformers SamModel folder)"
        )
    vision = {**_HF_VISION_DEFAULTS, **(config.get("vision_config") or {})}
    decoder = {**_HF_DECODER_DEFAULTS, **(config.get("mask_decoder_config") or {})}
    prompt = {**_HF_PROMPT_DEFAULTS, **(config.get("prompt_encoder_config") or {})}
    _require(bool(vision["use_abs_pos"]), "use_abs_pos=false")
    _require(bool(vision["use_rel_pos"]), "use_rel_pos=false")
    _require(bool(vision["qkv_bias"]), "qkv_bias=false")
    _require(vision["num_channels"] == 3, f"num_channels={vision['num_channels']}")
    _require(decoder["attention_downsample_rate"] == 2, "attention_downsample_rate != 2")
    _require(prompt["mask_input_channels"] == 16, "mask_input_channels != 16")
    _require(prompt["num_point_embeddings"] == 4, "num_point_embeddings != 4")
    _require(
        vision["output_channels"] == decoder["hidden_size"],
        "vision output_channels different from the decoder hidden_size",
    )
    hidden = int(vision["hidden_size"])
    mlp_dim = vision["mlp_dim"]
    mlp_ratio = float(vision["mlp_ratio"]) if mlp_dim is None else int(mlp_dim) / hidden
    mean, std = PIXEL_MEAN, PIXEL_STD
    if preprocessor and "image_mean" in preprocessor and "image_std" in preprocessor:
        # HF normalises 0-1 pixels; segany (like the official code) normalises 0-255 pixels.
        mean = tuple(round(float(v) * 255.0, 6) for v in preprocessor["image_mean"])  # type: ignore[assignment]
        std = tuple(round(float(v) * 255.0, 6) for v in preprocessor["image_std"])  # type: ignore[assignment]
    cfg = SamConfig(
        name="custom",
        encoder_embed_dim=hidden,
        encoder_depth=int(vision["num_hidden_layers"]),
        encoder_num_heads=int(vision["num_attention_heads"]),
        encoder_global_attn_indexes=tuple(int(i) for i in vision["global_attn_indexes"]),
        image_size=_side(vision["image_size"]),
        patch_size=_side(vision["patch_size"]),
        window_size=int(vision["window_size"]),
        mlp_ratio=mlp_ratio,
        prompt_embed_dim=int(decoder["hidden_size"]),
        decoder_depth=int(decoder["num_hidden_layers"]),
        decoder_num_heads=int(decoder["num_attention_heads"]),
        decoder_mlp_dim=int(decoder["mlp_dim"]),
        num_multimask_outputs=int(decoder["num_multimask_outputs"]),
        iou_head_depth=int(decoder["iou_head_depth"]),
        iou_head_hidden_dim=int(decoder["iou_head_hidden_dim"]),
        pixel_mean=mean,
        pixel_std=std,
    )
    return name_known_variant(cfg)


def _side(value: Any) -> int:
    if isinstance(value, list | tuple):
        _require(len(set(value)) == 1, f"a non-square size {value}")
        return int(value[0])
    return int(value)


def config_to_hf(cfg: SamConfig) -> dict[str, Any]:
    """transformers' SAM ``config.json`` for ``cfg`` (``SamModel.from_pretrained`` reads it)."""
    if cfg.iou_head_depth < 2:
        # transformers' IoU head always has a proj_in and a proj_out Linear.
        raise CheckpointError("transformers' SamModel needs iou_head_depth >= 2")
    mlp_dim = int(cfg.encoder_embed_dim * cfg.mlp_ratio)
    return {
        "architectures": ["SamModel"],
        "model_type": "sam",
        "initializer_range": 0.02,
        "vision_config": {
            "model_type": "sam_vision_model",
            "hidden_size": cfg.encoder_embed_dim,
            "num_hidden_layers": cfg.encoder_depth,
            "num_attention_heads": cfg.encoder_num_heads,
            "global_attn_indexes": list(cfg.encoder_global_attn_indexes),
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "window_size": cfg.window_size,
            "mlp_ratio": cfg.mlp_ratio,
            "mlp_dim": mlp_dim,
            "output_channels": cfg.prompt_embed_dim,
            "num_pos_feats": cfg.prompt_embed_dim // 2,
            "num_channels": 3,
            "qkv_bias": True,
            "use_abs_pos": True,
            "use_rel_pos": True,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
        },
        "prompt_encoder_config": {
            "model_type": "sam_prompt_encoder",
            "hidden_size": cfg.prompt_embed_dim,
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "mask_input_channels": 16,
            "num_point_embeddings": 4,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
        },
        "mask_decoder_config": {
            "model_type": "sam_mask_decoder",
            "hidden_size": cfg.prompt_embed_dim,
            "mlp_dim": cfg.decoder_mlp_dim,
            "num_hidden_layers": cfg.decoder_depth,
            "num_attention_heads": cfg.decoder_num_heads,
            "attention_downsample_rate": 2,
            "num_multimask_outputs": cfg.num_multimask_outputs,
            "iou_head_depth": cfg.iou_head_depth,
            "iou_head_hidden_dim": cfg.iou_head_hidden_dim,
            "hidden_act": "relu",
            # transformers applies this eps to the two-way blocks' LayerNorms, where the official
            # code (and segany) use torch's default 1e-5; its default 1e-6 shifts logits ~1e-4.
            "layer_norm_eps": 1e-5,
        },
    }


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
