"""Read a SAM config off the shapes of a state dict (official keys), and check one strictly.

The encoder's numbers come from its family (``segany.modeling.families``: each registered family
reads its own keys and says whether they are its). The rest is SAM's prompt encoder and mask
decoder: ``image_encoder``'s output width is the prompt width (read off the prompt encoder's
``no_mask_embed``), and the decoder's layer count, MLP width, mask tokens (multimask outputs + 1)
and IoU head depth/width have keys of their own; SAM-HQ's decoder is told by its HQ token
(``mask_decoder.hf_token``), its early-feature width checked against the encoder's family;
SAM 2's by its object-score token (``mask_decoder.obj_score_token``). The
decoder's attention heads leave no trace in the weights; it is taken as the official 8 (every
published SAM uses it), unless a file carries its config in metadata.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segany.checkpoints.sam2_keys import is_sam2_layout, sam2_to_segany
from segany.checkpoints.sam2_keys import sam2_release as release_of
from segany.config import DecoderConfig, PromptConfig
from segany.errors import CheckpointError
from segany.modeling.families import EncoderConfig, detect_encoder, families, family_of
from segany.models import VARIANTS, SamConfig, name_known_variant

OFFICIAL_DECODER_HEADS = 8
_LIST_LIMIT = 8


def _indices(keys: Sequence[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def infer_config(state: Mapping[str, Any], *, sam2_release: str = "2.1") -> SamConfig:
    """The ``SamConfig`` the state dict's shapes describe (a registered variant when they match
    one, else one named ``custom``). Only ``.shape`` is read, so meta tensors work. An official
    SAM 2 file's keys are read as ``sam2_keys`` renames them (and its release from them);
    ``sam2_release``: the release of an already renamed SAM 2 state dict."""
    if is_sam2_layout(state):
        sam2_release = release_of(state)
        state = sam2_to_segany(state)[0]
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    keys = list(shapes)
    sample = ", ".join(keys[:5]) or "none"

    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(
                f"cannot detect the SAM variant: the weights have no {key!r} "
                f"({len(keys)} keys, starting {sample}). Is this a SAM checkpoint?"
            )
        return shapes[key]

    try:
        encoder = detect_encoder(shapes)
    except ValueError as e:
        raise CheckpointError(f"cannot detect the SAM variant: {e}") from None
    if encoder is None:
        tried = ", ".join(f.name for f in families())
        raise CheckpointError(
            f"cannot detect the SAM variant: no registered image encoder family ({tried}) "
            f"recognises the weights ({len(keys)} keys, starting {sample}). "
            "Is this a SAM checkpoint?"
        )
    decoder_layers = _indices(keys, "mask_decoder.transformer.layers.")
    iou_layers = _indices(keys, "mask_decoder.iou_prediction_head.layers.")
    hq = _HQ_TOKEN in shapes
    sam2 = sam2_release if _SAM2_TOKEN in shapes else ""
    if hq:
        _check_hq_width(encoder, need(_HQ_EARLY)[0])
    try:
        cfg = SamConfig(
            name="custom",
            encoder=encoder,
            prompt=PromptConfig(embed_dim=need("prompt_encoder.no_mask_embed.weight")[1]),
            decoder=DecoderConfig(
                depth=len(decoder_layers),
                num_heads=OFFICIAL_DECODER_HEADS,
                mlp_dim=need("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
                num_multimask_outputs=need("mask_decoder.mask_tokens.weight")[0] - 1,
                iou_head_depth=len(iou_layers),
                iou_head_hidden_dim=need("mask_decoder.iou_prediction_head.layers.0.weight")[0],
                hq=hq,
                sam2=sam2,
                **family_of(encoder).decoder_overrides(encoder),
            ),
        )
    except ValueError as e:  # the configs' own checks (InputError is a ValueError)
        raise CheckpointError(f"the weights' shapes make no valid SAM config: {e}") from e
    return name_known_variant(cfg)


# SAM 2's decoder: its object-score token.
_SAM2_TOKEN = "mask_decoder.obj_score_token.weight"
# SAM-HQ's decoder: its output token, and the layer that reads the encoder's early features
# (a transposed convolution, E×C×2×2: E is the early map's width).
_HQ_TOKEN = "mask_decoder.hf_token.weight"
_HQ_EARLY = "mask_decoder.compress_vit_feat.0.weight"


def _check_hq_width(encoder: EncoderConfig, vit_dim: int) -> None:
    """An HQ decoder's early-feature width must be the one the encoder's family provides."""
    family = family_of(encoder)
    try:
        width = family.early_width(encoder)
    except ValueError as e:
        raise CheckpointError(
            f"the weights hold a SAM-HQ decoder (mask_decoder.hf_token) but their "
            f"{family.name!r} encoder has no early feature map for it: {e}"
        ) from None
    if width != vit_dim:
        raise CheckpointError(
            f"the weights' SAM-HQ decoder reads {vit_dim}-channel early features "
            f"({_HQ_EARLY}), but their {family.name!r} encoder's are {width} wide"
        )


#: The largest value of each prompt/decoder field a weights file may claim (the encoder's
#: limits are its family's ``limits``): checked before a model of that config is built.
CONFIG_LIMITS = {
    "prompt.embed_dim": 8192,
    "decoder.depth": 64,
    "decoder.num_heads": 256,
    "decoder.mlp_dim": 65536,
    "decoder.num_multimask_outputs": 64,
    "decoder.iou_head_depth": 64,
    "decoder.iou_head_hidden_dim": 65536,
}


def _sizes(cfg: SamConfig) -> list[tuple[str, Any, float]]:
    """(field, value, largest allowed) for every size of ``cfg`` that has a limit."""
    enc = cfg.encoder.to_dict()
    out = [(f"encoder.{k}", enc.get(k), hi) for k, hi in family_of(cfg.encoder).limits.items()]
    for name, hi in CONFIG_LIMITS.items():
        part, _, key = name.partition(".")
        out.append((name, getattr(getattr(cfg, part), key), hi))
    return out


def check_config_limits(cfg: SamConfig, *, source: str = "the weights") -> None:
    """Raise ``CheckpointError`` when a config (read from a file's metadata or shapes) has a
    size outside its limits or below 1, before anything of that size is built. A tuple of
    sizes (one per stage, say) is held to its limit element by element."""
    for name, value, hi in _sizes(cfg):
        elements = value if isinstance(value, list | tuple) and value else (value,)
        for v in elements:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not ok or not v >= 1 or v > hi:
                raise CheckpointError(
                    f"{source} claim {name}={value!r}; a SAM config needs 1 <= {name} <= {hi}"
                    f"{' for each element' if elements is value else ''}. "
                    "The file is damaged or not a SAM checkpoint"
                )


def expected_shapes(cfg: SamConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict a ``Sam`` built from ``cfg`` has (built on the meta
    device, so even vit_h costs no memory; the first call pays ~2 s of torch imports)."""
    from segany.models import build_sam

    with torch.device("meta"):
        model = build_sam(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def describe(cfg: SamConfig) -> str:
    """``vit_b (vit: embed 768, depth 12, heads 12, global [2, 5, 8, 11], input 1024)``;
    ``...; SAM-HQ decoder)`` for a SAM-HQ model (its name may not say so: ``custom``)."""
    family = family_of(cfg.encoder)
    decoder = "; SAM-HQ decoder" if cfg.decoder.hq else ""
    return f"{cfg.name} ({family.name}: {family.describe(cfg.encoder)}{decoder})"


def _abbrev(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"


def mismatch_report(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, 'key: file AxB, model CxD' for mis-shaped keys)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k}: file {_fmt(state[k].shape)}, model {_fmt(shape)}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    return missing, unexpected, misshaped


def _fmt(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape) or "scalar"


def check_state_dict(
    cfg: SamConfig,
    state: Mapping[str, Any],
    *,
    source: str = "the weights",
    detected: SamConfig | None = None,
    expected: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Raise ``CheckpointError`` unless ``state`` fits a ``Sam`` of ``cfg`` key for key and
    shape for shape, naming the variant expected and every missing, unexpected and mis-shaped
    key (lists are cut after a few). ``expected``: the shapes of an already built model."""
    if expected is None:
        expected = expected_shapes(cfg)
    missing, unexpected, misshaped = mismatch_report(expected, state)
    bad_values = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not (missing or unexpected or misshaped or bad_values):
        return
    lines = [f"{source} do not fit SAM variant {describe(cfg)}:"]
    if detected is not None and detected != cfg:
        lines.append(f"  the weights look like {describe(detected)}")
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", misshaped),
        ("not tensors", bad_values),
    ):
        if items:
            lines.append(f"  {len(items)} {label}: {_abbrev(items)}")
    raise CheckpointError("\n".join(lines))


def with_pixel_stats(cfg: SamConfig, state: dict[str, Any]) -> SamConfig:
    """Drop ``pixel_mean``/``pixel_std`` buffers some re-saved files carry (the official files
    and segany's do not) and keep their values in the config."""
    mean, std = state.pop("pixel_mean", None), state.pop("pixel_std", None)
    if mean is None or std is None:
        return cfg
    m, s = [float(v) for v in mean.flatten()], [float(v) for v in std.flatten()]
    if len(m) != 3 or len(s) != 3:
        raise CheckpointError(f"pixel_mean/pixel_std with {len(m)}/{len(s)} values, expected 3")
    new = dataclasses.replace(cfg, pixel_mean=(m[0], m[1], m[2]), pixel_std=(s[0], s[1], s[2]))
    if new != cfg and cfg.name in VARIANTS:
        new = dataclasses.replace(new, name="custom")  # no longer the registered variant
    return cfg if new == cfg else new
