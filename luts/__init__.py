"""The multiplier/LUT library: multiplier value objects, tables, gradients, metrics, files.

This package sits below every other layer of appmult-fx and imports nothing from them.
It is installed as ``appmult_fx.luts`` (see ``pyproject.toml``'s package-dir mapping).
Importing it registers the built-in generator families (:mod:`.builtin_families`).
"""

from . import builtin_families as _builtin_families  # noqa: F401  (registers the families)
