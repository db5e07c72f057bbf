"""Writing a search to a folder: ``pareto.json``, spec files, ``results.md``, figures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..luts.registry import multiplier as builtin
from .plot import plot_front, plot_sensitivity
from .result import SearchPoint, SearchResult, save_json

LOSSES = (0.005, 0.01)  # accuracy loss thresholds reported (0.5 and 1 point)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def _is_builtin(mult: Any) -> bool:
    try:
        return builtin(mult.name).sha256 == mult.sha256
    except KeyError:
        return False


def multiplier_refs(result: SearchResult, out: Path) -> dict[str, str]:
    """Candidate name -> how spec files name it: a built-in name, or a ``.lut`` file written
    to ``out/luts/`` (path relative to ``out/specs/``)."""
    refs = {}
    (out / "luts").mkdir(parents=True, exist_ok=True)
    for name, mult in result.candidates.items():
        if _is_builtin(mult):
            refs[name] = name
        else:
            mult.save(out / "luts" / f"{_slug(name)}.lut")
            refs[name] = f"../luts/{_slug(name)}.lut"
    return refs


def write_specs(result: SearchResult, out: Path) -> list[Path]:
    """One spec file per Pareto point (``specs/pareto_XX.json``, loadable by ``Spec.from_file``
    and ``appmult-fx retrain --spec``); returns the paths in front order."""
    refs = multiplier_refs(result, out)
    paths = []
    for i, p in enumerate(result.pareto):
        data = {"module_name": {layer: refs[n] for layer, n in p.assignment.items()}}
        if result.exact is not None:  # layers outside the search stay exact, as evaluated
            data = {"global": result.exact.name, **data}
        paths.append(save_json(out / "specs" / f"pareto_{i:02d}.json", data))
    return paths


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _row(i: Any, p: SearchPoint, ref: SearchPoint) -> str:
    saved = 1.0 - p.energy / ref.energy
    names = sorted(set(p.assignment.values()))
    mix = ", ".join(f"`{n}`" for n in names) if len(names) <= 3 else f"{len(names)} multipliers"
    return (
        f"| {i} | {p.energy:.4f} | {100 * saved:.1f} | {_pct(p.accuracy)} | "
        f"{_pct(p.test_accuracy)} | {mix} |"
    )


def _distinct(result: SearchResult) -> int:
    return len({tuple(sorted(p.assignment.items())) for p in result.points})


def results_markdown(result: SearchResult, command: str = "", wall_s: float | None = None) -> str:
    """The report: the threshold summary, the front, the uniform baselines, sensitivity."""
    ref = result.best_uniform
    lines = [
        "# Per-layer multiplier assignment search\n",
        f"{len(result.points)} trials ({_distinct(result)} distinct assignments; a trial that "
        "repeats an evaluated assignment reuses its values); energies relative to the exact "
        "multiplier; accuracies in % (validation: held-back training data used to choose; "
        "test: reported only). The Pareto front and the thresholds cover the trials and the "
        "uniform assignments.\n",
        f"Best uniform assignment: `{ref.label.removeprefix('uniform:')}` "
        f"(energy {ref.energy:.4f}, validation {_pct(ref.accuracy)}, test "
        f"{_pct(ref.test_accuracy)}).\n",
        "| accuracy loss allowed (validation) | Pareto point | energy | energy saved vs best "
        "uniform (%) | validation | test |",
        "|---|---|---:|---:|---:|---:|",
    ]
    front = result.pareto
    for loss in LOSSES:
        p = result.cheapest_within(loss)
        if p is None:
            lines.append(f"| <= {100 * loss:.1f} points | none | | | | |")
            continue
        lines.append(
            f"| <= {100 * loss:.1f} points | {front.index(p)} | {p.energy:.4f} | "
            f"{100 * (1 - p.energy / ref.energy):.1f} | {_pct(p.accuracy)} | "
            f"{_pct(p.test_accuracy)} |"
        )
    head = "| {} | energy | saved vs best uniform (%) | validation | test | multipliers |"
    rule = "|---|---:|---:|---:|---:|---|"
    lines += ["\n## Pareto front\n", head.format("point"), rule]
    lines += [_row(i, p, ref) for i, p in enumerate(front)]
    lines += ["\n## Uniform assignments\n", head.format("multiplier"), rule]
    lines += [
        _row(f"`{p.label.removeprefix('uniform:')}`", p, ref)
        for p in sorted(result.baselines, key=lambda q: q.energy)
    ]
    if result.sensitivity is not None:
        lines += ["\n## Sensitivity (one layer approximated)\n", result.sensitivity.markdown()]
    if command:
        lines.append(f"\nCommand: `{command}`\n")
    if wall_s is not None:
        lines.append(f"Wall time: {wall_s:.0f} s.\n")
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_outputs(
    result: SearchResult, out_dir: str | Path, command: str = "", wall_s: float | None = None
) -> dict[str, Path]:
    """Write ``pareto.json``, ``specs/``, ``results.md``, ``pareto.png`` and
    ``sensitivity.png`` into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    specs = write_specs(result, out)
    data = result.to_dict()
    for entry, spec in zip(data["pareto"], specs):
        entry["spec"] = str(spec.relative_to(out))
    data.update(command=command, wall_time_s=wall_s)
    paths = {"pareto.json": save_json(out / "pareto.json", data)}
    paths["results.md"] = write_text(out / "results.md", results_markdown(result, command, wall_s))
    paths["pareto.png"] = plot_front(result, out / "pareto.png")
    if result.sensitivity is not None:
        paths["sensitivity.png"] = plot_sensitivity(result.sensitivity, out / "sensitivity.png")
    return paths
