"""The image encoder's inference path: ``ImageEncoderViT.forward``'s values, computed a few
hundred tokens at a time.

Why: at 1024 px every vit_b block makes activations of 4096×2304 (q, k, v) and 4096×3072 (the
MLP) floats, 38 and 50 MB. glibc's malloc maps blocks of over 32 MB fresh from the kernel and
returns them on free, so each such tensor is page-faulted and zeroed again on every call, and
it never fits in the cache: measured on a 2-core AVX2 host, one thread, a quarter of
``forward``'s time. Here the linear layers, norms and GELU run on chunks of ``ROWS`` tokens
(and windowed blocks one band of windows at a time), so every temporary stays at a few MB,
is reused by the allocator and stays cache-resident; residual sums are made in place.

Every operation is row-wise (or within one window), so the values equal ``forward``'s to float
rounding (tested). Inference only: with autograd on (training), or with hooks registered on
the encoder, ``encode_image`` calls ``forward``.
"""

from __future__ import annotations

import torch

from segany.modeling.vit.encoder import Attention, Block, ImageEncoderViT, windowed_attention

ROWS = 512  # tokens per chunk through the linear layers: 512×3072 floats = 6 MB
# Below this size of the largest activation (the MLP's hidden layer over all tokens) every
# tensor is reused by the allocator anyway and chunking only adds calls: the bundled model
# (2304 tokens × 640, 5.9 MB in fp32) encodes faster through ``forward`` (2 threads, AMX Xeon:
# fp32 0.146 vs 0.155 s, bf16 0.079 vs 0.094 s); vit_b at 1024 px (50 MB) faster chunked
# (fp32 4.0 vs 4.9 s, bf16 1.5 vs 1.8 s).
CHUNK_ABOVE_BYTES = 16 << 20


def encode_image(encoder: ImageEncoderViT, images: torch.Tensor) -> torch.Tensor:
    """B×3×S×S preprocessed images -> B×C×(S/p)×(S/p) embeddings, as ``encoder(images)``."""
    if not _chunked(encoder, images):
        return encoder(images)  # hooks see their call; autograd gets the plain forward
    return _encode(encoder, images, None)[0]


def encode_image_with_early(
    encoder: ImageEncoderViT, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encoder.forward_with_early(images)``'s values: (B×C×h×w embeddings, B×h×w×E output of
    the first global-attention block, SAM-HQ's early feature map)."""
    first = encoder.first_global_block()
    if not _chunked(encoder, images):
        return encoder.forward_with_early(images)
    embeddings, early = _encode(encoder, images, first)
    assert early is not None
    return embeddings, early


def _chunked(encoder: ImageEncoderViT, images: torch.Tensor) -> bool:
    """Whether the chunked path applies: no hooks, no autograd, activations large enough."""
    hooked = bool(encoder._forward_hooks or encoder._forward_pre_hooks)
    if hooked or (torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters())):
        return False
    return _largest_activation_bytes(encoder, images) >= CHUNK_ABOVE_BYTES


def _encode(
    encoder: ImageEncoderViT, images: torch.Tensor, keep: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The chunked forward; also a copy of block ``keep``'s output (x is updated in place)."""
    # B×3×S×S -> B×H×W×C, contiguous (the chunks below are views of its rows)
    x = (encoder.patch_embed(images) + encoder.pos_embed).contiguous()
    early = None
    for i, block in enumerate(encoder.blocks):
        assert isinstance(block, Block)
        if block.window_size > 0:
            _windowed_attention_(block, x)
        else:
            _global_attention_(block, x)
        _mlp_(block, x)
        if i == keep:
            early = x.clone()
    return encoder.neck(x.permute(0, 3, 1, 2)), early  # channels-last -> B×C×H×W


def _mlp_(block: Block, x: torch.Tensor) -> None:
    """x += mlp(norm2(x)), chunk by chunk; x: B×H×W×C contiguous."""
    flat = x.view(-1, x.shape[-1])
    for s in range(0, flat.shape[0], ROWS):
        rows = flat[s : s + ROWS]
        rows += block.mlp(block.norm2(rows))


def _global_attention_(block: Block, x: torch.Tensor) -> None:
    """x += attn(norm1(x)) over the whole grid; x: B×H×W×C contiguous."""
    attn: Attention = block.attn
    b, h, w, c = x.shape
    n, length = attn.num_heads, h * w
    flat = x.view(b, length, c)
    # every token's q, k, v before x changes: 3×B×heads×L×D
    heads = x.new_empty(3, b, n, length, c // n)
    for s in range(0, length, ROWS):
        qkv = attn.qkv(block.norm1(flat[:, s : s + ROWS]))  # B×R×3C
        heads[:, :, :, s : s + ROWS] = attn.split_heads(qkv)
    out = attn.attend_heads(heads[0], heads[1], heads[2], (h, w)).transpose(1, 2)  # B×L×n×D
    for s in range(0, length, ROWS):
        flat[:, s : s + ROWS] += attn.proj(out[:, s : s + ROWS].reshape(b, -1, c))


def _windowed_attention_(block: Block, x: torch.Tensor) -> None:
    """x += attn(norm1(x)) within window×window tiles, one band of windows at a time (a band
    is ``window`` grid rows; no window crosses two bands)."""
    win = block.window_size
    for y in range(0, x.shape[1], win):
        band = x[:, y : y + win]  # B×hb×W×C view, hb <= window
        band += windowed_attention(block.attn, block.norm1(band), win)


def _largest_activation_bytes(encoder: ImageEncoderViT, images: torch.Tensor) -> int:
    """Bytes of the widest per-token activation (the MLP's hidden layer) over all tokens."""
    _, h, w, c = encoder.pos_embed.shape
    block = encoder.blocks[0]
    assert isinstance(block, Block)
    hidden = getattr(block.mlp.lin1, "out_features", 4 * c)
    return images.shape[0] * h * w * hidden * encoder.pos_embed.element_size()
