"""EvoApproxLib's file naming: what a circuit's name says about its operands.

Files are named after their circuit: ``mul8u_2AC.c``, ``mul8x4u_2AN.v``,
``mul8s_1KVP_pdk45.v``, ``mul8u_pwr_0_000_mae_08_0380_gen.v`` (``mul<A bits>[x<B bits>]<u|s>_``;
``_pdk45`` / ``_gen`` / ``_sop`` mark other representations of the same circuit). Adders are
``add<bits><u|s>_...``. A reader that knows the name checks what it was told against it, so a
signed netlist read as unsigned or a 8x4 model tabulated as 8x8 is refused, not imported.
"""

from __future__ import annotations

import re

from .indexing import check_widths

_VARIANT = re.compile(r"(_pdk45|_gen|_sop|_lutfp(\+bp_avg_\d+_\d+)?)$")
_MULTIPLIER = re.compile(r"^mul(\d+)(?:x(\d+))?([us])_")
_ADDER = re.compile(r"^add\d+[us]?_", re.IGNORECASE)


def circuit_name(stem: str) -> str:
    """The circuit a file stem belongs to: the stem without ``_pdk45`` / ``_gen`` / ``_sop`` /
    ``_lutfp...`` (``mul8s_1KVP_pdk45`` -> ``mul8s_1KVP``)."""
    return _VARIANT.sub("", stem) or stem


def evoapprox_widths(name: str) -> tuple[tuple[int, int], bool] | None:
    """``((bits_a, bits_b), signed)`` from an EvoApproxLib circuit name (``mul8x4u_2AN`` ->
    ``((8, 4), False)``), or None for a name that does not follow the convention. Widths are
    read as written (``mul12u_`` gives 12); whether they are supported is the caller's check."""
    m = _MULTIPLIER.match(circuit_name(name))
    if m is None:
        return None
    return (int(m[1]), int(m[2] or m[1])), m[3] == "s"


def refuse_adder(name: str) -> None:
    """ValueError for an EvoApproxLib adder (``add8u_...``): its table is no multiplier's."""
    if _ADDER.match(name):
        raise ValueError(
            f"{name!r} is named as an EvoApproxLib adder (add<bits>..._), not a multiplier; "
            "appmult-fx imports multipliers only"
        )


def named_operands(
    name: str, bits: int | tuple[int, int] | None, signed: bool | None
) -> tuple[tuple[int, int] | None, bool | None]:
    """The widths and signedness to read the circuit ``name`` with: those given, else those
    its EvoApproxLib name says; ValueError when a given one contradicts the name (or the name
    is an adder's). Either stays None where neither says."""
    refuse_adder(name)
    named = evoapprox_widths(name)
    if named is None:
        return None if bits is None else check_widths(bits), signed
    (widths, named_signed), kind = named, "signed" if named[1] else "unsigned"
    try:
        check_widths(widths)
    except ValueError as exc:
        raise ValueError(
            f"{name!r} is named as a {widths[0]}x{widths[1]} {kind} EvoApproxLib multiplier: "
            f"{exc} (a table of 2**{widths[0] + widths[1]} entries)"
        ) from exc
    given = None if bits is None else check_widths(bits)
    if given is not None and given != widths:
        raise ValueError(
            f"{name!r} is named as a {widths[0]}x{widths[1]} {kind} EvoApproxLib multiplier, "
            f"but bits={bits!r} was given; pass bits={widths!r} (or rename a file that does "
            "not follow EvoApproxLib's naming)"
        )
    if signed is not None and signed != named_signed:
        raise ValueError(
            f"{name!r} is named as {'a' if named_signed else 'an'} {kind} EvoApproxLib "
            f"multiplier, but signed={signed} was given; pass signed={named_signed} (or rename "
            "a file that does not follow EvoApproxLib's naming)"
        )
    return widths, named_signed


def inferred_note(name: str, bits: int | tuple[int, int] | None, signed: bool | None) -> str:
    """What :func:`named_operands` took from the name ``name`` that the caller did not give,
    as a note for an error message (empty when nothing was taken)."""
    named = evoapprox_widths(name)
    if named is None or (bits is not None and signed is not None):
        return ""
    (a, b), kind = named[0], "signed" if named[1] else "unsigned"
    taken = " and ".join(
        t for t, missing in ((f"{a}x{b}", bits is None), (kind, signed is None)) if missing
    )
    return (
        f" (read as {taken} because the file is named like an EvoApproxLib {a}x{b} {kind} "
        "multiplier; rename a file that is not one)"
    )
