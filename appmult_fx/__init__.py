"""appmult-fx: approximate-multiplier simulation and retraining for traceable PyTorch models.

Public API (everything users and other modules rely on is exported here)::

    import appmult_fx as amx
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"))
"""

from __future__ import annotations

__version__ = "0.1.0"

from .convert import calibrate, convert, layers, quantizers
from .luts.formats import load_multiplier
from .luts.multiplier import Multiplier
from .luts.registry import builtin_names, multiplier
from .passes.records import LayerRecord
from .passes.spec import Rule, Spec
from .passes.trace import TraceFailure

__all__ = [
    "LayerRecord",
    "Multiplier",
    "Rule",
    "Spec",
    "TraceFailure",
    "__version__",
    "builtin_names",
    "calibrate",
    "convert",
    "layers",
    "load_multiplier",
    "multiplier",
    "quantizers",
]
