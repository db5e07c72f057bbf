"""``appmult-fx lut build|grad|info|list|plot|import``: build LUTs, add gradients, show error
figures, import whole libraries into catalogues (:mod:`.lut_catalogue`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..luts.formats import FORMATS, load_multiplier, save_multiplier
from ..luts.gradients import EDGES, METHODS, default_window_for, with_gradients
from ..luts.metrics import METRIC_NAMES, metrics
from ..luts.multiplier import Multiplier
from ..luts.registry import RECTANGULAR_WIDTHS, builtin_names, multiplier
from ..luts.user_defined import from_c_source, from_netlist
from .lut_catalogue import (
    SORT_KEYS,
    format_hardware,
    list_catalogue,
    plot_catalogue,
    register_import,
)

_NETLIST_SUFFIXES = {".blif", ".v", ".sv"}
_C_SUFFIXES = {".c", ".cc", ".cpp", ".cxx"}
_GRADIENT_KEYS = ("gradient_method", "edge", "window", "window_b")  # shown by `lut info`


def _int_or_pair(text: str, expected: str) -> int | tuple[int, int]:
    """``"8"`` -> 8, ``"8x4"`` -> (8, 4); the values themselves are checked by their users."""
    a, sep, b = text.lower().partition("x")
    try:
        return (int(a), int(b)) if sep else int(a)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from exc


def parse_widths(text: str) -> int | tuple[int, int]:
    """``--bits`` values: ``8`` (square) or ``8x4`` (operand A x operand B)."""
    return _int_or_pair(text, "N or AxB (e.g. 8 or 8x4)")


def resolve(
    source: str,
    bits: int | tuple[int, int] | None = None,
    signed: bool = False,
    symbol: str | None = None,
) -> Multiplier:
    """A multiplier from a netlist, C/C++ source, LUT file or built-in name.

    ``bits`` and ``symbol`` tell how to build a C/C++ source and ``signed`` how to read a
    netlist or C/C++ source; a built-in name and a LUT file already fix their format, so for
    them (and ``bits`` for a netlist, whose ports fix the widths) an option that contradicts the
    source, or one that does not apply to it, is a ``ValueError`` instead of being ignored."""
    path = Path(source)
    if path.is_file():
        if path.suffix in _NETLIST_SUFFIXES:
            _check_options(source, "this netlist", None, None, symbol)
            mult = from_netlist(path, signed=signed)
            _check_options(source, "this netlist", mult, bits, None)
            return mult
        if path.suffix in _C_SUFFIXES:
            if bits is None:
                raise ValueError(f"{source}: a C/C++ multiplier needs --bits")
            return from_c_source(path, bits, signed, symbol=symbol)
        mult, what = load_multiplier(path), "this LUT file"
    elif path.suffix or "/" in source:
        raise FileNotFoundError(f"{source}: no such file")
    else:
        try:
            mult, what = multiplier(source), "this built-in multiplier"
        except KeyError as exc:  # say it as a sentence, not as a quoted key
            raise ValueError(f"{source}: not a file, and {exc.args[0]}") from exc
    _check_options(source, what, mult, bits, symbol, signed)
    return mult


def _check_options(
    source: str,
    what: str,
    mult: Any,
    bits: int | tuple[int, int] | None,
    symbol: str | None,
    signed: bool = False,
) -> None:
    """Refuse ``--symbol`` for a source that is not C/C++, and ``--bits`` / ``--signed`` that
    contradict what ``mult`` (built from ``source``, ``what`` it is) already is."""
    if symbol is not None:
        raise ValueError(
            f"{source}: --symbol names the function of a C/C++ source; it does not apply to "
            f"{what}: drop it"
        )
    if mult is None:
        return
    if mult.kind != "int":
        given = [opt for opt, on in (("--bits", bits is not None), ("--signed", signed)) if on]
        if given:
            raise ValueError(
                f"{source}: {' and '.join(given)} {'do' if len(given) > 1 else 'does'} not "
                f"apply to {what}, a floating-point multiplier ({mult.name}); drop "
                f"{'them' if len(given) > 1 else 'it'}"
            )
        return
    have = f"{mult.widths}-bit {'signed' if mult.signed else 'unsigned'}"
    if bits is not None:
        want = (bits, bits) if isinstance(bits, int) else tuple(bits)
        if want != (mult.bits_a, mult.bits_b):
            label = bits if isinstance(bits, int) else f"{bits[0]}x{bits[1]}"
            raise ValueError(
                f"{source}: --bits {label} contradicts {what}, which is {have} ({mult.name}); "
                "the source fixes the format: drop --bits"
            )
    if signed and not mult.signed:
        raise ValueError(
            f"{source}: --signed contradicts {what}, which is {have} ({mult.name}); the "
            "source fixes the format: drop --signed (signed built-ins are named mul<N>s_..., "
            "e.g. mul8s_trunc4)"
        )


def _window_arg(text: str) -> int | tuple[int, int]:
    """``--window``: ``16`` (both axes) or ``16x1`` (A axis x B axis); the gradient library
    refuses negative windows."""
    return _int_or_pair(text, "W or WAxWB (e.g. 16 or 16x1)")


def _add_gradients(mult: Multiplier, args: argparse.Namespace) -> Multiplier:
    window = args.window if args.window is not None else default_window_for(mult.bits)
    return with_gradients(mult, window, edge=args.edge, method=args.method)


def _output_path(output: str | Path) -> Path:
    """``output`` with its folder created (as ``retrain --out`` does), so that a missing folder
    is never reported as the temporary file the writer renames from."""
    path = Path(output)
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"{output}: {path.parent} is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def format_metrics(m: dict[str, float]) -> str:
    """One line of metrics in a fixed order."""
    return "  ".join(f"{k}={m[k]:.6g}" for k in METRIC_NAMES)


def _build(args: argparse.Namespace) -> int:
    mult = resolve(args.source, args.bits, args.signed, args.symbol)
    if args.name:
        mult = mult.renamed(args.name)
    if not args.no_grad and (args.window is not None or not mult.has_gradients):
        mult = _add_gradients(mult, args)
    out = save_multiplier(mult, _output_path(args.output), format=args.format)
    print(f"wrote {out}: {mult!r}")
    print(format_metrics(metrics(mult)))
    return 0


def _grad(args: argparse.Namespace) -> int:
    mult = _add_gradients(resolve(args.source), args)
    window, window_b = mult.provenance.get("window"), mult.provenance.get("window_b")
    windows = f"{window}" if window_b is None else f"{window}x{window_b}"  # per axis: A x B
    stem = Path(args.source).stem if Path(args.source).suffix else args.source
    suffix = f"_{args.method}" + (f"_w{windows}_{args.edge}" if args.method == "difference" else "")
    output = _output_path(args.output or Path(f"{stem}{suffix}.lut"))
    out = save_multiplier(mult, output, format=args.format)
    print(f"wrote {out}: {mult!r} (method={args.method}, edge={args.edge}, window={windows})")
    return 0


def _info(args: argparse.Namespace) -> int:
    mult = resolve(args.source, signed=args.signed)
    sign = "signed" if mult.signed else "unsigned"
    print(f"name      {mult.name}")
    widths = mult.widths if mult.kind == "int" else mult.bits
    print(f"format    {widths}-bit {sign}, {mult.kind}")
    print(f"sha256    {mult.sha256}")
    grads = "none"
    if mult.has_gradients:
        p = mult.provenance
        grads = ", ".join(f"{k}={p[k]}" for k in _GRADIENT_KEYS if k in p)
        grads = grads or "present"
    print(f"gradients {grads}")
    if mult.kind == "int":
        print(f"hardware  {format_hardware(mult.hardware)}")
    for key, value in mult.provenance.items():
        if key not in (*_GRADIENT_KEYS, "seed_info", "header_rounding"):
            print(f"  {key}: {value}")
    if mult.kind != "int":
        return 0
    print()
    m = metrics(mult)
    for key, label in (
        ("er", "error rate"),
        ("med", "mean error distance"),
        ("nmed", f"normalised MED (MED / 2^{mult.bits_a + mult.bits_b})"),
        ("mred", "mean relative error"),
        ("mse", "mean squared error"),
        ("wce", "worst-case error"),
        ("wcre", "worst-case relative error"),
        ("bias", "mean error (a*b - LUT)"),
    ):
        print(f"{key:<5} {m[key]:>16.8g}   {label}")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.catalogue:
        if args.bits is not None:
            raise ValueError("lut list: --bits filters the built-ins; drop it with --catalogue")
        return list_catalogue(args)
    names = builtin_names(rectangular=False) if args.bits is None else builtin_names(args.bits)
    ints = [n for n in names if n.startswith("mul")]
    header = f"{'name':<18}" + "".join(f"{k:>12}" for k in METRIC_NAMES)
    print(header)
    print("-" * len(header))
    for name in ints:
        m = metrics(multiplier(name))
        print(f"{name:<18}" + "".join(f"{m[k]:>12.5g}" for k in METRIC_NAMES))
    if args.bits is not None:
        return 0
    others = [n for n in names if not n.startswith("mul")]
    if others:
        print(f"\nother built-ins (floating point): {', '.join(others)}")
    rectangular = len(builtin_names()) - len(names)
    pairs = ", ".join(f"{a}x{b}" for a, b in RECTANGULAR_WIDTHS)
    print(
        f"\nrectangular built-ins ({rectangular} names, A x B bits): {pairs}; "
        "list one pair with `appmult-fx lut list --bits 8x4`"
    )
    print("any valid parameter also works, e.g. mul8u_trunc5, mul6s_bam2_7, mul8x4u_drum5")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from ..luts.plot import plot_multiplier

    if args.catalogue:
        return plot_catalogue(args)
    if not args.source:
        raise ValueError("lut plot needs a SOURCE or --catalogue")
    mult = resolve(args.source, signed=args.signed)
    out = plot_multiplier(mult, args.output)
    panels = "error, grad_a, grad_b" if mult.has_gradients else "error (no gradient LUTs)"
    print(f"wrote {out}: {panels}")
    return 0


def _gradient_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--window",
        type=_window_arg,
        default=None,
        help="half window of the difference method: W for both axes or WAxWB per axis "
        "(default: max(1, 2**(bits-4)) of each axis's own width, e.g. 16x1 for 8x4)",
    )
    p.add_argument(
        "--edge",
        choices=EDGES,
        default="column",
        help="edge rule: column (the paper's formula, default) or row (the seed files)",
    )
    p.add_argument("--method", choices=METHODS, default="difference")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="output format (default: own format; seed text for a .txt name)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``lut`` command group."""
    lut = sub.add_parser(
        "lut",
        help="build, inspect and plot multiplier LUTs",
        description="Build LUTs from netlists, C sources and built-ins; add "
        "gradient LUTs; print error metrics; plot error and gradient maps.",
    )
    cmds = lut.add_subparsers(dest="lut_command", metavar="ACTION", required=True)

    b = cmds.add_parser("build", help="simulate/compile/convert a multiplier into a LUT file")
    b.add_argument("source", help="BLIF/Verilog netlist, C/C++ source, LUT file or built-in name")
    b.add_argument("-o", "--output", required=True, help="output file (.lut; .txt = seed text)")
    b.add_argument(
        "--bits", type=parse_widths, help="operand bits of C/C++ sources: 8, or 8x4 (A x B)"
    )
    b.add_argument("--signed", action="store_true", help="two's-complement operands")
    b.add_argument(
        "--symbol", help="C/C++ function name (default: the file stem if defined, approx_mul)"
    )
    b.add_argument("--name", help="multiplier name (default: from the source)")
    b.add_argument("--no-grad", action="store_true", help="do not attach gradient LUTs")
    _gradient_options(b)
    b.set_defaults(func=_build)

    g = cmds.add_parser("grad", help="attach gradient LUTs to a LUT file or built-in")
    g.add_argument("source", help="LUT file or built-in name")
    g.add_argument("-o", "--output", help="output file (default <stem>_<method>_w<w>_<edge>.lut)")
    _gradient_options(g)
    g.set_defaults(func=_grad)

    i = cmds.add_parser("info", help="print a LUT's identity and error metrics")
    i.add_argument("source", help="LUT file, netlist or built-in name")
    i.add_argument("--signed", action="store_true", help="netlists: two's-complement operands")
    i.set_defaults(func=_info)

    li = cmds.add_parser("list", help="list the built-in multipliers with their error metrics")
    li.add_argument("--catalogue", help="list this catalogue (folder or catalogue.json) instead")
    li.add_argument(
        "--bits",
        type=parse_widths,
        help="list the built-ins of these widths only: 8 (square) or 8x4 (A x B bits); by "
        "default the square ones are listed and the rectangular ones summarised",
    )
    li.add_argument("--sort", choices=sorted(SORT_KEYS), default="name", help="catalogue order")
    li.set_defaults(func=_list)

    p = cmds.add_parser("plot", help="heatmaps of the error a*b - LUT and the gradient LUTs")
    p.add_argument("source", nargs="?", help="LUT file, netlist or built-in name")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--signed", action="store_true", help="netlists: two's-complement operands")
    p.add_argument("--catalogue", help="plot a catalogue's power against error instead")
    p.add_argument("--error", choices=METRIC_NAMES, default="mred", help="catalogue plot y axis")
    p.add_argument(
        "--cost", choices=("power_mw", "area_um2", "delay_ns"), default="power_mw",
        help="catalogue plot x axis",
    )  # fmt: skip
    p.set_defaults(func=_plot)
    register_import(cmds)
