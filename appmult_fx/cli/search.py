"""``appmult-fx search``: which multiplier for which layer (energy vs accuracy)."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``search`` sub-command to the ``appmult-fx`` parser."""
    p = sub.add_parser(
        "search",
        help="hardware-aware per-layer multiplier assignment search",
        description="Search per-layer multiplier assignments of a float checkpoint for low "
        "energy and high accuracy (Optuna, NSGA-II or TPE), scored on a validation split held "
        "back from the training data; writes pareto.json, specs/, results.md, pareto.png and "
        "sensitivity.png into --out. Rerun the same command to resume (refused, naming what "
        "differs, when the checkpoint, costs, calibration or validation settings changed).",
    )
    p.add_argument("--checkpoint", required=True, help="float checkpoint from `appmult-fx train`")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--catalogue", help="catalogue.json of multipliers (amx.load_catalogue)")
    p.add_argument(
        "--widths",
        type=_widths_arg,
        metavar="AxB[u|s]",
        help="with --catalogue: keep the multipliers of these widths only, e.g. 8u, 8x4u, 8x4 "
        "(the search needs candidates of one width and signedness)",
    )
    g.add_argument(
        "--candidates", nargs="+", metavar="NAME_OR_LUT", help="built-in names or LUT files"
    )
    p.add_argument(
        "--power",
        nargs="*",
        default=[],
        type=_power_arg,
        metavar="NAME=VALUE",
        help="cost of a candidate (overrides its hardware figure)",
    )
    p.add_argument(
        "--cost",
        default="power_mw",
        help="hardware figure used as cost (power_mw, area_um2, ...; default power_mw)",
    )
    p.add_argument(
        "--reference-power",
        type=_number(">0"),
        default=None,
        help="cost of the exact multiplier (default: that of an exact candidate)",
    )
    p.add_argument(
        "--trials",
        type=_count(1),
        default=100,
        help="distinct assignments the study evaluates (>= 1; repeats do not count)",
    )
    p.add_argument(
        "--workers", type=_count(1), default=1, help="worker processes sharing the study"
    )
    p.add_argument("--sampler", choices=("nsga2", "tpe"), default="nsga2")
    p.add_argument(
        "--population", type=_count(2), default=None, help="NSGA-II population size (>= 2)"
    )
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in --out)")
    p.add_argument("--study-name", default="appmult-search")
    p.add_argument("--metric", choices=("accuracy", "kl"), default="accuracy")
    p.add_argument(
        "--val-fraction",
        type=_number("fraction"),
        default=0.2,
        help="share of the training data held back as the validation split (0 < x < 1)",
    )
    p.add_argument("--calib-batches", type=_count(1), default=8, help="calibration batches (>= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--retrain-epochs", type=_count(0), default=0, help="retrain chosen points (0: no)"
    )
    p.add_argument("--retrain-steps", type=_count(1), default=None, help="cap steps per epoch")
    p.add_argument("--retrain-lr", type=_number(">0"), default=1e-3)
    p.add_argument(
        "--retrain-points",
        choices=("chosen", "all"),
        default="chosen",
        help="chosen: the cheapest points within 0.5 / 1 point and the best uniform; all: "
        "every Pareto point",
    )
    p.add_argument(
        "--retrain-max-loss",
        type=_number(">=0"),
        default=2.0,
        help="with --retrain-points all: only Pareto points within this many points of the "
        "best uniform validation accuracy (default 2)",
    )
    p.add_argument("--gradients", choices=("lut", "ste"), default="lut")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_search)


def _count(least: int) -> Any:
    """argparse type: an integer >= ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {value}")
        return value

    parse.__name__ = f"integer >= {least}"
    return parse


def _number(rule: str) -> Any:
    """argparse type: a finite number that is ``>0``, ``>=0`` or a ``fraction`` (0 < x < 1)."""
    checks = {
        ">0": (lambda v: v > 0, "a number > 0"),
        ">=0": (lambda v: v >= 0, "a number >= 0"),
        "fraction": (lambda v: 0 < v < 1, "a number > 0 and < 1"),
    }
    ok, what = checks[rule]

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what
    return parse


def _power_arg(pair: str) -> tuple[str, float]:
    """``--power NAME=VALUE``: a candidate name and a finite cost >= 0."""
    name, sep, value = pair.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {pair!r}")
    try:
        cost = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{pair!r}: the value {value!r} is not a number") from None
    if not (math.isfinite(cost) and cost >= 0):
        raise argparse.ArgumentTypeError(f"{pair!r}: a cost must be finite and >= 0")
    return name, cost


def _costs(pairs: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in pairs:
        if name in out and out[name] != value:
            raise ValueError(f"--power gives {name!r} two values ({out[name]:g} and {value:g})")
        out[name] = value
    return out


def _candidates(args: argparse.Namespace) -> list[Any]:
    import appmult_fx as amx

    if args.catalogue is None:
        if args.widths is not None:
            raise ValueError("--widths filters a --catalogue; with --candidates, list fewer")
        return list(args.candidates)
    found = amx.load_catalogue(args.catalogue)
    if args.widths is None:
        return found
    keep = [m for m in found if _matches_widths(m, args.widths)]
    if not keep:
        have = sorted({f"{m.widths}{'s' if m.signed else 'u'}" for m in found})
        a, b, signed = args.widths
        asked = f"{a}x{b}" + ("" if signed is None else "s" if signed else "u")
        raise ValueError(f"--widths {asked}: no multiplier of the catalogue has it ({have})")
    return keep


WidthsFilter = tuple[int, int, bool | None]  # bits_a, bits_b, signed (None: either)


def _widths_arg(text: str) -> WidthsFilter:
    """``--widths``: ``8``, ``8x4``, ``8u`` or ``8x4s`` (operand widths as ``--bits`` takes
    them, then an optional signedness)."""
    from ..luts.indexing import check_widths
    from .lut import parse_widths

    body = text.strip().lower()
    sign = body[-1] if body[-1:] in ("u", "s") else None
    try:
        bits_a, bits_b = check_widths(parse_widths(body[:-1] if sign else body))
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"expected AxB with an optional u/s (8u, 8x4s), got {text!r}: {exc}"
        ) from exc
    return bits_a, bits_b, None if sign is None else sign == "s"


def _matches_widths(mult: Any, key: WidthsFilter) -> bool:
    """Whether ``mult`` has the widths (and signedness, if given) of ``key``."""
    bits_a, bits_b, signed = key
    same_sign = signed is None or signed == bool(mult.signed)
    return (mult.bits_a, mult.bits_b) == (bits_a, bits_b) and same_sign


def _cmd_search(args: argparse.Namespace) -> int:
    import appmult_fx as amx

    from ..app.workflow import datasets, load_float_model
    from ..assignment.outputs import write_outputs

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, ck = load_float_model(args.checkpoint)
    _, train_plain, test = datasets(ck["data"])
    cands = _candidates(args)
    if args.retrain_epochs > 0 and args.gradients == "lut":
        cands = _with_gradients(cands)
    storage = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    result = amx.search(
        model.eval(),
        cands,
        train_plain,
        test=test,
        trials=args.trials,
        workers=args.workers,
        sampler=args.sampler,
        population_size=args.population,
        seed=args.seed,
        storage=storage,
        study_name=args.study_name,
        metric=args.metric,
        cost=args.cost,
        costs=_costs(args.power),
        reference_cost_value=args.reference_power,
        val_fraction=args.val_fraction,
        calib_batches=args.calib_batches,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    command = "appmult-fx " + shlex.join(sys.argv[1:])
    paths = write_outputs(result, out, command, time.perf_counter() - start)
    if args.retrain_epochs > 0:
        _retrain(args, result, out, train_plain)
        write_outputs(result, out, command, time.perf_counter() - start)
        _append_retrain(out)
    print(paths["results.md"].read_text())
    return 0


def _with_gradients(cands: list[Any]) -> list[Any]:
    """Candidates with gradient LUTs (attached with the default window where missing)."""
    import appmult_fx as amx

    from ..passes.spec import resolve_multiplier

    out = []
    for ref in cands:
        m = resolve_multiplier(ref)
        out.append(m if m.has_gradients else amx.with_gradients(m))
    return out


def _retrain(args: argparse.Namespace, result: Any, out: Path, train_plain: Any) -> None:
    from torch.utils.data import Subset

    from ..app.train import TrainConfig
    from ..assignment.api import split_indices
    from ..assignment.outputs import LOSSES, multiplier_refs, write_specs, write_text
    from ..assignment.result import save_json
    from ..assignment.retrain import retrain_specs, retrain_summary

    front = result.pareto
    spec_files = write_specs(result, out)
    ref = result.best_uniform
    uniform_file = out / "specs" / "best_uniform.json"
    name = ref.label.removeprefix("uniform:")
    save_json(uniform_file, {"global": multiplier_refs(result, out)[name]})
    chosen = {"best_uniform": (uniform_file, ref.energy)}
    if args.retrain_points == "all":
        floor = ref.accuracy - args.retrain_max_loss / 100
        picks = [p for p in front if p.accuracy >= floor - 1e-12]
    else:
        picks = [result.cheapest_within(x) for x in LOSSES]
    for p in picks:
        if p is not None:
            i = front.index(p)
            chosen[f"pareto_{i:02d}"] = (spec_files[i], p.energy)
    cfg = TrainConfig(
        epochs=args.retrain_epochs,
        max_steps_per_epoch=args.retrain_steps,
        lr=args.retrain_lr,
        seed=args.seed,
        quiet=args.quiet,
    )
    reports = retrain_specs(
        args.checkpoint,
        {k: v[0] for k, v in chosen.items()},
        cfg,
        out,
        gradient=args.gradients,
        calib_batches=args.calib_batches,
        # the search's validation split: the loss thresholds after retraining are chosen on it
        validation=Subset(
            train_plain, split_indices(len(train_plain), args.val_fraction, args.seed)[1]
        ),
    )
    text, summary = retrain_summary(reports, {k: v[1] for k, v in chosen.items()}, "best_uniform")
    write_text(out / "retrain.md", text)
    save_json(out / "retrain.json", {"summary": summary, "reports": reports})


def _append_retrain(out: Path) -> None:
    from ..assignment.outputs import write_text

    md = out / "results.md"
    write_text(md, md.read_text() + (out / "retrain.md").read_text())
