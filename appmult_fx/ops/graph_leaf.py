"""Functions that any torch.fx tracer keeps as one ``call_function`` node.

A converted GraphModule calls these functions from its generated code. torch.fx re-traces that
code, with its modules kept as leaves, whenever the module is pickled or copied into a new
GraphModule (``fx.Transformer``, ``fx.Interpreter``-based passes), with a tracer that knows
nothing of appmult-fx (user tracers must keep the quantizer modules as leaves too);
``torch.fx.wrap`` would only cover tracing code whose globals are this package's own modules.
A function decorated with :func:`graph_leaf` records itself as one node whenever an argument is
an ``fx.Proxy``, with any tracer, and runs normally otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch import fx

F = TypeVar("F", bound=Callable[..., Any])


def _first_proxy(values: Iterable[Any]) -> fx.Proxy | None:
    """The first ``fx.Proxy`` among ``values`` (nested in lists, tuples and dict values)."""
    for value in values:
        if isinstance(value, fx.Proxy):
            return value
        if isinstance(value, (list, tuple, dict)):
            inner = _first_proxy(value.values() if isinstance(value, dict) else value)
            if inner is not None:
                return inner
    return None


def graph_leaf(fn: F) -> F:
    """``fn``, recorded as one ``call_function`` node (target: the returned function) when it is
    called with a traced value, by whatever tracer is running."""

    @functools.wraps(fn)
    def leaf(*args: Any, **kwargs: Any) -> Any:
        proxy = _first_proxy((*args, *kwargs.values()))
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", leaf, args, kwargs)
        return fn(*args, **kwargs)

    return leaf  # type: ignore[return-value]
