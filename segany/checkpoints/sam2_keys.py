"""SAM 2's official checkpoint layout (``sam2*_hiera_*.pt``: ``{"model": state_dict}``) at the
loading boundary.

The official ``SAM2Base`` keeps the prompt encoder and decoder as ``sam_prompt_encoder.`` and
``sam_mask_decoder.``, the two-way transformer's MLPs as ``mlp.layers.0/1``, the decoder's
high-resolution projections ``conv_s0``/``conv_s1`` and the no-memory embedding
``no_mem_embed`` at the top. segany's image model keeps SAM 1's names (``prompt_encoder.``,
``mask_decoder.``, ``mlp.lin1/lin2``) and gives the projections and ``no_mem_embed`` to the
encoder (they act once per image). The video-only weights (memory attention and encoder, object
pointers, temporal encodings) are set aside by name: the image model has no use for them; what
the release keeps of them tells SAM 2.0 from 2.1 (2.1 adds ``no_obj_embed_spatial``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

#: Prefixes of the official keys the image model does not use (video tracking).
VIDEO_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
)
_MOVED = {
    "sam_mask_decoder.conv_s0.": "image_encoder.conv_s0.",
    "sam_mask_decoder.conv_s1.": "image_encoder.conv_s1.",
    "no_mem_embed": "image_encoder.no_mem_embed",
}
_MLP = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)(layers\.([01])|lin([12]))\.")


def is_sam2_layout(state: Mapping[str, object]) -> bool:
    """Whether ``state`` has the official SAM 2 key names."""
    return any(k.startswith("sam_mask_decoder.") for k in state)


def sam2_release(state: Mapping[str, object]) -> str:
    """ "2.1" when the official file carries 2.1's ``no_obj_embed_spatial``, else "2.0"."""
    return "2.1" if "no_obj_embed_spatial" in state else "2.0"


def sam2_to_segany(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Official SAM 2 keys -> (segany's image-model state dict, the video-only tensors set
    aside). Keys neither renamed nor video-only pass through unchanged, so the strict check
    that follows names them."""
    out: dict[str, torch.Tensor] = {}
    video: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(VIDEO_PREFIXES):
            video[key] = value
            continue
        new = key
        for old, moved in _MOVED.items():
            if key.startswith(old):
                new = moved + key[len(old) :]
                break
        else:
            if key.startswith("sam_mask_decoder."):
                new = "mask_decoder." + key[len("sam_mask_decoder.") :]
            elif key.startswith("sam_prompt_encoder."):
                new = "prompt_encoder." + key[len("sam_prompt_encoder.") :]
        hit = _MLP.match(new)
        if hit and hit.group(3) is not None:
            new = f"{hit.group(1)}lin{int(hit.group(3)) + 1}." + new[hit.end() :]
        out[new] = value
    return out, video


def segany_to_sam2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """segany's SAM 2 image-model keys -> the official names (image weights only: a file
    written this way loads into the official model with ``strict=False``)."""
    out: dict[str, torch.Tensor] = {}
    back = {v: k for k, v in _MOVED.items()}
    for key, value in state.items():
        new = key
        hit = _MLP.match(new)
        if hit and hit.group(4) is not None:
            new = f"{hit.group(1)}layers.{int(hit.group(4)) - 1}." + new[hit.end() :]
        for moved, old in back.items():
            if new.startswith(moved):
                new = old + new[len(moved) :]
                break
        else:
            if new.startswith("mask_decoder."):
                new = "sam_mask_decoder." + new[len("mask_decoder.") :]
            elif new.startswith("prompt_encoder."):
                new = "sam_prompt_encoder." + new[len("prompt_encoder.") :]
        out[new] = value
    return out
