"""What a matched layer computes on: its operands and geometry, read once for every builder.

Each function turns a :class:`~appmult_fx.passes.match.LayerSite` (a module call or a
function call, arguments given positionally or by keyword) into one dict with named entries.
A weight or bias is an attribute path (``str``, module layers) or an existing graph node
(functional layers); :meth:`RewriteContext.operand` turns either into a node.
"""

from __future__ import annotations

from typing import Any

from .match import LayerSite, node_shape

PAD_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}


def as_tuple(v: Any, n: int) -> tuple[int, ...]:
    """``v`` as an ``n``-tuple of ints (a scalar is repeated, a sequence converted)."""
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def pad_list(padding: Any, kernel: tuple[int, ...] | None, dilation: tuple[int, ...]) -> list[int]:
    """``F.pad`` amounts (last dimension first) for a conv's ``padding`` argument."""
    n = len(dilation)
    if padding == "valid":
        per_dim = [(0, 0)] * n
    elif padding == "same":
        per_dim = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            per_dim.append((total // 2, total - total // 2))
    else:
        per_dim = [(p, p) for p in as_tuple(padding, n)]
    out: list[int] = []
    for left, right in reversed(per_dim):
        out += [left, right]
    return out


def _module_input(site: LayerSite) -> Any:
    return site.node.args[0] if site.node.args else site.node.kwargs["input"]


def _module_params(site: LayerSite) -> dict[str, Any]:
    path = str(site.node.target)  # the module (a layer name may add the call: ``fc@2``)
    return {
        "input": _module_input(site),
        "weight": f"{path}.weight",
        "bias": f"{path}.bias" if site.module.bias is not None else None,
    }


def _call_args(site: LayerSite, names: tuple[str, ...]) -> dict[str, Any]:
    """A function call's arguments by name (positional ones named after ``names``)."""
    return dict(zip(names, site.node.args, strict=False)) | dict(site.node.kwargs)


def conv_args(site: LayerSite) -> dict[str, Any]:
    """Input, weight, bias and geometry of a conv site (module or functional)."""
    dims = 1 if site.op == "conv1d" else 2
    if site.module is not None:
        m = site.module
        return _module_params(site) | {
            "kernel": tuple(m.kernel_size),
            "stride": as_tuple(m.stride, dims),
            "padding": m.padding,
            "dilation": as_tuple(m.dilation, dims),
            "groups": int(m.groups),
            "mode": PAD_MODES[m.padding_mode],
        }
    kw = _call_args(site, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"))
    wshape = node_shape(kw["weight"])
    padding = kw.get("padding", 0)
    if wshape is None and padding == "same":
        raise ValueError(
            f"layer {site.name!r}: padding='same' needs the weight's shape, which is computed at "
            "run time here; pass example_inputs to convert"
        )
    return {
        "input": kw["input"],
        "weight": kw["weight"],
        "bias": kw.get("bias"),
        "kernel": None if wshape is None else wshape[2:],
        "stride": as_tuple(kw.get("stride", 1), dims),
        "padding": padding,
        "dilation": as_tuple(kw.get("dilation", 1), dims),
        "groups": int(kw.get("groups", 1)),
        "mode": "constant",
    }


def linear_args(site: LayerSite) -> dict[str, Any]:
    """Input, weight and bias of a linear site (module or functional)."""
    if site.module is not None:
        return _module_params(site)
    kw = _call_args(site, ("input", "weight", "bias"))
    return {"input": kw["input"], "weight": kw["weight"], "bias": kw.get("bias")}


def conv_transpose_args(site: LayerSite) -> dict[str, Any]:
    """Input, weight, bias and geometry of a transposed-conv site (module or functional)."""
    dims = 1 if site.op == "conv_transpose1d" else 2
    if site.module is not None:
        m = site.module
        if len(site.node.args) > 1 or site.node.kwargs.get("output_size") is not None:
            raise ValueError(
                f"layer {site.name!r}: ConvTranspose with output_size is not supported; set "
                "output_padding on the module instead, or keep it float with "
                f"spec.set_module_name({site.name!r}, None)"
            )
        return _module_params(site) | {
            "stride": as_tuple(m.stride, dims),
            "padding": as_tuple(m.padding, dims),
            "output_padding": as_tuple(m.output_padding, dims),
            "dilation": as_tuple(m.dilation, dims),
            "groups": int(m.groups),
        }
    names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
    kw = _call_args(site, names)
    return {
        "input": kw["input"],
        "weight": kw["weight"],
        "bias": kw.get("bias"),
        "stride": as_tuple(kw.get("stride", 1), dims),
        "padding": as_tuple(kw.get("padding", 0), dims),
        "output_padding": as_tuple(kw.get("output_padding", 0), dims),
        "dilation": as_tuple(kw.get("dilation", 1), dims),
        "groups": int(kw.get("groups", 1)),
    }


def baddbmm_terms(site: LayerSite) -> tuple[Any, Any, Any]:
    """``(input, beta, alpha)`` of a ``baddbmm`` or ``addmm`` site (``beta * input + alpha *
    (a @ b)``; both take ``input`` first and the factors second and third)."""
    kw = _call_args(site, ("input", "batch1", "batch2"))
    return kw.get("input"), kw.get("beta", 1), kw.get("alpha", 1)
