"""``export`` (converted model -> directory) and ``load_exported`` (directory -> onnxruntime)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import fx
from tqdm.auto import tqdm

from .domain import DOMAIN, DOMAIN_VERSION
from .freeze import freeze
from .integrity import check_model_file, check_nodes
from .lower import UnknownMultiplierError, lower
from .manifest import (
    LUT_DIR,
    MANIFEST_FILE,
    ExportFormatError,
    build,
    distinct_multipliers,
    file_sha256,
    read,
    verify_luts,
    write_luts,
    write_manifest,
)

MODEL_FILE = "model.onnx"
PORTABLE_FILE = "model_portable.onnx"


def _value_infos(values: Any) -> list[dict[str, Any]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        out.append({"name": v.name, "dtype": dtype, "shape": dims})
    return out


def export(
    gm: fx.GraphModule,
    example_inputs: Any,
    out_dir: str | Path,
    *,
    portable: bool = False,
    opset: int = 18,
    progress: bool = True,
) -> Path:
    """Export converted ``gm`` (eval mode, calibrated) to ``out_dir``; returns ``out_dir``.

    Writes ``model.onnx`` (one ``appmult.LutConv``/``LutGemm`` node per approximate layer,
    integer weight codes as initializers, dynamic batch), ``luts/*.lut`` (each distinct
    multiplier, own LUT format), ``manifest.json`` and, with ``portable``, also
    ``model_portable.onnx`` (standard ONNX ops only, runs on stock onnxruntime).
    ``example_inputs`` is a tensor or tuple of model inputs.
    """
    out = Path(out_dir)
    steps = tqdm(total=4 if portable else 3, desc="export", disable=not progress, leave=False)
    frozen_gm, layers = freeze(gm)
    steps.update()
    from .onnx_export import opset_of, to_onnx  # onnxscript: imported only when exporting

    model = to_onnx(frozen_gm, layers, example_inputs, opset)
    onnx.checker.check_model(model)
    steps.update()
    mults = distinct_multipliers(layer.multiplier for layer in layers)
    out.mkdir(parents=True, exist_ok=True)  # only once the model is known to export
    entries = write_luts(mults, out)
    steps.update()
    if portable:
        lowered = lower(model, {m.sha256: m.table.numpy() for m in mults})
        onnx.checker.check_model(lowered, full_check=True)
        _save_onnx(lowered, out / PORTABLE_FILE)
        steps.update()
    steps.close()
    _save_onnx(model, out / MODEL_FILE)
    info = {
        "file": MODEL_FILE,
        "sha256": file_sha256(out / MODEL_FILE),
        "portable_file": PORTABLE_FILE if portable else None,
        "portable_sha256": file_sha256(out / PORTABLE_FILE) if portable else None,
        "domain": DOMAIN,
        "domain_version": DOMAIN_VERSION,
        "opset": opset_of(model),
        "inputs": _value_infos(model.graph.input),
        "outputs": _value_infos(model.graph.output),
    }
    written = [MODEL_FILE, MANIFEST_FILE, *(e["file"] for e in entries)]
    written += [PORTABLE_FILE] if portable else []
    stale = _files_of_previous_export(out) - {(out / rel).resolve() for rel in written}
    write_manifest(out, build(info, layers, entries))
    for path in sorted(stale):
        path.unlink(missing_ok=True)
    if stale:
        removed = sorted(str(p.relative_to(out.resolve())) for p in stale)
        warnings.warn(
            f"export: removed {removed}, left in {out} by an earlier export and not part of "
            "this one",
            stacklevel=2,
        )
    return out


def _files_of_previous_export(out: Path) -> set[Path]:
    """The files an earlier export in ``out`` wrote, as its manifest lists them (resolved): its
    model files and its LUT files. Only names an export writes count (``model.onnx``,
    ``model_portable.onnx``, ``luts/*.lut`` regular files inside ``out``), whatever else a
    manifest there may list, so nothing of the user's is ever removed."""
    try:
        old = json.loads((out / MANIFEST_FILE).read_text("utf-8"))
        files = [old["model"]["file"], old["model"].get("portable_file")]
        files += [m["file"] for m in old["multipliers"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    root = out.resolve()
    ours = {(root / MODEL_FILE).resolve(), (root / PORTABLE_FILE).resolve()}
    found = set()
    for rel in files:
        if not isinstance(rel, str) or not rel:
            continue
        path = (root / rel).resolve()
        lut = path.parent == (root / LUT_DIR).resolve() and path.suffix == ".lut"
        if (path in ours or lut) and path.is_file() and not (root / rel).is_symlink():
            found.add(path)
    return found


def _save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """``onnx.save`` through a temporary file and a rename (never a half-written model)."""
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, tmp)
    os.replace(tmp, path)


class ExportedModel:
    """An exported model ready to run in onnxruntime (see :func:`load_exported`)."""

    def __init__(
        self, path: Path, manifest: dict[str, Any], model: onnx.ModelProto, providers: list[str]
    ) -> None:
        import onnxruntime as ort

        self.path = path
        self.manifest = manifest
        self.model = model
        self.session = ort.InferenceSession(model.SerializeToString(), providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, *inputs: Any) -> list[np.ndarray]:
        """Run on numpy arrays or tensors (in input order); returns every output as numpy."""
        if len(inputs) != len(self.input_names):
            raise ValueError(
                f"expected {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}"
            )
        feed = {
            name: (x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x))
            for name, x in zip(self.input_names, inputs, strict=True)
        }
        for name, x in feed.items():
            if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
                raise ValueError(
                    f"input {name!r} holds NaN or inf: the exported graph quantizes them to "
                    "arbitrary codes and would return finite, meaningless outputs"
                )
        return self.session.run(None, feed)

    def __call__(self, *inputs: Any) -> Any:
        """Like :meth:`run`; tensors out if tensors came in, a single output unwrapped."""
        outs = self.run(*inputs)
        if any(torch.is_tensor(x) for x in inputs):
            outs = [torch.from_numpy(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def load_exported(
    path: str | Path, *, portable: bool = False, providers: list[str] | None = None
) -> ExportedModel:
    """Load an export directory into onnxruntime, verifying it first.

    The manifest is validated against its schema (a newer ``schema_version`` is refused),
    every LUT file's sha256 is checked and the file loaded, the ONNX file's sha256 is checked,
    each ``appmult`` node must be a manifest layer that agrees with it (multiplier, bits,
    geometry, weight codes, every scale and zero point); the custom nodes are then lowered to
    standard ONNX with those tables (``portable=True`` runs ``model_portable.onnx`` instead,
    which has none).
    """
    root = Path(path)
    if root.is_file():
        root = root.parent
    manifest = read(root)
    mults = verify_luts(root, manifest)
    key = "portable_file" if portable else "file"
    rel = manifest["model"][key]
    if rel is None:
        raise ExportFormatError(
            root / MANIFEST_FILE, "no portable model; export with portable=True (--portable)"
        )
    model_path = root / rel
    if not model_path.is_file():
        raise ExportFormatError(model_path, "ONNX model named by the manifest is missing")
    check_model_file(model_path, manifest["model"]["portable_sha256" if portable else "sha256"])
    try:
        model = onnx.load(model_path)
    except Exception as exc:  # protobuf decode errors come in several types
        raise ExportFormatError(
            model_path, f"not a readable ONNX model ({type(exc).__name__}: {exc})"
        ) from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportFormatError(model_path, f"invalid ONNX model ({exc})") from None
    check_nodes(model, manifest, model_path, complete=not portable)
    try:
        lowered = lower(model, {sha: m.table.numpy() for sha, m in mults.items()})
    except UnknownMultiplierError as exc:
        raise ExportFormatError(model_path, str(exc)) from None
    return ExportedModel(root, manifest, lowered, providers or ["CPUExecutionProvider"])
