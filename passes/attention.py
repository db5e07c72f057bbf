"""Attention made visible to the matcher: ``nn.MultiheadAttention`` and
``F.scaled_dot_product_attention`` become explicit projections and matmuls.

* :class:`Matmul` is a one-op module (``torch.matmul``) kept as a leaf by the tracer, so an
  attention's two products get stable layer names (``<attention>.qk``, ``<attention>.av``).
* :class:`ApproxMultiheadAttention` is a traceable equivalent of ``nn.MultiheadAttention``:
  Linear ``q_proj``/``k_proj``/``v_proj``/``out_proj`` and ``Matmul`` ``qk``/``av``; scaling,
  masking, softmax and dropout stay exact float. :func:`swap_attention` puts it in place of
  every ``nn.MultiheadAttention`` of a (copied) model before tracing.
* :func:`decompose_sdpa` rewrites ``F.scaled_dot_product_attention`` nodes of a traced graph
  into ``<node>_qk`` matmul -> scale/mask -> softmax -> dropout -> ``<node>_av`` matmul nodes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.modules import transformer

from appmult_fx.ops.graph_leaf import graph_leaf

from .matmul_module import Matmul

# torch.nn containers traced through (their multiplies become layers); other torch.nn
# modules stay leaves as torch.fx has them.
TRACE_THROUGH: tuple[type, ...] = (
    nn.TransformerEncoder,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoder,
    nn.TransformerDecoderLayer,
    nn.Transformer,
)


def _seq_len(src: Tensor, batch_first: bool) -> Any:
    return src.size(1 if batch_first and src.dim() == 3 else 0) if isinstance(src, Tensor) else None


def _causal_hint(
    mask: Tensor | None, is_causal: bool | None = None, size: int | None = None
) -> bool:
    return bool(is_causal) if isinstance(is_causal, bool) else False


@contextlib.contextmanager
def tracing_patches() -> Iterator[None]:
    """While tracing: ``nn.Transformer*`` take their plain (non-fastpath) code path, and their
    two helpers that branch on tensor values are replaced by ones that do not (the
    ``is_causal`` hint they compute is unused: :class:`ApproxMultiheadAttention` applies
    ``attn_mask`` itself)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    saved = transformer._get_seq_len, transformer._detect_is_causal_mask
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        transformer._get_seq_len, transformer._detect_is_causal_mask = _seq_len, _causal_hint
        yield
    finally:
        transformer._get_seq_len, transformer._detect_is_causal_mask = saved
        torch.backends.mha.set_fastpath_enabled(fastpath)


@graph_leaf
def attention_bias(
    scores: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None, num_heads: int
) -> Tensor:
    """``scores [N, H, L, S]`` plus ``nn.MultiheadAttention``'s masks: ``attn_mask`` ``[L, S]``
    or ``[N*H, L, S]``, ``key_padding_mask`` ``[N, S]`` (``[S]`` for unbatched inputs, N = 1);
    boolean masks mark disallowed positions (``-inf``), float masks are added."""
    for mask, shape in ((attn_mask, None), (key_padding_mask, "kpm")):
        if mask is None:
            continue
        if mask.dtype == torch.bool:
            mask = torch.zeros_like(mask, dtype=scores.dtype).masked_fill(mask, float("-inf"))
        if shape == "kpm":
            mask = mask.reshape(-1, 1, 1, mask.shape[-1])  # [N, S] or unbatched [S]
        elif mask.dim() == 3:
            mask = mask.reshape(-1, num_heads, *mask.shape[-2:])
        scores = scores + mask
    return scores


@graph_leaf
def batch_first_inputs(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    batch_first: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``query``/``key``/``value`` as ``[N, L, E]``, after ``nn.MultiheadAttention``'s shape
    checks: batched inputs are 3-D, unbatched ones 2-D ``[L, E]`` (then N = 1), with a
    ``key_padding_mask`` ``[N, S]`` / ``[S]`` and a 2-D or 3-D ``attn_mask``."""
    unbatched = query.dim() == 2
    dims = 2 if unbatched else 3
    if query.dim() not in (2, 3) or key.dim() != dims or value.dim() != dims:
        raise ValueError(
            "MultiheadAttention: query, key and value must all be 3-D (batched) or all 2-D "
            f"(unbatched), got {query.dim()}-D, {key.dim()}-D and {value.dim()}-D"
        )
    if key_padding_mask is not None and key_padding_mask.dim() != dims - 1:
        raise ValueError(
            f"MultiheadAttention: key_padding_mask must be {dims - 1}-D for "
            f"{'unbatched' if unbatched else 'batched'} inputs, got {key_padding_mask.dim()}-D"
        )
    if attn_mask is not None and attn_mask.dim() not in (2, 3):
        raise ValueError(
            f"MultiheadAttention: attn_mask must be 2-D or 3-D, got {attn_mask.dim()}-D"
        )
    if unbatched:
        return query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
    if batch_first:
        return query, key, value
    return query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)


@graph_leaf
def unbatch_output(out: Tensor, query: Tensor, batch_first: bool) -> Tensor:
    """The attention output ``out [N, L, E]`` laid out as ``query`` is: ``[L, E]`` unbatched,
    else ``[N, L, E]`` or ``[L, N, E]``."""
    if query.dim() == 2:
        return out.squeeze(0)
    return out if batch_first else out.transpose(0, 1)


@graph_leaf
def unbatch_weights(weights: Tensor, query: Tensor) -> Tensor:
    """Attention weights ``[N, (H,) L, S]`` without the batch dimension for unbatched input."""
    return weights.squeeze(0) if query.dim() == 2 else weights


class ApproxMultiheadAttention(nn.Module):
    """Traceable ``nn.MultiheadAttention`` (same results in float) whose four projections are
    ``nn.Linear`` and whose two products are :class:`Matmul` modules, so each part is a
    separately assignable layer: ``q_proj``, ``k_proj``, ``v_proj``, ``qk``, ``av``, ``out_proj``.

    The scores are scaled by ``1/sqrt(head_dim)`` after ``qk`` (so the multiplier sees the
    projections themselves); inputs are batched (3-D) or unbatched (2-D), as in torch.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError(
                "ApproxMultiheadAttention does not support add_bias_kv or add_zero_attn; keep "
                "that nn.MultiheadAttention opaque with convert(..., leaf_modules=[...])"
            )
        e, self.num_heads, self.batch_first = mha.embed_dim, mha.num_heads, mha.batch_first
        self.embed_dim, self.head_dim, self.dropout = e, mha.head_dim, mha.dropout
        self._qkv_same_embed_dim = mha._qkv_same_embed_dim  # read by nn.Transformer* layers
        bias = mha.in_proj_bias
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.detach().chunk(3)
        else:
            weights = (
                mha.q_proj_weight.detach(),
                mha.k_proj_weight.detach(),
                mha.v_proj_weight.detach(),
            )
        biases = bias.detach().chunk(3) if bias is not None else (None, None, None)
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weights, biases, strict=True):
            lin = nn.Linear(
                w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype
            )
            with torch.no_grad():
                lin.weight.copy_(w)
                if b is not None:
                    lin.bias.copy_(b)
            setattr(self, name, lin)
        self.qk, self.av = Matmul(), Matmul()
        # A module, not F.dropout(training=self.training): tracing would fix that mode.
        self.attention_drop = nn.Dropout(mha.dropout)
        self.out_proj = mha.out_proj
        self.train(mha.training)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Same signature and results as ``nn.MultiheadAttention.forward`` (batched or
        unbatched inputs); ``is_causal`` is a hint only, as there: the mask is ``attn_mask``."""
        q_in, k_in, v_in = batch_first_inputs(
            query, key, value, key_padding_mask, attn_mask, self.batch_first
        )
        heads = (self.num_heads, self.head_dim)
        q = self.q_proj(q_in).unflatten(-1, heads).transpose(1, 2)  # [N, H, L, D]
        k = self.k_proj(k_in).unflatten(-1, heads).transpose(1, 2)  # [N, H, S, D]
        v = self.v_proj(v_in).unflatten(-1, heads).transpose(1, 2)  # [N, H, S, D]
        scores = self.qk(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        if attn_mask is not None or key_padding_mask is not None:
            scores = attention_bias(scores, attn_mask, key_padding_mask, self.num_heads)
        weights = self.attention_drop(F.softmax(scores, dim=-1))
        out = self.out_proj(self.av(weights, v).transpose(1, 2).flatten(2))  # [N, L, E]
        out = unbatch_output(out, query, self.batch_first)
        if not need_weights:
            return out, None
        weights = weights.mean(dim=1) if average_attn_weights else weights
        return out, unbatch_weights(weights, query)


def swap_attention(
    model: nn.Module, leaf_names: set[str], leaf_types: tuple[type, ...]
) -> list[str]:
    """Replace (in place) every ``nn.MultiheadAttention`` of ``model`` that is not kept a leaf
    with :class:`ApproxMultiheadAttention` (and torchvision's Swin ``ShiftedWindowAttention``
    with its traceable twin); returns the replaced modules' names."""
    from .window_attention import ApproxShiftedWindowAttention, is_swin_attention

    swapped = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if type(module) is not nn.MultiheadAttention and not is_swin_attention(module):
            continue
        parts = name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # inside a leaf: kept
        if any(
            a in leaf_names or (leaf_types and isinstance(modules[a], leaf_types))
            for a in ancestors
        ):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not child:
            raise ValueError(
                "the model itself is an nn.MultiheadAttention; wrap it in a module to convert it"
            )
        twin = (
            ApproxShiftedWindowAttention if is_swin_attention(module) else ApproxMultiheadAttention
        )
        setattr(parent, child, twin(module))
        swapped.append(name)
    return swapped


@graph_leaf
def sdpa_scores(
    scores: Tensor, query: Tensor, attn_mask: Tensor | None, is_causal: bool, scale: float | None
) -> Tensor:
    """Scale and mask ``q @ k^T`` exactly as ``F.scaled_dot_product_attention`` does."""
    scores = scores * (1.0 / math.sqrt(query.shape[-1]) if scale is None else scale)
    if is_causal:
        length, source = scores.shape[-2:]
        keep = torch.ones(length, source, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return scores


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def decompose_sdpa(gm: fx.GraphModule) -> int:
    """Rewrite each ``F.scaled_dot_product_attention`` node into explicit nodes
    (``<node>_qk`` matmul, scale/mask, softmax, dropout, ``<node>_av`` matmul); returns how many."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.scaled_dot_product_attention:
            continue
        kw = dict(zip(_SDPA_ARGS, node.args, strict=False)) | dict(node.kwargs)
        if kw.get("enable_gqa", False):
            raise ValueError(
                f"{node.name}: scaled_dot_product_attention with enable_gqa=True is not supported"
            )
        stack = node.meta.get("nn_module_stack")
        with gm.graph.inserting_before(node):

            def make(
                op: str,
                target: Any,
                args: tuple,
                kwargs: dict | None = None,
                name: str | None = None,
                stack: dict | None = stack,
            ) -> fx.Node:
                new = gm.graph.create_node(op, target, args, kwargs or {}, name=name)
                if stack is not None:
                    new.meta["nn_module_stack"] = dict(stack)
                return new

            kt = make("call_method", "transpose", (kw["key"], -2, -1))
            scores = make("call_function", torch.matmul, (kw["query"], kt), name=f"{node.name}_qk")
            scores = make(
                "call_function",
                sdpa_scores,
                (
                    scores,
                    kw["query"],
                    kw.get("attn_mask"),
                    kw.get("is_causal", False),
                    kw.get("scale"),
                ),
            )
            weights = make("call_function", F.softmax, (scores,), {"dim": -1})
            p = kw.get("dropout_p", 0.0)
            if not (isinstance(p, (int, float)) and p == 0):
                weights = make("call_function", F.dropout, (weights,), {"p": p, "training": True})
            out = make(
                "call_function", torch.matmul, (weights, kw["value"]), name=f"{node.name}_av"
            )
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count
