"""Export of converted models: ONNX with ``appmult`` LUT nodes, a manifest and the LUT files.

``export(gm, example_inputs, out_dir)`` writes the directory; ``load_exported(out_dir)``
verifies it and runs it in onnxruntime. Formats: docs/export.md.
"""

from .api import ExportedModel, export, load_exported
from .manifest import ExportFormatError

__all__ = ["ExportFormatError", "ExportedModel", "export", "load_exported"]
