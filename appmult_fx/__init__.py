"""appmult-fx: approximate-multiplier simulation and retraining for traceable PyTorch models.

Public API (everything users and other modules rely on is exported here)::

    import appmult_fx as amx
    gm = amx.convert(model, amx.Spec().set_global("mul8u_exact"))
"""

from __future__ import annotations

__version__ = "0.1.0"

from .assignment import SearchPoint, SearchResult, search
from .convert import calibrate, convert, layers, quantizers
from .data import DatasetInfo, dataset_info, load_dataset
from .export import ExportedModel, ExportFormatError, export, load_exported
from .luts.catalogue import load_catalogue
from .luts.formats import load_multiplier
from .luts.fp import FPMultiplier, from_fp_c_source, from_fp_function, load_fp
from .luts.gradients import with_gradients
from .luts.library import ImportReport, import_library
from .luts.metrics import metrics
from .luts.multiplier import Multiplier
from .luts.registry import builtin_names, multiplier
from .luts.user_defined import from_c_source, from_function, from_netlist
from .models import build_model
from .passes.records import LayerRecord
from .passes.spec import Rule, Spec
from .passes.trace import TraceFailure
from .train import TrainConfig, evaluate, fit
from .workflow import compare, retrain, train_float

__all__ = [
    "DatasetInfo",
    "ExportFormatError",
    "ExportedModel",
    "FPMultiplier",
    "ImportReport",
    "LayerRecord",
    "Multiplier",
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
