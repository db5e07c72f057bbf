"""appmult-fx: approximate-multiplier simulation and retraining for traceable PyTorch models.

Public API (everything users and other modules rely on is exported here)::

    import appmult_fx as amx
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"))
"""

from __future__ import annotations

__version__ = "0.1.0"

from .luts.formats import load_multiplier
from .luts.multiplier import Multiplier
from .luts.registry import builtin_names, multiplier

__all__ = [
    "Multiplier",
    "__version__",
    "builtin_names",
    "load_multiplier",
    "multiplier",
]
