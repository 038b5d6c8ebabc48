"""Torch modules that cut ``Florence2ForConditionalGeneration`` into the graphs of
:mod:`florence2_runtime.engine.graphs`.

They reuse the checkpoint's own submodules (weights and layer code); only the wiring
that transformers hides behind caches and mask helpers is written out, so that each graph
is a plain tensor program: no cache objects, no control flow, KV tensors as inputs/outputs.
"""

from __future__ import annotations

import torch
from torch import nn


def _additive_padding_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, keys] 0/1 mask -> [batch, 1, 1, keys] additive mask (0 or dtype min), as transformers' eager path."""
    inverted = 1.0 - mask[:, None, None, :].to(dtype)
    return inverted * torch.finfo(dtype).min


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, seq, d] -> [batch, heads, seq, d / heads]."""
    b, s, d = x.shape
    return x.view(b, s, heads, d // heads).transpose(1, 2)


def _attend(q, k, v, scaling: float, mask: torch.Tensor | None) -> torch.Tensor:
    """Eager attention in transformers' order of operations; q, k, v: [batch, heads, seq, head_dim] -> same as q."""
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class VisionEncoder(nn.Module):
    """pixel_values [B, 3, H, W] -> image_features [B, I, D] (DaViT + projector)."""

    def __init__(self, model):
        super().__init__()
        self.model = model.model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values).pooler_output


class TextEncoder(nn.Module):
    """BART encoder over ``[image features; prompt embeddings]`` plus every decoder layer's cross K/V.

    inputs_embeds [B, T, D], image_features [B, I, D], attention_mask [B, I + T]
    -> cross.{i}.key / cross.{i}.value [B, heads, I + T, D / heads]
    """

    def __init__(self, model):
        super().__init__()
        lm = model.model.language_model
        self.encoder = lm.encoder
        self.decoder_layers = lm.decoder.layers
        self.heads = lm.config.decoder_attention_heads

    def forward(self, inputs_embeds, image_features, attention_mask):
        enc = self.encoder
        x = torch.cat([image_features, inputs_embeds], dim=1)
        x = x + enc.embed_positions(x[:, :, -1])
        x = enc.layernorm_embedding(x)
        mask = _additive_padding_mask(attention_mask, x.dtype)
        for layer in enc.layers:
            x = layer(x, mask)
        cross = []
        for layer in self.decoder_layers:
            attn = layer.encoder_attn
            cross += [_heads(attn.k_proj(x), self.heads), _heads(attn.v_proj(x), self.heads)]
        return tuple(cross)


class DecoderCore(nn.Module):
    """The BART decoder layers over new token embeddings, given the self-attention past and the cross K/V.

    Shared by the native ``decoder`` graph and the onnx-community decoder graphs. Every reshape takes its
    sizes from the same few traced values (rows, new tokens, items), so onnxruntime's common-subexpression
    pass leaves a handful of shape nodes instead of a subgraph per reshape.
    """

    def __init__(self, model, cross_per_item: bool = False):
        """cross_per_item: the cross K/V has one row per item, shared by its beams (rows = items * beams,
        beams contiguous); else one row per decoder row."""
        super().__init__()
        lm = model.model.language_model
        self.decoder = lm.decoder
        self.lm_head = model.lm_head
        self.heads = lm.config.decoder_attention_heads
        self.head_dim = lm.config.d_model // self.heads
        self.num_layers = len(self.decoder.layers)
        self.cross_per_item = cross_per_item

    def run(self, inputs_embeds, encoder_attention_mask, past, cross):
        """inputs_embeds [B, t, D]; past: per layer K, V [B, h, P, hd] or None (no past);
        cross: per layer K, V [B or items, h, S, hd] -> (hidden [B, t, D], presents [B, h, P + t, hd])."""
        dec = self.decoder
        h, hd = self.heads, self.head_dim
        rows, t = inputs_embeds.shape[0], inputs_embeds.shape[1]
        heads = lambda y: y.view(rows, t, h, hd).transpose(1, 2)  # noqa: E731  [B, t, D] -> [B, h, t, hd]
        merge = lambda y: y.transpose(1, 2).reshape(rows, t, h * hd)  # noqa: E731  [B, h, t, hd] -> [B, t, D]
        cross_heads = heads
        if self.cross_per_item:
            # an item's beams are stacked as the query rows of one product per head: each cross K/V is read
            # once per step whatever the beam count ([items, h, beams * t, hd]; merge undoes it as it is)
            items = cross[0].shape[0]
            cross_heads = lambda y: y.reshape(items, -1, h, hd).transpose(1, 2)  # noqa: E731
        past_len = past[0].shape[2] if past is not None else 0
        positions = torch.arange(t, device=inputs_embeds.device) + past_len
        x = inputs_embeds + dec.embed_positions(inputs_embeds[:, :, 0], position_ids=positions)
        x = dec.layernorm_embedding(x)
        dtype = x.dtype
        # causal mask over [past; new]: query i (at past_len + i) may not see key j > past_len + i
        q_pos = positions[:, None]
        k_pos = torch.arange(past_len + t, device=x.device)[None, :]
        causal = (k_pos > q_pos).to(dtype) * torch.finfo(dtype).min
        cross_mask = _additive_padding_mask(encoder_attention_mask, dtype)
        presents = []
        for i, layer in enumerate(dec.layers):
            sa = layer.self_attn
            k = heads(sa.k_proj(x))
            v = heads(sa.v_proj(x))
            if past is not None:
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            h_out = sa.out_proj(merge(_attend(heads(sa.q_proj(x)), k, v, sa.scaling, causal)))
            x = layer.self_attn_layer_norm(x + h_out)
            ca = layer.encoder_attn
            q = cross_heads(ca.q_proj(x))
            h_out = ca.out_proj(merge(_attend(q, cross[2 * i], cross[2 * i + 1], ca.scaling, cross_mask)))
            x = layer.encoder_attn_layer_norm(x + h_out)
            h_out = layer.fc2(layer.activation_fn(layer.fc1(x)))
            x = layer.final_layer_norm(x + h_out)
        return x, presents


class Decoder(DecoderCore):
    """One decoding step with a self-attention KV cache; no control flow.

    inputs_embeds [B, t, D] (the new tokens' rows of ``embed_tokens.npy``), encoder_attention_mask [items, S],
    past.{i}.{key,value} [B, h, P, hd], cross.{i}.{key,value} [items, h, S, hd]
    -> logits [B, V] (last position), present.{i}.* [B, h, P + t, hd]

    The token lookup stays outside the graph: inside, the embedding table is only ``lm_head``'s weight,
    which onnxruntime then keeps once (packed) instead of twice (packed for lm_head, plain for a Gather).
    """

    def __init__(self, model):
        super().__init__(model, cross_per_item=True)  # one cross K/V per item, shared by its beams

    def forward(self, inputs_embeds, encoder_attention_mask, *kv):
        n = self.num_layers
        past, cross = kv[: 2 * n], kv[2 * n :]
        x, presents = self.run(inputs_embeds, encoder_attention_mask, past, cross)
        logits = self.lm_head(x[:, -1, :])
        return (logits, *presents)
