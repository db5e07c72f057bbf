"""The seed tools' text LUT formats (``*_lutfp.txt`` and ``*_lutfp+bp_avg_<w>_<w>.txt``).

Layout: optional preamble lines (``Warning:``, ``INFO:`` and other tool messages), then one
or three blocks, each a header line followed by ``2**(bits_a + bits_b)`` lines ``A B value``:

* ``LUT for approximate multiplier:`` - the forward table;
* ``LUT for the gradient of the approximate multiplier w.r.t. the first operand:`` and
  ``... w.r.t. the second operand:`` - gradient LUTs stored as ``round(16 * gradient)``.

``A`` and ``B`` are operand *values*: ``[0, 2**bits - 1]`` for unsigned multipliers (all seed
files), ``[-2**(bits-1), 2**(bits-1) - 1]`` for signed ones; rows map to table indices through
:mod:`.indexing`. Each pair must occur exactly once (any order; writers use A outer, B inner).

Rectangular multipliers (``bits_a != bits_b``, an appmult-fx extension) carry the preamble line
``INFO: operand widths: bits_a=8, bits_b=4``; without it the widths of a table whose size is
not ``4**bits`` are inferred from the number of distinct A and B values.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .format_errors import LutFormatError, clip
from .gradients import window_provenance
from .indexing import (
    MAX_BITS,
    MIN_BITS,
    operand_range,
    operand_values,
    output_range,
    value_to_index,
)
from .metrics import metrics
from .multiplier import Multiplier

FORWARD_HEADER = "LUT for approximate multiplier:"
GRAD_A_HEADER = "LUT for the gradient of the approximate multiplier w.r.t. the first operand:"
GRAD_B_HEADER = "LUT for the gradient of the approximate multiplier w.r.t. the second operand:"
_HEADERS = {FORWARD_HEADER: "forward", GRAD_A_HEADER: "grad_a", GRAD_B_HEADER: "grad_b"}
GRAD_SCALE = 16  # gradient LUT entries are round(16 * gradient)

_ROW = re.compile(
    r"[ \t]*(-?[0-9]{1,12})[ \t]+(-?[0-9]{1,12})[ \t]+(-?[0-9]{1,12})[ \t]*", re.ASCII
)
_LOOKS_LIKE_DATA = re.compile(r"[ \t]*-?[0-9]", re.ASCII)
_SUFFIX = re.compile(r"_lutfp(\+bp_avg_(\d+)_(\d+))?$")
_INFO_WINDOW_A = re.compile(r"half_ws_a=(\d+)", re.ASCII)
_INFO_WINDOW_B = re.compile(r"half_ws_b=(\d+)", re.ASCII)
_INFO_BITS = re.compile(r"QUANTIZATION_BIT=(\d+)", re.ASCII)
_INFO_WIDTHS = re.compile(r"INFO: operand widths: bits_a=(\d+), bits_b=(\d+)$", re.ASCII)


class _Block:
    """One header line and its data rows (line numbers are 1-based)."""

    def __init__(self, kind: str, header_line: int) -> None:
        self.kind = kind
        self.header_line = header_line
        self.line_numbers: list[int] = []
        self.rows: list[str] = []


def seed_name(path: Path) -> str:
    """The multiplier name of a seed file: its stem without the ``_lutfp...`` suffix."""
    return _SUFFIX.sub("", path.stem) or path.stem


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LutFormatError(
            path, f"non-ASCII byte 0x{data[exc.start]:02x} in a text LUT", line
        ) from exc


def _split(path: Path, text: str) -> tuple[list[tuple[int, str]], list[_Block]]:
    """Preamble lines and the data blocks of a seed text file."""
    preamble: list[tuple[int, str]] = []
    blocks: list[_Block] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if stripped in _HEADERS:
            blocks.append(_Block(_HEADERS[stripped], number))
        elif not stripped:
            continue
        elif not blocks:
            if _LOOKS_LIKE_DATA.match(line):
                raise LutFormatError(
                    path, f"data line {clip(stripped)} before the line {FORWARD_HEADER!r}", number
                )
            preamble.append((number, stripped))
        elif _ROW.fullmatch(line):
            blocks[-1].line_numbers.append(number)
            blocks[-1].rows.append(line)
        else:
            raise LutFormatError(
                path,
                "expected a row 'A B value' (three integers) or a block header, "
                f"got {clip(stripped)}",
                number,
            )
    if not blocks:
        raise LutFormatError(path, f"no line {FORWARD_HEADER!r}: not a seed LUT file")
    kinds = [b.kind for b in blocks]
    if kinds not in (["forward"], ["forward", "grad_a", "grad_b"]):
        expected = "the forward block, optionally followed by grad_a then grad_b blocks"
        bad = next(
            (
                b
                for b, want in zip(blocks, ["forward", "grad_a", "grad_b"], strict=False)
                if b.kind != want
            ),
            blocks[-1],
        )
        raise LutFormatError(
            path, f"unexpected block order {kinds}; expected {expected}", bad.header_line
        )
    return preamble, blocks


def _widths(
    path: Path, block: _Block, rows: np.ndarray, declared: tuple[int, int] | None
) -> tuple[int, int]:
    """``(bits_a, bits_b)`` of the forward block: declared, square by count, or inferred."""
    count = len(block.rows)
    if declared is not None:
        if count != 1 << sum(declared):
            raise LutFormatError(
                path,
                f"{block.kind} block has {count} entries; bits_a={declared[0]}, "
                f"bits_b={declared[1]} need {1 << sum(declared)} (missing or extra rows?)",
                block.header_line,
            )
        return declared
    na, nb = (len(np.unique(rows[:, k])) for k in (0, 1))
    widths = {1 << b: b for b in range(MIN_BITS, MAX_BITS + 1)}
    if na in widths and nb in widths and na * nb == count:
        return widths[na], widths[nb]
    sizes = {4**b: b for b in range(MIN_BITS, MAX_BITS + 1)}
    if count in sizes:  # square by count; the table check names the bad row
        return sizes[count], sizes[count]
    expected = ", ".join(f"{4**b} ({b} bits)" for b in range(MIN_BITS, MAX_BITS + 1))
    raise LutFormatError(
        path,
        f"{block.kind} block has {count} entries ({na} distinct A, {nb} distinct B); a complete "
        f"table has 2**bits_a * 2**bits_b, square: {expected} (missing or extra rows?)",
        block.header_line,
    )


def _declared_widths(path: Path, preamble: list[tuple[int, str]]) -> tuple[int, int] | None:
    for number, line in preamble:
        if m := _INFO_WIDTHS.match(line):
            a, b = int(m.group(1)), int(m.group(2))
            if not (MIN_BITS <= a <= MAX_BITS and MIN_BITS <= b <= MAX_BITS):
                raise LutFormatError(
                    path,
                    f"operand widths must be in [{MIN_BITS}, {MAX_BITS}], got {a}, {b}",
                    number,
                )
            return a, b
    return None


def _parse_rows(block: _Block) -> np.ndarray:
    """The block's rows as an int64 array of shape (count, 3); rows already matched _ROW."""
    return np.array(" ".join(block.rows).split(), dtype=np.int64).reshape(-1, 3)


def _check_range(
    path: Path, block: _Block, column: np.ndarray, lo: int, hi: int, what: str
) -> None:
    bad = np.flatnonzero((column < lo) | (column > hi))
    if bad.size:
        i = int(bad[0])
        raise LutFormatError(
            path, f"{what} {int(column[i])} out of range [{lo}, {hi}]", block.line_numbers[i]
        )


def _to_table(
    path: Path,
    block: _Block,
    rows: np.ndarray,
    widths: tuple[int, int],
    signed: bool,
    value_range: tuple[int, int],
) -> np.ndarray:
    """Check a block's rows and scatter them into a table indexed per :mod:`.indexing`."""
    bits_a, bits_b = widths
    _check_range(path, block, rows[:, 0], *operand_range(bits_a, signed), "operand A")
    _check_range(path, block, rows[:, 1], *operand_range(bits_b, signed), "operand B")
    _check_range(path, block, rows[:, 2], *value_range, f"{block.kind} value")
    n = 1 << bits_b
    ia = value_to_index(torch.from_numpy(rows[:, 0]), bits_a).numpy()
    ib = value_to_index(torch.from_numpy(rows[:, 1]), bits_b).numpy()
    flat = ia * n + ib
    _, first = np.unique(flat, return_index=True)
    if first.size != flat.size:
        seen = np.zeros(flat.size, dtype=bool)
        seen[first] = True
        dup = int(np.flatnonzero(~seen)[0])
        earlier = int(np.flatnonzero(flat[:dup] == flat[dup])[0])
        raise LutFormatError(
            path,
            f"duplicate pair A={int(rows[dup, 0])} B={int(rows[dup, 1])} "
            f"(first given at line {block.line_numbers[earlier]})",
            block.line_numbers[dup],
        )
    table = np.empty(n << bits_a, dtype=np.int64)
    table[flat] = rows[:, 2]
    return table.reshape(1 << bits_a, n)


def _info(preamble: list[tuple[int, str]]) -> dict[str, str]:
    info: dict[str, str] = {}
    for _, line in preamble:
        if line.startswith("INFO:") and ": " in line[5:]:
            key, _, value = line[5:].strip().rpartition(": ")
            info[key] = value
    return info


def _window(
    path: Path, preamble: list[tuple[int, str]], widths: tuple[int, int]
) -> tuple[int, int] | None:
    """Half windows ``(w_a, w_b)`` from the INFO line ``half_ws_a=[, half_ws_b=]`` (a lone
    ``half_ws_a`` serves both axes of a square table), else from the file name ``..._W_A_W_B``;
    checks bits, and that the two sources agree where both are given."""
    window: tuple[int, int] | None = None
    for number, line in preamble:
        if not line.startswith("INFO:"):
            continue
        if m := _INFO_WINDOW_A.search(line):
            b = _INFO_WINDOW_B.search(line)
            if b is None and widths[0] != widths[1]:
                raise LutFormatError(
                    path,
                    f"INFO gives half_ws_a but no half_ws_b for a {widths[0]}x{widths[1]} table",
                    number,
                )
            window = int(m.group(1)), int(b.group(1) if b else m.group(1))
        if (m := _INFO_BITS.search(line)) and (int(m.group(1)),) * 2 != widths:
            raise LutFormatError(
                path,
                f"header says QUANTIZATION_BIT={m.group(1)} but the table has "
                f"{widths[0]}x{widths[1]} bits",
                number,
            )
    if (m := _SUFFIX.search(path.stem)) and m.group(2):
        named = int(m.group(2)), int(m.group(3))
        if window is not None and window != named:
            raise LutFormatError(
                path, f"INFO gives half windows {window} but the file name {named}"
            )
        window = named
    return window


def read_seed_text(path: str | Path, data: bytes | None = None) -> Multiplier:
    """Read a seed text LUT (forward only, or forward + gradient blocks)."""
    path = Path(path)
    text = _decode(path, path.read_bytes() if data is None else data)
    preamble, blocks = _split(path, text)
    forward = blocks[0]
    rows = {b.kind: _parse_rows(b) for b in blocks}
    widths = _widths(path, forward, rows["forward"], _declared_widths(path, preamble))
    bits = widths[0] if widths[0] == widths[1] else widths
    signed = bool(rows["forward"][:, :2].min() < 0)
    out_lo, out_hi = output_range(*widths, signed)
    tables = {}
    for block in blocks:
        if len(block.rows) != len(forward.rows):
            raise LutFormatError(
                path,
                f"{block.kind} block has {len(block.rows)} entries, forward block "
                f"{len(forward.rows)}",
                block.header_line,
            )
        value_range = (out_lo, out_hi) if block.kind == "forward" else (-(2**15), 2**15 - 1)
        tables[block.kind] = _to_table(path, block, rows[block.kind], widths, signed, value_range)
    provenance: dict = {"source": "file", "path": str(path), "format": "seed-text"}
    info = _info(preamble)
    if info:
        provenance["seed_info"] = info
    grads: dict[str, torch.Tensor | None] = {"grad_a": None, "grad_b": None}
    if len(blocks) == 3:
        window = _window(path, preamble, widths)
        grads = {k: torch.from_numpy(tables[k]).float() / GRAD_SCALE for k in grads}
        provenance.update(
            {
                "gradient_method": "difference",
                # the seed's files use the row edge rule, which only square tables have
                "edge": "row" if widths[0] == widths[1] else "column",
                **(window_provenance(window, widths) if window is not None else {"window": None}),
                "grad_scale": GRAD_SCALE,
            }
        )
    table = torch.from_numpy(tables["forward"])
    return Multiplier(
        seed_name(path), bits, signed, table, grads["grad_a"], grads["grad_b"], provenance
    )


def _block_lines(header: str, table: np.ndarray, va: np.ndarray, vb: np.ndarray) -> list[str]:
    oa, ob = np.argsort(va, kind="stable"), np.argsort(vb, kind="stable")  # ascending, A outer
    t = table[np.ix_(oa, ob)].reshape(-1)
    a, b = np.repeat(va[oa], len(vb)), np.tile(vb[ob], len(va))
    return [
        header,
        *(f"{x} {y} {v}" for x, y, v in zip(a.tolist(), b.tolist(), t.tolist(), strict=True)),
    ]


def _quantize_gradient(mult: Multiplier, name: str) -> np.ndarray:
    q = np.rint(getattr(mult, name).double().numpy() * GRAD_SCALE).astype(np.int64)
    if q.min() < -(2**15) or q.max() > 2**15 - 1:
        raise ValueError(
            f"{mult.name}: {name} does not fit the seed format (int16 of 16*gradient): "
            f"range [{q.min()}, {q.max()}]"
        )
    return q


def format_seed_text(mult: Multiplier, gradients: bool | None = None) -> str:
    """The seed text of ``mult``: forward block, plus gradient blocks when it has (or asks) them.

    Gradients are stored as ``round(16 * gradient)``, so they round-trip exactly only when they
    are multiples of 1/16 (the seed's difference gradients are).
    """
    if gradients is None:
        gradients = mult.has_gradients
    if gradients and not mult.has_gradients:
        raise ValueError(f"{mult.name} has no gradient LUTs to write")
    va = operand_values(mult.bits_a, mult.signed).numpy()
    vb = operand_values(mult.bits_b, mult.signed).numpy()
    table = mult.table.numpy().astype(np.int64)  # fits the output range: Multiplier checks it
    m = metrics(mult)
    lines = [
        f"INFO: Error rate: {m['er']:.6g}",
        f"INFO: Mean error distance: {m['med']:.6g}",
        f"INFO: Normalized mean error distance: {m['nmed']:.6g}",
        f"INFO: Mean square error: {m['mse']:.6g}",
    ]
    if gradients:
        w_a = mult.provenance.get("window")
        w_b = mult.provenance.get("window_b", w_a)
        windows = f"half_ws_a={w_a}, half_ws_b={w_b}, " if w_a is not None else ""
        quant = f"QUANTIZATION_BIT={mult.bits}" if mult.is_square else ""
        lines = [f"INFO: file_name={mult.name}_lutfp.txt, {windows}{quant}".rstrip(", "), *lines]
    if not mult.is_square:
        lines = [f"INFO: operand widths: bits_a={mult.bits_a}, bits_b={mult.bits_b}", *lines]
    lines += _block_lines(FORWARD_HEADER, table, va, vb)
    if gradients:
        lines += _block_lines(GRAD_A_HEADER, _quantize_gradient(mult, "grad_a"), va, vb)
        lines += _block_lines(GRAD_B_HEADER, _quantize_gradient(mult, "grad_b"), va, vb)
    return "\n".join(lines) + "\n"


def write_seed_text(mult: Multiplier, path: str | Path, gradients: bool | None = None) -> Path:
    """Write ``mult`` as a seed text LUT (see :func:`format_seed_text`)."""
    path = Path(path)
    path.write_text(format_seed_text(mult, gradients), encoding="ascii")
    return path
