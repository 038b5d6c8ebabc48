"""DaViT vision encoder + projector written for ONNX Runtime's CPU kernels (same function, less data movement).

transformers' DaViT keeps activations channels-first around every depthwise convolution and
channels-last around every linear layer, so each block transposes its whole activation four
times, partitions windows with another transpose, splits ``qkv`` with a copy and pads/crops with
shape arithmetic even when nothing needs padding. This module computes the same function from
the same weights with:

- activations channels-last ``[B, H, W, C]`` throughout; each depthwise convolution is written as
  ``permute -> Conv -> permute`` so onnxruntime folds both permutes into its NCHWc reorders, and its
  residual is folded into the kernel;
- ``q``, ``k``, ``v`` as three projections (the ``qkv`` weight cut in three: no ``Split`` copy), each
  permuted once, straight into window-and-head layout, and the attention output permuted once,
  straight back to ``[B, H, W, C]``;
- every size a Python constant computed from the (static) image size: no shape subgraphs, and
  pad/crop only where a stage's grid is not a multiple of the window.

The export checks the graph against transformers' own ``get_image_features``
(:class:`florence2_export.graphs.modules.VisionEncoder`), not against this module.
"""

from __future__ import annotations

import torch
from torch import nn

from florence2_runtime.inputs.image_size import ImageSize


def _conv_out(size: int, conv: nn.Conv2d) -> int:
    if isinstance(conv.padding, str):  # "same" / "valid": DaViT's patch embeddings give numbers
        raise ValueError(f"a patch embedding with padding={conv.padding!r} is not supported")
    return (size + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1


def _split_linear(linear: nn.Linear, parts: int) -> nn.ModuleList:
    """``Linear(C, parts * C)`` -> ``parts`` Linear(C, C) holding its row blocks (same weights, no Split)."""
    out = []
    for w, b in zip(
        linear.weight.chunk(parts), (linear.bias.chunk(parts) if linear.bias is not None else [None] * parts)
    ):
        part = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        part.weight = nn.Parameter(w.detach().clone(), requires_grad=False)
        if b is not None:
            part.bias = nn.Parameter(b.detach().clone(), requires_grad=False)
        out.append(part)
    return nn.ModuleList(out)


class ResidualDepthwise(nn.Module):
    """``conv(x) + x`` for a depthwise ``k x k`` convolution with ``k // 2`` padding, on channels-last x [B, H, W, C].

    The residual is folded into the kernel (+1 on its centre tap), so the graph has one Conv and no Add;
    onnxruntime turns the two permutes into its NCHWc reorders.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        k = conv.kernel_size[0]
        if not (
            conv.groups == conv.in_channels == conv.out_channels
            and conv.stride == (1, 1)
            and conv.kernel_size == (k, k)
            and conv.padding == (k // 2, k // 2)
            and conv.dilation == (1, 1)
        ):
            raise ValueError(f"ResidualDepthwise: not a same-size depthwise convolution: {conv}")
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            k,
            padding=k // 2,
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight)
            self.conv.weight[:, 0, k // 2, k // 2] += 1.0
            if conv.bias is not None and self.conv.bias is not None:  # both or neither (bias=... above)
                self.conv.bias.copy_(conv.bias)
        self.conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ``w x w`` windows; x [B, H, W, C] -> [B, H, W, C]."""

    def __init__(self, attn, height: int, width: int):
        super().__init__()
        self.q, self.k, self.v = _split_linear(attn.qkv, 3)
        self.proj = attn.proj
        self.w, self.heads, self.scale, self.dim = attn.window_size, attn.num_heads, attn.scale, attn.dim
        self.height, self.width = height, width
        self.ph = -(-height // self.w) * self.w  # padded grid
        self.pw = -(-width // self.w) * self.w

    def _windows(self, t: torch.Tensor) -> torch.Tensor:
        """[B, ph, pw, C] -> [B * nW, heads, w*w, hd] (the head dim stays innermost: a cheap permute)."""
        w, h, c = self.w, self.heads, self.dim
        t = t.reshape(-1, self.ph // w, w, self.pw // w, w, h, c // h).permute(0, 1, 3, 5, 2, 4, 6)
        return t.reshape(-1, h, w * w, c // h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, h, c = self.w, self.heads, self.dim
        if (self.ph, self.pw) != (self.height, self.width):
            x = nn.functional.pad(x, (0, 0, 0, self.pw - self.width, 0, self.ph - self.height))
        q, k, v = self._windows(self.q(x)), self._windows(self.k(x)), self._windows(self.v(x))
        # k^T as a last-two-axes transpose of its own: onnxruntime folds it into the MatMul (transB)
        probs = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * self.scale, dim=-1)
        out = torch.matmul(probs, v)  # [B * nW, heads, w*w, hd]
        out = out.reshape(-1, self.ph // w, self.pw // w, h, w, w, c // h).permute(0, 1, 4, 2, 5, 3, 6)
        out = out.reshape(-1, self.ph, self.pw, c)
        if (self.ph, self.pw) != (self.height, self.width):
            out = out[:, : self.height, : self.width, :]
        return self.proj(out)


class ChannelAttention(nn.Module):
    """Grouped channel attention (scores between channels of a group, summed over all tokens); x [B, H, W, C]."""

    def __init__(self, attn, height: int, width: int):
        super().__init__()
        self.q, self.k, self.v = _split_linear(attn.qkv, 3)
        self.proj = attn.proj
        self.groups, self.dim = attn.groups, attn.dim
        self.height, self.width = height, width
        self.scale = (height * width) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, c, tokens = self.groups, self.dim, self.height * self.width

        def grouped(t):  # [B, H, W, C] -> [B, g, C/g, N]
            return t.reshape(-1, tokens, g, c // g).permute(0, 2, 3, 1)

        q, k, v = grouped(self.q(x)), grouped(self.k(x)), grouped(self.v(x))
        probs = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * self.scale, dim=-1)  # [B, g, C/g, C/g]
        out = torch.matmul(probs, v)  # [B, g, C/g, N]
        return self.proj(out.permute(0, 3, 1, 2).reshape(-1, self.height, self.width, c))


class MixingBlock(nn.Module):
    """DaViT's spatial or channel block: depthwise conv, attention, depthwise conv, MLP, each with a residual.

    The attention keeps the checkpoint's module name (``window_attn`` / ``channel_attn``): the graph's node
    names follow it, and the int8 rules exclude nodes by name.
    """

    def __init__(self, block, attn: nn.Module, attn_name: str):
        super().__init__()
        self.conv1, self.norm1, self.conv2, self.norm2, self.ffn = (
            ResidualDepthwise(block.conv1),
            block.norm1,
            ResidualDepthwise(block.conv2),
            block.norm2,
            block.ffn,
        )
        self.attn_name = attn_name
        self.add_module(attn_name, attn)

    def forward(self, x):
        x = self.conv1(x)
        x = x + getattr(self, self.attn_name)(self.norm1(x))
        x = self.conv2(x)
        return x + self.ffn(self.norm2(x))


class PatchEmbed(nn.Module):
    """A stage's strided convolution with its LayerNorm before or after it; channels-last out.

    x: pixel_values [B, 3, H, W] for the first stage (channels-first), [B, H, W, C] for the others.
    """

    def __init__(self, embed, first: bool):
        super().__init__()
        self.conv, self.norm, self.pre_norm, self.first = embed.conv, embed.norm, embed.pre_norm, first

    def forward(self, x):
        if self.pre_norm:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if self.first else self.norm(x)
        if not self.first:
            x = x.permute(0, 3, 1, 2)
        x = self.conv(x).permute(0, 2, 3, 1)
        return x if self.pre_norm else self.norm(x)


class DaViTEncoder(nn.Module):
    """pixel_values [B, 3, H, W] -> image_features [B, I, D], for one fixed (H, W): DaViT + projector.

    Equal, up to float rounding, to ``model.model.get_image_features(pixel_values).pooler_output``.
    """

    grid_pos: torch.Tensor  # buffers: position embeddings [N, C] and the frame-0 temporal embedding [1, C]
    temporal: torch.Tensor

    def __init__(self, model, image_size: ImageSize):
        super().__init__()
        tower = model.model.vision_tower
        height, width = image_size.height, image_size.width
        self.embeds, self.stages = nn.ModuleList(), nn.ModuleList()
        for i, (embed, blocks) in enumerate(zip(tower.convs, tower.blocks)):
            height, width = _conv_out(height, embed.conv), _conv_out(width, embed.conv)
            self.embeds.append(PatchEmbed(embed, first=i == 0))
            self.stages.append(
                nn.Sequential(
                    *(
                        m
                        for blk in blocks
                        for m in (
                            MixingBlock(
                                blk.spatial_block,
                                WindowAttention(blk.spatial_block.window_attn, height, width),
                                "window_attn",
                            ),
                            MixingBlock(
                                blk.channel_block,
                                ChannelAttention(blk.channel_block.channel_attn, height, width),
                                "channel_attn",
                            ),
                        )
                    )
                )
            )
        self.grid, self.dim = (height, width), tower.embed_dim[-1]
        proj = model.model.multi_modal_projector
        pos = proj.image_position_embed
        # the projector's additive embeddings depend only on the grid: precompute them as [H * W, C]
        with torch.no_grad():
            x_emb = pos.column_embeddings(torch.arange(width))
            y_emb = pos.row_embeddings(torch.arange(height))
            grid_pos = torch.cat(
                [x_emb.unsqueeze(0).expand(height, -1, -1), y_emb.unsqueeze(1).expand(-1, width, -1)], dim=-1
            )
            temporal = proj.visual_temporal_embed.pos_idx_to_embed[:1]
        self.register_buffer("grid_pos", grid_pos.reshape(height * width, -1).clone(), persistent=False)
        self.register_buffer("temporal", temporal.clone(), persistent=False)
        self.image_projection, self.image_proj_norm = proj.image_projection, proj.image_proj_norm

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values
        for embed, stage in zip(self.embeds, self.stages):
            x = stage(embed(x))
        h, w = self.grid
        x = x.reshape(-1, h * w, self.dim) + self.grid_pos  # position_features, [B, N, C]
        x = x + self.temporal  # one frame: + temporal embedding of frame 0
        feats = torch.cat(
            [x.mean(dim=1, keepdim=True), x], dim=1
        )  # spatial mean token, then the frame's tokens
        return self.image_proj_norm(self.image_projection(feats))
