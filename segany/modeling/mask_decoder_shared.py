"""Fast decoding of prompts (without a mask input) against one image embedding.

The automatic generator decodes ~1000 one-point prompts per image; the Predictor decodes a few
prompts per call, many calls per image. ``MaskDecoder`` treats each
prompt as if it had its own image: every image-token projection runs once per prompt. This
module computes the same function with the same weights, reorganised:

- the first layer's image side does not depend on the prompt, so its projections run once per
  image (``PointDecoder.__init__``), not once per prompt;
- in later layers only the few prompt tokens (7 for a point) meet the 4096 image tokens, so
  their projections are folded into the small side: ``softmax(q·W_k·x) · (x·W_vᵀ)`` becomes
  ``softmax((W_kᵀq)·x) · x`` then ``W_v``; and ``out_proj(attn · V)`` becomes ``attn · (V·W_oᵀ)``;
  this more than halves the per-prompt multiply-adds;
- the final attention runs for the IoU and mask tokens only: nothing reads the prompt tokens'
  outputs;
- mask upscaling, the other big per-prompt cost, runs only for the prompts and mask outputs a
  caller asks for (e.g. those whose predicted IoU passes a threshold, or the three multimask
  outputs and not the single one).

Results equal ``MaskDecoder`` up to float rounding (~1e-6 relative). Reads the decoder's
submodules by their official names, so any ``segany.modeling`` decoder works; for SAM-HQ's
(``MaskDecoderHQ``) the HQ token rides along with the others, its prompt-independent HQ
features are made once per image, and its refinement convolutions run only for the prompts
whose masks are asked for. SAM 2's decoder (``MaskDecoderSAM2``: its object-score token first,
high-resolution features added while upscaling) is decoded by the subclass
``segany.modeling.mask_decoder_sam2_shared.Sam2PointDecoder``, through the hooks below
(``_output_tokens``, ``_iou_row``/``_first_mask``, ``_addends``).

A decoder's "outputs" are its answers: output 0 the single-mask one, outputs 1.. the multimask
ones (SAM: its 3 masks; SAM-HQ: one, its best multimask mask plus the HQ mask).
"""

from __future__ import annotations

import math
import threading
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from segany.modeling import LayerNorm2d, MaskDecoder, MaskDecoderHQ, MaskDecoderSAM2, Sam
from segany.modeling.transformer import Attention, TwoWayAttentionBlock

ROWS = 512  # image tokens per chunk of the in-place layer norms (512×256 floats = 512 KB)


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """B×N×(H·d) -> B×N×H×d (a view)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads)


def _token_to_image_shared(
    attn: Attention, q_tok: torch.Tensor, k_heads: torch.Tensor, v_heads: torch.Tensor
) -> torch.Tensor:
    """Tokens B×T×C attend to one image whose projections are given: k, v H×N×d."""
    heads = attn.num_heads
    b, t, _ = q_tok.shape
    # Head-major rows (H×(B·T)×d) so the shared image projections are never copied per prompt.
    q = _split(attn.q_proj(q_tok), heads).permute(2, 0, 1, 3).reshape(heads, b * t, -1)
    logits = torch.bmm(q * (1.0 / math.sqrt(q.shape[-1])), k_heads.transpose(1, 2))
    out = torch.bmm(torch.softmax(logits, dim=-1), v_heads)  # H×(B·T)×d
    return attn.out_proj(out.view(heads, b, t, -1).permute(1, 2, 0, 3).reshape(b, t, -1))


def _token_to_image_folded(
    attn: Attention, q_tok: torch.Tensor, k_img: torch.Tensor, v_img: torch.Tensor
) -> torch.Tensor:
    """Tokens B×T×C attend to per-prompt images k, v B×N×C, projecting only the tokens."""
    heads = attn.num_heads
    b, t, c = q_tok.shape
    q = _split(attn.q_proj(q_tok), heads)  # B×T×H×d
    d = q.shape[-1]
    w_k = attn.k_proj.weight.view(heads, d, c)
    # q·(W_k x + b_k) = (W_kᵀq)·x + const per query; the constant cancels in the softmax.
    qk = torch.einsum("bthd,hdc->bhtc", q, w_k).reshape(b, heads * t, c)
    logits = torch.bmm(qk * (1.0 / math.sqrt(d)), k_img.transpose(1, 2))  # B×(H·T)×N
    ctx = torch.bmm(torch.softmax(logits, dim=-1), v_img)  # B×(H·T)×C, rows of a sum to 1
    w_v = attn.v_proj.weight.view(heads, d, c)
    out = torch.einsum("bhtc,hdc->bthd", ctx.view(b, heads, t, c), w_v)
    out = out + attn.v_proj.bias.view(heads, d)
    return attn.out_proj(out.reshape(b, t, heads * d))


def _image_to_token_residual(
    attn: Attention,
    keys: torch.Tensor,
    q_img: torch.Tensor | None,
    q_heads: torch.Tensor | None,
    k_tok: torch.Tensor,
    v_tok: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """``out = keys + attn(image tokens -> prompt tokens k, v B×T×C)``, B×N×C.

    The image queries come either projected and shared by the batch (``q_heads`` (H·d)×N) or
    per prompt (``q_img`` B×N×C, whose projection is folded into the tokens). ``keys`` (the
    residual) is 1×N×C or B×N×C, and may be ``out`` itself.
    """
    heads = attn.num_heads
    b, t, c = k_tok.shape
    k = _split(attn.k_proj(k_tok), heads)  # B×T×H×d
    v = _split(attn.v_proj(v_tok), heads)
    d = k.shape[-1]
    scale = 1.0 / math.sqrt(d)
    # Logits laid out B×H×T×N: the softmax over the T tokens then runs along a long inner axis.
    if q_heads is not None:
        # Per prompt, one H-batched product of its keys H×T×d with the shared queries H×d×N,
        # written straight into the B×H×T×N layout (the image queries are never copied).
        q_h = q_heads.view(heads, d, -1)
        k_h = (k * scale).permute(0, 2, 1, 3)  # B×H×T×d
        logits = k.new_empty(b, heads * t, q_h.shape[-1])
        for i in range(b):
            torch.bmm(k_h[i], q_h, out=logits[i].view(heads, t, -1))
    else:
        assert q_img is not None
        w_q = attn.q_proj.weight.view(heads, d, c)
        qk = torch.einsum("bthd,hdc->bhtc", k * scale, w_q).reshape(b, heads * t, c)
        bias = torch.einsum("bthd,hd->bht", k * scale, attn.q_proj.bias.view(heads, d))
        logits = torch.baddbmm(bias.reshape(b, heads * t, 1), qk, q_img.transpose(1, 2))
    n = logits.shape[-1]
    probs = torch.softmax(logits.view(b, heads, t, n), dim=2).view(b, heads * t, n)
    # out_proj(Σ_t p·v) = Σ_{h,t} p·(W_o[:, h] v_{h,t}) + b_o: project the T values, not the
    # N outputs; each head's weights sum to 1, so b_o/H on every row adds b_o once.
    w_o = attn.out_proj.weight.view(c, heads, d)
    vo = torch.einsum("bthd,chd->bhtc", v, w_o).reshape(b, heads * t, c)
    vo = vo + attn.out_proj.bias / heads
    if out is keys:
        return out.baddbmm_(probs.transpose(1, 2), vo)
    return torch.baddbmm(keys, probs.transpose(1, 2), vo, out=out)


def _layer_norm_(norm: nn.LayerNorm | LayerNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``x`` layer-normed over its last axis with ``norm``'s weight, bias and eps (an
    ``nn.LayerNorm`` or a ``LayerNorm2d``), in place, ROWS×256 floats at a time (no x-sized
    temporary); x contiguous."""
    flat = x.view(-1, x.shape[-1])
    width = flat.shape[1]
    step = max(1, ROWS * 256 // width)
    for s in range(0, flat.shape[0], step):
        rows = flat[s : s + step]
        rows.copy_(F.layer_norm(rows, (width,), norm.weight, norm.bias, norm.eps))
    return x


class PointDecoder:
    """``MaskDecoder`` for a batch of prompts that share one image embedding.

    embedding 1×C×h×w (from ``Predictor.get_image_embedding``); ``early`` 1×h×w×E, the
    encoder's early feature map, for a SAM-HQ model (required there, refused elsewhere).
    Prompts come as the prompt encoder's sparse embeddings B×T×C, with no mask input (the dense
    embedding is the learned "no mask" one). Each thread that calls an instance gets its own
    work buffer, kept between its calls, so chunks of prompts may be decoded side by side
    (``segany.inference.thread_pool``).
    """

    sam2 = False  # Sam2PointDecoder: SAM 2's decoder (MaskDecoderSAM2) and its token layout
    _iou_row = 0  # the IoU token's row in ``transformer``'s tokens
    _first_mask = 1  # the first mask token's row (then the others, then SAM-HQ's token)

    @torch.inference_mode()
    def __init__(
        self, model: Sam, embedding: torch.Tensor, early: torch.Tensor | None = None
    ) -> None:
        self.model = model
        dec: MaskDecoder = model.mask_decoder
        if isinstance(dec, MaskDecoderSAM2) != self.sam2:
            raise ValueError(
                "SAM 2's decoder (MaskDecoderSAM2) is decoded by "
                "segany.modeling.mask_decoder_sam2_shared.Sam2PointDecoder, SAM's and SAM-HQ's "
                "by PointDecoder"
            )
        self.decoder = dec
        # Prompt-independent maps added to the upscaling layers' outputs, by layer index
        # (SAM 2's high-resolution features), B or 1×C'×H'×W' in channels-last memory.
        self._addends: dict[int, torch.Tensor] = {}
        self.hq = isinstance(dec, MaskDecoderHQ)
        self._hq_features: torch.Tensor | None = None  # 1×C/8×4h×4w, SAM-HQ only
        if self.hq != (early is not None):
            raise ValueError(
                "a SAM-HQ decoder needs the encoder's early feature map (1×h×w×E) with the "
                "embedding"
                if self.hq
                else "an early feature map was given, but this model's decoder is not SAM-HQ's"
            )
        self.layers = cast(list[TwoWayAttentionBlock], list(dec.transformer.layers))
        pe = model.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = embedding.to(no_mask) + no_mask  # 1×C×h×w
        _, c, self.h, self.w = src.shape
        self.keys = src.flatten(2).transpose(1, 2).contiguous()  # 1×C×h×w -> 1×N×C
        self.key_pe = pe.get_dense_pe().to(no_mask).flatten(2).transpose(1, 2).contiguous()
        if isinstance(dec, MaskDecoderHQ) and early is not None:
            self._hq_features = dec.hq_features(embedding.to(no_mask), early.to(no_mask))
        self._local = threading.local()  # .buf: this thread's work buffer
        k = self.keys + self.key_pe
        # The first token-to-image attention sees the image before any prompt has changed it:
        # the first layer's, or with a depth-0 decoder the final one.
        if self.layers:
            t2i = self.layers[0].cross_attn_token_to_image
        else:
            t2i = dec.transformer.final_attn_token_to_image
        heads = t2i.num_heads

        def proj(lin: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return _split(lin(x), heads)[0].transpose(0, 1).contiguous()  # H×N×d

        # Its image-side projections, shared by every prompt of this image.
        self._k0 = proj(t2i.k_proj, k)
        self._v0 = proj(t2i.v_proj, self.keys)
        # (H·d)×N: the first image-to-token queries, transposed for the block-diagonal product
        self._q0 = (
            self.layers[0].cross_attn_image_to_token.q_proj(k)[0].T.contiguous()
            if self.layers
            else None
        )

    def _output_tokens(self) -> torch.Tensor:
        """The decoder's learned output tokens in its order, K'×C: SAM's IoU token then its mask
        tokens (SAM-HQ's token after them)."""
        dec = self.decoder
        parts = [dec.iou_token.weight, dec.mask_tokens.weight]
        if isinstance(dec, MaskDecoderHQ):
            parts.append(dec.hf_token.weight)  # SAM-HQ's token, after SAM's (its order)
        return torch.cat(parts)

    def _scratch(self, shape: torch.Size) -> torch.Tensor:
        """This thread's reusable B×N×C work buffer (contents undefined), for the last size."""
        buf: torch.Tensor | None = getattr(self._local, "buf", None)
        if buf is None or buf.shape != shape:
            buf = self._local.buf = self.keys.new_empty(shape)
        return buf

    @torch.inference_mode()
    def transformer(self, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sparse B×T×C -> (tokens B×K'×C, image tokens B×N×C): TwoWayTransformer's outputs
        for the output tokens (``_output_tokens``: SAM's IoU token and K mask tokens, SAM-HQ's
        token last; SAM 2's object-score token first); the prompt tokens' are left out."""
        dec = self.decoder
        b = sparse.shape[0]
        output_tokens = self._output_tokens()
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        queries, query_pe = tokens, tokens
        keys = self.keys
        shared = True  # keys are still the prompt-independent 1×N×C image
        # The B×N×C image tokens (8 MB for 2 prompts at 1024 px) live in two buffers, updated
        # in place: the result (new for every call, it is returned) and keys + PE (reused
        # between calls). Fresh tensors of that size are page-faulted in on every call (glibc
        # maps them from the kernel), which measured a third of this method's time.
        out = keys.new_empty(b, *keys.shape[1:])
        pe_buf = self._scratch(out.shape)
        for layer in self.layers:
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(queries, queries, queries)
            else:
                q = queries + query_pe
                queries = queries + layer.self_attn(q, q, queries)
            queries = layer.norm1(queries)
            q = queries + query_pe
            if shared:
                attn_out = _token_to_image_shared(
                    layer.cross_attn_token_to_image, q, self._k0, self._v0
                )
            else:
                k = torch.add(keys, self.key_pe, out=pe_buf)
                attn_out = _token_to_image_folded(layer.cross_attn_token_to_image, q, k, keys)
            queries = layer.norm2(queries + attn_out)
            queries = layer.norm3(queries + layer.mlp(queries))
            q = queries + query_pe
            i2t = layer.cross_attn_image_to_token
            if shared:
                keys = _image_to_token_residual(i2t, keys, None, self._q0, q, queries, out)
            else:
                keys = _image_to_token_residual(i2t, keys, k, None, q, queries, out)
            keys = _layer_norm_(layer.norm4, keys)
            shared = False
        final = dec.transformer.final_attn_token_to_image
        # Only the output tokens go on: the heads read them alone, so the prompt tokens' final
        # attention (2 of 7 rows for a point) is never computed.
        queries, query_pe = queries[:, : len(output_tokens)], query_pe[:, : len(output_tokens)]
        q = queries + query_pe
        if shared:  # a decoder of depth 0
            attn_out = _token_to_image_shared(final, q, self._k0, self._v0)
            keys = keys.expand(b, -1, -1)  # never changed: a view of the shared image
        else:
            k = torch.add(keys, self.key_pe, out=pe_buf)
            attn_out = _token_to_image_folded(final, q, k, keys)
        queries = dec.transformer.norm_final_attn(queries + attn_out)
        return queries, keys

    @torch.inference_mode()
    def iou_predictions(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens B×T'×C -> IoU predictions of the outputs, B×(1+K) (column 0: the single-mask
        output; K = 3 for SAM, 1 for SAM-HQ: the best of SAM's multimask predictions)."""
        iou = self.decoder.iou_prediction_head(tokens[:, self._iou_row, :])
        if not self.hq:
            return iou
        return torch.cat([iou[:, :1], iou[:, 1:].max(dim=1, keepdim=True).values], dim=1)

    @torch.inference_mode()
    def mask_logits(
        self,
        tokens: torch.Tensor,
        keys: torch.Tensor,
        outputs: range | list[int],
        hq_token_only: bool = False,
    ) -> torch.Tensor:
        """Low-res mask logits B×len(outputs)×4h×4w of the given outputs (0 = single; SAM-HQ:
        1 = its multimask answer); ``hq_token_only``: SAM-HQ's HQ mask alone for each."""
        if hq_token_only and not self.hq:
            raise ValueError("hq_token_only=True needs a SAM-HQ model")
        x = self.upscaled(keys)
        if self.hq:
            return self._hq_logits(tokens, x, outputs, hq_token_only)
        return _dot(x, self.hypernetworks(tokens, outputs))

    def hypernetworks(self, tokens: torch.Tensor, outputs: range | list[int]) -> torch.Tensor:
        """tokens B×K'×C -> the mask tokens' hypernetwork vectors of the given outputs,
        B×len(outputs)×C/8."""
        mlps, first = self.decoder.output_hypernetworks_mlps, self._first_mask
        return torch.stack([mlps[i](tokens[:, first + i, :]) for i in outputs], dim=1)

    @torch.inference_mode()
    def upscaled(self, keys: torch.Tensor) -> torch.Tensor:
        """Image tokens B×N×C -> the decoder's upscaled features B×C/8×4h×4w (channels-last
        memory), ``_addends`` added after their layers."""
        dec = self.decoder
        b, _, c = keys.shape
        # B×N×C is B×C×h×w in channels-last memory: a view, no copy; the upscaling convolutions
        # and the channel LayerNorm then all run channels-last. The norm and the exact GELU
        # work in place on a convolution's fresh output (B×64×128×128 and B×32×256×256 floats
        # at 1024 px): new tensors of that size cost more than the arithmetic (measured for
        # 2 prompts, 2 threads: 23-28 -> 18-19 ms); ``keys`` itself is never written.
        x = keys.reshape(b, self.h, self.w, c).permute(0, 3, 1, 2)
        for i, layer in enumerate(dec.output_upscaling):
            owned = x.untyped_storage().data_ptr() != keys.untyped_storage().data_ptr()
            if isinstance(layer, LayerNorm2d):
                nhwc = x.permute(0, 2, 3, 1)  # B×h×w×C view of channels-last memory
                if owned and nhwc.is_contiguous():
                    _layer_norm_(layer, nhwc)
                else:
                    nhwc = F.layer_norm(
                        nhwc, (nhwc.shape[-1],), layer.weight, layer.bias, layer.eps
                    )
                    x = nhwc.permute(0, 3, 1, 2)
            elif isinstance(layer, nn.GELU) and owned:
                x = torch.ops.aten.gelu_(x, approximate=layer.approximate)
            else:
                x = layer(x.contiguous(memory_format=torch.channels_last))
            if i in self._addends:  # after a convolution: x is its fresh output
                x = x.add_(self._addends[i])
        return x

    def _hq_logits(
        self, tokens: torch.Tensor, x: torch.Tensor, outputs: range | list[int], hq_only: bool
    ) -> torch.Tensor:
        """SAM-HQ's answers from SAM's upscaled features x B×C/8×4h×4w: SAM's mask (output 0:
        the single one; 1: the multimask one with the highest predicted IoU) plus the HQ
        token's mask over the refined features and the image's HQ features."""
        dec = cast(MaskDecoderHQ, self.decoder)
        n = dec.num_mask_tokens
        if any(o not in (0, 1) for o in outputs):
            raise ValueError(f"a SAM-HQ decoder has outputs 0 and 1, not {list(outputs)}")
        refined = dec.embedding_maskfeature(x) + self._hq_features  # B×C/8×4h×4w
        hq = _dot(refined, dec.hf_mlp(tokens[:, 1 + n, :])[:, None])  # B×1×4h×4w
        if hq_only:
            return hq.expand(-1, len(outputs), -1, -1)
        mlps = dec.output_hypernetworks_mlps
        hypers = []
        for o in outputs:
            if o == 0:
                hypers.append(mlps[0](tokens[:, 1, :]))
            else:  # the multimask token with the highest predicted IoU, row by row
                best = dec.iou_prediction_head(tokens[:, 0, :])[:, 1:n].max(dim=1).indices
                multi = torch.stack([mlps[i](tokens[:, 1 + i, :]) for i in range(1, n)], dim=1)
                hypers.append(multi[torch.arange(len(best), device=best.device), best])
        return _dot(x, torch.stack(hypers, dim=1)) + hq

    @torch.inference_mode()
    def decode(
        self, sparse: torch.Tensor, multimask_output: bool, hq_token_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's ``forward`` for sparse B×T×C with no mask input: low-res logits
        B×M×4h×4w and IoU predictions B×M (M = 3 multimask outputs, or the single one; SAM-HQ:
        M = 1 either way, ``hq_token_only`` as its decoder takes it)."""
        if hq_token_only and not self.hq:
            raise ValueError("hq_token_only=True needs a SAM-HQ model")
        tokens, keys = self.transformer(sparse)
        iou = self.iou_predictions(tokens)
        n = iou.shape[1]
        outputs = range(1, n) if multimask_output else range(0, 1)
        low = self.mask_logits(tokens, keys, outputs, hq_token_only)
        return low, iou[:, outputs.start : outputs.stop]


def _dot(x: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
    """Features x B×c×H×W (channels-last memory: a view) · per-output vectors hyper B×K×c ->
    logits B×K×H×W."""
    b, c8, uh, uw = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(b, uh * uw, c8)  # a view when channels-last
    return torch.bmm(pixels, hyper.transpose(1, 2)).transpose(1, 2).reshape(b, -1, uh, uw)
