"""appmult-fx: approximate-multiplier simulation and retraining for traceable PyTorch models.

Public API (everything users and other modules rely on is exported here)::

    import appmult_fx as amx
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"))
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from appmult_fx.luts.catalogue import load_catalogue
from appmult_fx.luts.cells import Cell
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.fp import FPMultiplier, from_fp_c_source, from_fp_function, load_fp
from appmult_fx.luts.gradients import with_gradients
from appmult_fx.luts.library import ImportReport, import_library
from appmult_fx.luts.metrics import metrics
from appmult_fx.luts.multiplier import Multiplier
from appmult_fx.luts.netlist import NetlistError
from appmult_fx.luts.registry import builtin_names, multiplier
from appmult_fx.luts.user_defined import from_c_source, from_function, from_netlist
from appmult_fx.passes.records import LayerRecord
from appmult_fx.passes.spec import Rule, Spec
from appmult_fx.passes.trace import TraceFailure

from .convert import calibrate, convert, layers, quantizers
from .version import __version__

# Loaded on first access: export (onnx, onnxscript, jsonschema) and the application
# (appmult_fx.app: data sets, models, training, workflows), which ``import appmult_fx``
# does not need. Name -> module defining it.
_LAZY = {
    "ExportedModel": "appmult_fx.export",
    "ExportFormatError": "appmult_fx.export",
    "export": "appmult_fx.export",
    "load_exported": "appmult_fx.export",
    "DatasetInfo": "appmult_fx.app.data",
    "dataset_info": "appmult_fx.app.data",
    "load_dataset": "appmult_fx.app.data",
    "build_model": "appmult_fx.app.models",
    "TrainConfig": "appmult_fx.app.train",
    "evaluate": "appmult_fx.app.train",
    "fit": "appmult_fx.app.train",
    "compare": "appmult_fx.app.compare",
    "retrain": "appmult_fx.app.workflow",
    "keep_freed_memory": "appmult_fx.allocator",
    "train_float": "appmult_fx.app.workflow",
    "SearchPoint": "appmult_fx.assignment",
    "SearchResult": "appmult_fx.assignment",
    "search": "appmult_fx.assignment",
}


def __getattr__(name: str) -> Any:
    """Load a lazily exported name (see ``_LAZY``) on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """This package's module type: ``appmult_fx.export`` stays the function.

    Importing the ``appmult_fx.export`` subpackage makes Python set the package attribute
    ``export`` to that subpackage; the eager ``from .export import export`` used to overwrite
    it again, and with lazy loading this guard keeps the public name the function instead.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "export" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "Cell",
    "DatasetInfo",
    "ExportFormatError",
    "ExportedModel",
    "FPMultiplier",
    "ImportReport",
    "LayerRecord",
    "Multiplier",
    "NetlistError",
    "Rule",
    "SearchPoint",
    "SearchResult",
    "Spec",
    "TraceFailure",
    "TrainConfig",
    "__version__",
    "build_model",
    "builtin_names",
    "calibrate",
    "compare",
    "convert",
    "dataset_info",
    "evaluate",
    "export",
    "fit",
    "from_c_source",
    "from_fp_c_source",
    "from_fp_function",
    "from_function",
    "from_netlist",
    "import_library",
    "keep_freed_memory",
    "layers",
    "load_catalogue",
    "load_dataset",
    "load_exported",
    "load_fp",
    "load_multiplier",
    "metrics",
    "multiplier",
    "quantizers",
    "retrain",
    "search",
    "train_float",
    "with_gradients",
]
