"""Checks that an export directory's ONNX file is the one its manifest describes.

:func:`check_model_file` compares the file's sha256 with the manifest's; :func:`check_nodes`
then requires every ``appmult`` node to be a manifest layer and to agree with it: multiplier
(name and content hash, listed among the LUT files), ``bits_a``, ``bits_b``, ``signed``, conv
geometry, the weight codes' shape and dtype and every quantization parameter initializer (scales
and zero points, bit for bit). The file hash covers what the manifest does not describe (biases, the
float layers); the node checks make a manifest that was edited along with the file, or a hash
recomputed after an edit, still fail where the two disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .domain import DOMAIN, OP_CONV, OP_MATMUL
from .manifest import ExportFormatError, file_sha256


def check_model_file(path: Path, expected: str | None) -> None:
    """Raise :class:`ExportFormatError` unless ``path`` hashes to the manifest's ``expected``."""
    if expected is None:
        raise ExportFormatError(path, "the manifest records no sha256 for this ONNX file")
    actual = file_sha256(path)
    if actual != expected:
        raise ExportFormatError(
            path,
            f"sha256 mismatch: manifest says {expected}, file hashes to {actual}; the ONNX model "
            "was modified or corrupted, refusing to run it (re-export the model)",
        )


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _same_numbers(value: np.ndarray | None, recorded: Any) -> bool:
    if value is None:
        return False
    got = np.asarray(value, np.float64).reshape(-1)
    want = np.asarray(recorded, np.float64).reshape(-1)
    return got.shape == want.shape and bool(np.array_equal(got, want))


def _expected_inputs(entry: dict[str, Any]) -> dict[int, tuple[str, Any]]:
    """Input index -> (what, manifest value) for the node's quantization parameters."""
    act = entry["activation"]
    other = entry.get("operand_b") or entry["weight"]
    side = "operand b" if "operand_b" in entry else "weight"
    return {
        2: ("activation scale", act["scale"]),
        3: ("activation zero point", act["zero_point"]),
        4: (f"{side} scale", other["scale"]),
        5: (f"{side} zero point", other["zero_point"]),
    }


def _check_node(
    node: onnx.NodeProto, entry: dict[str, Any], known: dict[str, Any], values: dict, path: Path
) -> None:
    at = _attrs(node)
    sha, name = at.get("multiplier_sha256", ""), at.get("multiplier", "")

    def refuse(what: str) -> None:
        raise ExportFormatError(
            path,
            f"node {node.name!r} {what}; the model and manifest do not belong together "
            "(edited file?), refusing to run it",
        )

    if sha not in known:
        refuse(
            f"uses an unknown multiplier {name!r} (sha256 {sha}): the manifest lists no such LUT"
        )
    if (sha, name) != (entry["multiplier_sha256"], entry["multiplier"]):
        refuse(f"uses multiplier {name!r}, the manifest's layer uses {entry['multiplier']!r}")
    if node.op_type != entry["op"]:
        refuse(f"is a {node.op_type}, the manifest's layer a {entry['op']}")
    for key in ("bits_a", "bits_b", "signed"):
        got, want = at.get(key), int(entry[key])
        if got != want or int(known[sha][key]) != want:
            refuse(f"has {key}={got}, the manifest says {want}")
    if node.op_type == OP_CONV:
        geo = entry.get("geometry", {})
        for key in ("strides", "pads", "dilations", "group"):
            if at.get(key) != geo.get(key):
                refuse(f"has {key}={at.get(key)}, the manifest says {geo.get(key)}")
    if node.op_type != OP_MATMUL:
        w = values.get(node.input[1])
        wt = entry["weight"]
        if w is None or list(w.shape) != wt["shape"] or w.dtype.name != wt["dtype"]:
            refuse(f"has weight codes unlike the manifest's {wt['dtype']} {wt['shape']}")
    for index, (what, recorded) in _expected_inputs(entry).items():
        if len(node.input) <= index or not _same_numbers(values.get(node.input[index]), recorded):
            refuse(f"has a {what} that differs from the manifest's {recorded}")


def check_nodes(
    model: onnx.ModelProto, manifest: dict[str, Any], path: Path, *, complete: bool = True
) -> None:
    """Every ``appmult`` node must be a manifest layer, agreeing with it, and (``complete``:
    the model with custom nodes, not the portable one) every manifest layer must have its node."""
    known = {m["table_sha256"]: m for m in manifest["multipliers"]}
    layers = {entry["node"]: entry for entry in manifest["layers"]}
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    seen = set()
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        entry = layers.get(node.name)
        if entry is None or node.name in seen:
            raise ExportFormatError(
                path, f"node {node.name!r} is not a layer of the manifest (or appears twice)"
            )
        seen.add(node.name)
        _check_node(node, entry, known, values, path)
    missing = sorted(set(layers) - seen)
    if complete and missing:
        raise ExportFormatError(path, f"the manifest's layers {missing} have no node in the model")
