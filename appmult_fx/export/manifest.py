"""``manifest.json`` of an export: build, write the LUT files, validate, verify.

The manifest (JSON schema: ``manifest.schema.json`` in this package) lists the model files,
one entry per approximate layer and one per distinct multiplier with its LUT file (the
project's own format), the file's sha256, the table's content hash, error metrics and
provenance. Loading validates the schema, refuses a newer ``schema_version`` and verifies
every LUT file's sha256 before anything reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ..luts.format_errors import LutFormatError
from ..luts.formats import load_multiplier
from ..luts.metrics import metrics
from ..luts.multiplier import Multiplier
from ..passes.context import safe_name
from ..version import __version__
from .freeze import FrozenLayer

FORMAT = "appmult-fx-export"
# 2: the model files' sha256; 3: operand widths bits_a / bits_b (rectangular multipliers)
# instead of one "bits" (older exports are refused: re-export)
SCHEMA_VERSION = 3
MANIFEST_FILE = "manifest.json"
LUT_DIR = "luts"


class ExportFormatError(ValueError):
    """An export directory that cannot be loaded safely (names the file at fault)."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


@cache
def schema() -> dict[str, Any]:
    """The manifest's JSON schema (shipped as package data)."""
    text = resources.files(__package__).joinpath("manifest.schema.json").read_text("utf-8")
    return json.loads(text)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as JSON data (values JSON cannot hold become strings)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _numbers(t: Any, integer: bool) -> Any:
    values = t.reshape(-1).tolist()
    values = [int(v) for v in values] if integer else [float(v) for v in values]
    return values[0] if t.dim() == 0 else values


def layer_entry(layer: FrozenLayer) -> dict[str, Any]:
    """The manifest entry of one exported layer."""
    rec = layer.record
    entry = {
        "node": layer.name,
        "layer": layer.name,
        "op": layer.op,
        "source_op": rec.op,
        "multiplier": layer.multiplier.name,
        "multiplier_sha256": layer.multiplier.sha256,
        "bits_a": layer.multiplier.bits_a,
        "bits_b": layer.multiplier.bits_b,
        "signed": layer.multiplier.signed,
        "activation": {"scale": float(layer.x_scale), "zero_point": int(layer.x_zero_point)},
        "macs": rec.macs,
    }
    if layer.w_codes is None:  # matmul: the right operand is an activation too
        entry["operand_b"] = {"scale": float(layer.w_scale), "zero_point": int(layer.w_zero_point)}
    else:
        entry["weight"] = {
            "shape": list(layer.w_codes.shape),
            "dtype": str(layer.w_codes.dtype).removeprefix("torch."),
            "per_channel": layer.w_scale.dim() == 1,
            "scale": _numbers(layer.w_scale, False),
            "zero_point": _numbers(layer.w_zero_point, True),
        }
    if layer.geometry:
        entry["geometry"] = dict(layer.geometry)
    return entry


def distinct_multipliers(multipliers: Iterable[Multiplier]) -> list[Multiplier]:
    """Each multiplier once, by name and table: two names for one table (two circuits with the
    same truth table, with their own power figures) stay two entries. The same name and table
    with different hardware figures is refused: the manifest could keep only one."""
    out: dict[tuple[str, str], Multiplier] = {}
    for mult in multipliers:
        key = (mult.name, mult.sha256)
        known = out.setdefault(key, mult)
        if getattr(known, "hardware", None) != getattr(mult, "hardware", None):
            raise ValueError(
                f"two multipliers named {mult.name!r} with the same table have different "
                f"hardware figures ({getattr(known, 'hardware', None)} and "
                f"{getattr(mult, 'hardware', None)}); rename one (mult.renamed(...)) to export both"
            )
    return list(out.values())


def write_luts(multipliers: list[Multiplier], out_dir: Path) -> list[dict[str, Any]]:
    """Save each multiplier under ``out_dir/luts/``; returns their manifest entries."""
    (out_dir / LUT_DIR).mkdir(parents=True, exist_ok=True)
    entries = []
    used: set[str] = set()
    for mult in multipliers:
        stem = f"{LUT_DIR}/{safe_name(mult.name)}_{mult.sha256[:12]}"
        rel = f"{stem}.lut"
        for k in range(2, len(multipliers) + 2):  # names that differ in unsafe characters only
            if rel not in used:
                break
            rel = f"{stem}_{k}.lut"
        used.add(rel)
        mult.save(out_dir / rel)
        entries.append(
            {
                "name": mult.name,
                "kind": mult.kind,
                "bits_a": mult.bits_a,
                "bits_b": mult.bits_b,
                "signed": mult.signed,
                "file": rel,
                "sha256": file_sha256(out_dir / rel),
                "table_sha256": mult.sha256,
                "has_gradients": mult.has_gradients,
                "metrics": metrics(mult),
                "provenance": _plain(mult.provenance),
                "hardware": getattr(mult, "hardware", None),
            }
        )
    return entries


def build(
    model: dict[str, Any], layers: list[FrozenLayer], multipliers: list[dict[str, Any]]
) -> dict[str, Any]:
    """The manifest document (validated against the schema)."""
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "appmult_fx_version": __version__,
        "model": model,
        "layers": [layer_entry(layer) for layer in layers],
        "multipliers": multipliers,
    }
    validate(manifest, "<new manifest>")
    return manifest


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically as strict JSON (a NaN or inf value is an error)."""
    path = Path(out_dir) / MANIFEST_FILE
    try:
        text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    except ValueError as exc:
        raise ValueError(f"refusing to write a manifest with a non-finite number ({exc})") from None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def validate(manifest: Any, where: Path | str) -> None:
    """Raise :class:`ExportFormatError` unless ``manifest`` is a valid manifest of a version
    this appmult-fx reads."""
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ExportFormatError(
            where,
            f"manifest schema_version {version} is newer than this appmult-fx {__version__} reads "
            f"(up to {SCHEMA_VERSION}); upgrade appmult-fx to load this export",
        )
    if isinstance(version, int) and not isinstance(version, bool) and version < SCHEMA_VERSION:
        raise ExportFormatError(
            where,
            f"manifest schema_version {version} predates this appmult-fx's (version "
            f"{SCHEMA_VERSION}: ONNX files' sha256, operand widths bits_a/bits_b), so the model "
            "cannot be verified; re-export it with this appmult-fx",
        )
    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ExportFormatError(where, f"invalid manifest at {at}: {exc.message}") from None
    known = {(m["name"], m["table_sha256"]): m for m in manifest["multipliers"]}
    if len(known) != len(manifest["multipliers"]):
        raise ExportFormatError(where, "the manifest lists a multiplier (name and table) twice")
    for layer in manifest["layers"]:
        mult = known.get((layer["multiplier"], layer["multiplier_sha256"]))
        if mult is None:
            raise ExportFormatError(
                where,
                f"layer {layer['layer']!r} uses multiplier {layer['multiplier']!r} "
                f"(sha256 {layer['multiplier_sha256']}), which the manifest does not list",
            )
        for key in ("bits_a", "bits_b", "signed"):
            if layer[key] != mult[key]:
                raise ExportFormatError(
                    where,
                    f"layer {layer['layer']!r} says {key}={layer[key]!r} but its multiplier "
                    f"{mult['name']!r} has {key}={mult[key]!r}; the manifest was edited or "
                    "corrupted, refusing to load it",
                )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read(export_dir: Path) -> dict[str, Any]:
    """The validated manifest of ``export_dir``."""
    path = Path(export_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ExportFormatError(path, "missing; expected the manifest.json that amx.export writes")
    try:
        manifest = json.loads(path.read_text("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ExportFormatError(path, f"not valid JSON ({exc})") from None
    validate(manifest, path)
    return manifest


def verify_luts(export_dir: Path, manifest: dict[str, Any]) -> dict[str, Multiplier]:
    """Check every LUT file's sha256 against the manifest, then load it; returns the
    multipliers by content hash. Refuses a missing, modified or mismatching file."""
    out = {}
    root = Path(export_dir).resolve()
    for entry in manifest["multipliers"]:
        path = (root / entry["file"]).resolve()
        if root not in path.parents:
            raise ExportFormatError(path, "LUT file lies outside the export directory")
        if not path.is_file():
            raise ExportFormatError(
                path, f"LUT file of multiplier {entry['name']!r} named by the manifest is missing"
            )
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            raise ExportFormatError(
                path,
                f"sha256 mismatch for multiplier {entry['name']!r}: manifest says "
                f"{entry['sha256']}, file hashes to {actual}; the LUT file was modified or "
                "corrupted, refusing to load it",
            )
        try:
            mult = load_multiplier(path)
        except LutFormatError as exc:
            raise ExportFormatError(path, f"unreadable LUT file ({exc})") from None
        if (mult.sha256, mult.bits_a, mult.bits_b, mult.signed) != (
            entry["table_sha256"],
            entry["bits_a"],
            entry["bits_b"],
            entry["signed"],
        ):
            raise ExportFormatError(
                path,
                f"LUT content (sha256 {mult.sha256}, {mult.widths} bits, signed={mult.signed}) "
                f"does not match the manifest entry of {entry['name']!r}",
            )
        out[mult.sha256] = mult
    return out
