"""Read a SAM config off the shapes of a state dict (official keys), and check one strictly.

What the weights tell (``embed`` = encoder width, ``g`` = embedding grid side):
- ``image_encoder.patch_embed.proj.weight`` embed×3×p×p: the width and patch size;
- ``image_encoder.pos_embed`` 1×g×g×embed: the input size ``g·p``;
- ``image_encoder.blocks.N.attn.rel_pos_h`` (2s-1)×head_dim: the number of blocks (depth), the
  heads (embed / head_dim), and per block whether it attends globally (s = g) or in windows
  (s = window size);
- ``mlp.lin1`` the MLP ratio, ``neck.0`` the prompt width, the decoder's layer count, MLP width,
  mask tokens (multimask outputs + 1) and IoU head depth/width.
The decoder's attention heads leave no trace in the weights; it is taken as the official 8
(every published SAM uses it), unless a file carries its config in metadata.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segany.errors import CheckpointError
from segany.models import VARIANTS, SamConfig, name_known_variant

OFFICIAL_DECODER_HEADS = 8
_LIST_LIMIT = 8


def _indices(keys: Sequence[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def infer_config(state: Mapping[str, Any]) -> SamConfig:
    """The ``SamConfig`` the state dict's shapes describe (a registered variant when they match
    one, else one named ``custom``). Only ``.shape`` is read, so meta tensors work."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    keys = list(shapes)

    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            sample = ", ".join(keys[:5]) or "none"
            raise CheckpointError(
                f"cannot detect the SAM variant: the weights have no {key!r} "
                f"({len(keys)} keys, starting {sample}). Is this a SAM checkpoint?"
            )
        return shapes[key]

    embed, _, patch, _ = need("image_encoder.patch_embed.proj.weight")
    grid = need("image_encoder.pos_embed")[1]
    blocks = _indices(keys, "image_encoder.blocks.")
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError(f"cannot detect the SAM variant: encoder blocks numbered {blocks}")
    rel = [need(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in blocks]
    head_dim = rel[0][1]
    sides = [(r[0] + 1) // 2 for r in rel]  # rel_pos has 2·side-1 rows
    global_idx = tuple(i for i, s in zip(blocks, sides, strict=True) if s == grid)
    windows = sorted({s for s in sides if s != grid})
    if len(windows) > 1:
        raise CheckpointError(f"cannot detect the SAM variant: several window sizes {windows}")
    # With every block global the window size is unused; keep the official 14.
    window = windows[0] if windows else 14
    decoder_layers = _indices(keys, "mask_decoder.transformer.layers.")
    iou_layers = _indices(keys, "mask_decoder.iou_prediction_head.layers.")
    try:
        cfg = SamConfig(
            name="custom",
            encoder_embed_dim=embed,
            encoder_depth=len(blocks),
            encoder_num_heads=max(1, embed // head_dim),
            encoder_global_attn_indexes=global_idx,
            image_size=grid * patch,
            patch_size=patch,
            window_size=window,
            mlp_ratio=need("image_encoder.blocks.0.mlp.lin1.weight")[0] / embed,
            prompt_embed_dim=need("image_encoder.neck.0.weight")[0],
            decoder_depth=len(decoder_layers),
            decoder_num_heads=OFFICIAL_DECODER_HEADS,
            decoder_mlp_dim=need("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
            num_multimask_outputs=need("mask_decoder.mask_tokens.weight")[0] - 1,
            iou_head_depth=len(iou_layers),
            iou_head_hidden_dim=need("mask_decoder.iou_prediction_head.layers.0.weight")[0],
        )
    except ValueError as e:  # SamConfig's own checks (InputError is a ValueError)
        raise CheckpointError(f"the weights' shapes make no valid SAM config: {e}") from e
    return name_known_variant(cfg)


#: The largest value of each config field a weights file may claim (vit_h, the largest official
#: model, is 1280 wide and 32 deep): checked before a model of that config is built.
CONFIG_LIMITS = {
    "encoder_embed_dim": 8192,
    "encoder_depth": 256,
    "encoder_num_heads": 256,
    "image_size": 8192,
    "patch_size": 256,
    "window_size": 512,
    "mlp_ratio": 64,
    "prompt_embed_dim": 8192,
    "decoder_depth": 64,
    "decoder_num_heads": 256,
    "decoder_mlp_dim": 65536,
    "num_multimask_outputs": 64,
    "iou_head_depth": 64,
    "iou_head_hidden_dim": 65536,
}


def check_config_limits(cfg: SamConfig, *, source: str = "the weights") -> None:
    """Raise ``CheckpointError`` when a config (read from a file's metadata or shapes) has a
    size outside ``CONFIG_LIMITS`` or below 1, before anything of that size is built."""
    for name, hi in CONFIG_LIMITS.items():
        value = getattr(cfg, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not value >= 1 or value > hi:
            raise CheckpointError(
                f"{source} claim {name}={value!r}; a SAM config needs 1 <= {name} <= {hi}. "
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
    """``vit_b (embed 768, depth 12, heads 12, global [2, 5, 8, 11], input 1024)``."""
    return (
        f"{cfg.name} (embed {cfg.encoder_embed_dim}, depth {cfg.encoder_depth}, "
        f"heads {cfg.encoder_num_heads}, global {list(cfg.encoder_global_attn_indexes)}, "
        f"input {cfg.image_size})"
    )


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
