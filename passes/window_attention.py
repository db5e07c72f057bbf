"""torchvision's Swin ``ShiftedWindowAttention`` made visible to the matcher.

torchvision wraps the whole window attention in one opaque function (``torch.fx.wrap``), which
hides its four multiplies. :class:`ApproxShiftedWindowAttention` computes the same thing with
the data-dependent steps (padding, cyclic shift, window partition/merge, shift mask) in small
opaque helpers and the multiplies as layers: ``qkv`` and ``proj`` (Linear), ``qk`` and ``av``
(:class:`~.attention.Matmul`). Swin V2's cosine attention is not handled (it stays opaque).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from appmult_fx.ops.graph_leaf import graph_leaf

from .matmul_module import Matmul


def _geometry(x: Tensor, window: list[int], shift: list[int]) -> tuple[int, int, list[int]]:
    """Padded height/width and the effective shift (none where a window covers the map)."""
    h, w = x.shape[1], x.shape[2]
    pad_h = h + (window[0] - h % window[0]) % window[0]
    pad_w = w + (window[1] - w % window[1]) % window[1]
    shift = [0 if window[0] >= pad_h else shift[0], 0 if window[1] >= pad_w else shift[1]]
    return pad_h, pad_w, shift


@graph_leaf
def window_partition(x: Tensor, window: list[int], shift: list[int]) -> Tensor:
    """``[B, H, W, C]`` -> padded, cyclically shifted windows ``[B*nW, Wh*Ww, C]``."""
    b, h, w, c = x.shape
    pad_h, pad_w, shift = _geometry(x, window, shift)
    x = F.pad(x, (0, 0, 0, pad_w - w, 0, pad_h - h))
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    x = x.view(b, pad_h // window[0], window[0], pad_w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


@graph_leaf
def window_mask(attn: Tensor, x: Tensor, window: list[int], shift: list[int]) -> Tensor:
    """Add the shifted-window mask (``-100`` between regions) to ``attn [B*nW, heads, N, N]``."""
    pad_h, pad_w, shift = _geometry(x, window, shift)
    if sum(shift) == 0:
        return attn
    mask = x.new_zeros((pad_h, pad_w))
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    count = 0
    for hs in h_slices:
        for ws in w_slices:
            mask[hs[0] : hs[1], ws[0] : ws[1]] = count
            count += 1
    n_windows = (pad_h // window[0]) * (pad_w // window[1])
    mask = mask.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(n_windows, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    heads, n = attn.shape[1], attn.shape[2]
    attn = attn.view(-1, n_windows, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
    return attn.view(-1, heads, n, n)


@graph_leaf
def window_merge(out: Tensor, x: Tensor, window: list[int], shift: list[int]) -> Tensor:
    """Windows ``[B*nW, N, C]`` back to ``[B, H, W, C]`` (reverse shift, remove padding)."""
    b, h, w, c = x.shape
    pad_h, pad_w, shift = _geometry(x, window, shift)
    out = out.view(b, pad_h // window[0], pad_w // window[1], window[0], window[1], c)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, pad_h, pad_w, c)
    if sum(shift) > 0:
        out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
    return out[:, :h, :w, :].contiguous()


def is_swin_attention(module: nn.Module) -> bool:
    """Whether ``module`` is torchvision's (V1) ``ShiftedWindowAttention`` exactly."""
    cls = type(module)
    return (
        cls.__name__ == "ShiftedWindowAttention"
        and cls.__module__ == "torchvision.models.swin_transformer"
    )


class ApproxShiftedWindowAttention(nn.Module):
    """Traceable twin of torchvision's ``ShiftedWindowAttention`` (same parameters, same float
    results) with layers ``qkv``, ``qk``, ``av``, ``proj``; scores are scaled after ``qk``."""

    def __init__(self, swa: nn.Module) -> None:
        super().__init__()
        self.window_size, self.shift_size = list(swa.window_size), list(swa.shift_size)
        self.num_heads = swa.num_heads
        self.qkv, self.proj = swa.qkv, swa.proj
        self.relative_position_bias_table = swa.relative_position_bias_table
        self.register_buffer("relative_position_index", swa.relative_position_index)
        self.qk, self.av = Matmul(), Matmul()
        # Modules, not F.dropout(training=self.training): tracing would fix that mode.
        self.attention_drop = nn.Dropout(swa.attention_dropout)
        self.output_drop = nn.Dropout(swa.dropout)
        self.train(swa.training)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, H, W, C]`` -> ``[B, H, W, C]``, as torchvision's module."""
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index]  # [N*N, heads]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # [1, heads, N, N]
        windows = window_partition(x, self.window_size, self.shift_size)
        dim = self.qkv.in_features
        head_dim = dim // self.num_heads
        q, k, v = (
            self.qkv(windows).unflatten(-1, (3, self.num_heads, head_dim)).permute(2, 0, 3, 1, 4)
        )
        attn = self.qk(q, k.transpose(-2, -1)) * head_dim**-0.5 + bias
        attn = window_mask(attn, x, self.window_size, self.shift_size)
        attn = self.attention_drop(F.softmax(attn, dim=-1))
        out = self.av(attn, v).transpose(1, 2).flatten(2)
        out = self.output_drop(self.proj(out))
        return window_merge(out, x, self.window_size, self.shift_size)
