"""``ImageEncoderHiera``'s inference path: the module's values, computed a band of windows at a
time, with the position table kept per grid size.

Why (sam2.1_hiera_tiny at 1024 px, fp32, 2 threads): the first two blocks run on 256×256
tokens and make activations of 65536×576 (q, k, v) and 65536×384 (the MLP) floats, 150 and
100 MB. glibc maps blocks over 32 MB fresh from the kernel on every call (page faults, zeroing)
and they never fit in the cache, so those two blocks took 365 of the forward's 1310 ms for
about 40 GFLOP. Here a windowed block on a grid of over ``ROWS`` tokens runs norm, q/k/v,
attention, projection, shortcut and MLP on one band of window rows (a few MB) before the next,
the MLP's residual sum in place. Besides, the bicubic resize of the background position table
(7×7 to 256×256, about 25 ms) is made once per grid size and parameter version. The neck is the
module's.

Every operation is the module's, on whole windows or on rows of tokens, so the values equal
``forward``'s to float rounding (tested; on the Xeon measured they were bit-equal, as the
official package's). Inference only: in training mode, with autograd on, with hooks on the
encoder, or while tracing for export, the module's forward runs.
"""

from __future__ import annotations

import weakref

import torch

from segany.modeling.hiera.encoder import (
    HieraTrunk,
    ImageEncoderHiera,
    MultiScaleBlock,
    _pool,
    _unwindow,
    _windows,
    pack_high_res,
)

ROWS = 4096  # tokens a band aims at (stage 1 of Hiera-T: its MLP hidden layer 4096×384 = 6 MB)

# trunk -> ((size, device, dtype), copies of its two source tables), the table made from them
_Key = tuple[tuple[object, ...], torch.Tensor, torch.Tensor]
_TABLES: weakref.WeakKeyDictionary[HieraTrunk, tuple[_Key, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def encode_image(encoder: ImageEncoderHiera, images: torch.Tensor) -> torch.Tensor:
    """B×3×S×S normalised images -> B×C×S/16×S/16 embeddings, as ``encoder(images)``."""
    if not _applies(encoder):
        return encoder(images)
    return _encode(encoder, images, early=False)[0]


def encode_image_with_early(
    encoder: ImageEncoderHiera, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encoder.forward_with_early(images)``'s values: (B×C×h×w embeddings, B×2h×2w×E packed
    high-resolution features, ``encoder.pack_high_res``)."""
    if not _applies(encoder):
        return encoder.forward_with_early(images)
    embeddings, packed = _encode(encoder, images, early=True)
    assert packed is not None
    return embeddings, packed


def _applies(encoder: ImageEncoderHiera) -> bool:
    """No training, hooks, autograd or export tracing: those get the module's forward."""
    if encoder.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if any(m._forward_hooks or m._forward_pre_hooks for m in encoder.modules()):
        return False
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters()))


def _encode(
    encoder: ImageEncoderHiera, images: torch.Tensor, *, early: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    trunk = encoder.trunk
    x = trunk.patch_embed(images)  # B×H×W×C (a channels-last view of the convolution)
    x = x + position_table(trunk, x.shape[1], x.shape[2])
    feats = []
    for i, block in enumerate(trunk.blocks):
        assert isinstance(block, MultiScaleBlock)
        x = _block(block, x.contiguous())
        if i in trunk.stage_ends:
            feats.append(x.permute(0, 3, 1, 2))  # as ``HieraTrunk.forward`` gives them
    s0, s1, level2 = encoder.neck(feats)
    embeddings = encoder._embedding(level2)
    if not early:
        return embeddings, None
    return embeddings, pack_high_res(encoder.conv_s0(s0), encoder.conv_s1(s1))


def position_table(trunk: HieraTrunk, h: int, w: int) -> torch.Tensor:
    """``trunk.position_table(h, w)`` (1×h×w×C), made once per size, device and dtype, and
    again whenever either source table's values change (they are compared with the copies the
    cache keeps, a few thousand numbers: this serves precision copies too, whose tensors carry
    no version counter)."""
    bkg, win = trunk.pos_embed, trunk.pos_embed_window
    key = (h, w, bkg.device, bkg.dtype)
    hit = _TABLES.get(trunk)
    if hit is not None:
        (hit_key, bkg_was, win_was), table = hit
        if hit_key == key and torch.equal(bkg, bkg_was) and torch.equal(win, win_was):
            return table
    table = trunk.position_table(h, w).contiguous()
    _TABLES[trunk] = ((key, bkg.detach().clone(), win.detach().clone()), table)
    return table


def _block(block: MultiScaleBlock, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` for B×H×W×C contiguous x -> a new B×H'×W'×C_out contiguous map."""
    size, stride = block.window_size, block.q_stride or 1
    if size <= 0 or size % stride:
        shortcut, attended = _attention(block, x)
        out = shortcut + attended
        _mlp_(block, out.view(-1, out.shape[-1]))
        return out
    b, h, w, _ = x.shape
    out = x.new_empty(b, h // stride, w // stride, block.dim_out)
    # whole window rows per band; a grid of at most ROWS tokens in one band (smaller matrix
    # products can round differently from the module's)
    step = h if h * w <= ROWS else size * max(1, ROWS // (size * w))
    for y in range(0, h, step):
        lo = y // stride
        band = out[:, lo : lo + (min(y + step, h) - y) // stride]
        torch.add(*_attention(block, x[:, y : y + step]), out=band)
        if b == 1:
            _mlp_(block, band.view(-1, band.shape[-1]))
        else:
            band += block.mlp(block.norm2(band))
    return out


def _attention(block: MultiScaleBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first half of ``MultiScaleBlock.forward`` before its sum: (shortcut, attn(norm1(x))),
    B×H×W×C -> two B×H'×W'×C_out maps (x may be a band of whole window rows)."""
    shortcut = x
    x = block.norm1(x)
    if block.dim != block.dim_out:
        shortcut = block.proj(x)
        if block.q_stride:
            shortcut = _pool(shortcut, block.q_stride)
    size = block.window_size
    padded = (0, 0)
    if size > 0:
        x, padded = _windows(x, size)
    x = block.attn(x)
    hw = (shortcut.shape[1], shortcut.shape[2])
    if size > 0:
        if block.q_stride:
            size //= block.q_stride
            padded = (
                hw[0] + (size - hw[0] % size) % size,
                hw[1] + (size - hw[1] % size) % size,
            )
        x = _unwindow(x, size, padded, hw)
    return shortcut, x


def _mlp_(block: MultiScaleBlock, flat: torch.Tensor) -> None:
    """flat += mlp(norm2(flat)), ``ROWS`` tokens at a time; flat: N×C contiguous."""
    for s in range(0, flat.shape[0], ROWS):
        rows = flat[s : s + ROWS]
        rows += block.mlp(block.norm2(rows))
