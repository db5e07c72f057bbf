"""Hardware-aware per-layer multiplier assignment search (energy vs accuracy): ``amx.search``.

``search(model, candidates, data, ...) -> SearchResult``: an energy model from layer MACs and
multiplier power (:mod:`.energy`), per-layer sensitivity (:mod:`.sensitivity`), a
multi-objective Optuna study seeded with uniform and sensitivity-greedy assignments
(:mod:`.study`, :mod:`.seeds`), evaluated on one calibrated model whose tables are swapped per
layer (:mod:`.engine`); results, Pareto front and specs in :mod:`.result`.
"""

from .api import search
from .energy import EnergyModel
from .result import SearchPoint, SearchResult, pareto_front
from .sensitivity import Sensitivity

__all__ = ["EnergyModel", "SearchPoint", "SearchResult", "Sensitivity", "pareto_front", "search"]
