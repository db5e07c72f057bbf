"""A BLIF reader (combinational subset) producing a :class:`~.netlist.Netlist`.

Supported: ``.model .inputs .outputs .names .subckt .end``, single-output covers with on-set
(``... 1``) or off-set (``... 0``) rows and ``-`` don't-cares, constant covers (``.names x``
with no row, or a row `` 1`` / `` 0``), ``formal=actual`` pin maps across several models in
one file, ``#`` comments and ``\\`` line continuations, Yosys' ``$false`` / ``$true`` constant
nets and ``.conn`` buffers; attribute lines (``.attr .param .cname``) are ignored. Sequential
and library constructs (``.latch``, ``.gate``, ...) are rejected. The first model is the top.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .netlist import Cover, Instance, Model, Netlist, NetlistError

_IGNORED = {".attr", ".param", ".cname"}
_REJECTED = {".latch", ".mlatch", ".gate", ".clock", ".exdc", ".start_kiss", ".search"}


def _logical_lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first physical line number, tokens) of each non-empty logical line."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        tokens = " ".join(pending).split()
        pending = []
        if tokens:
            yield start, tokens
    if pending and " ".join(pending).split():
        yield start, " ".join(pending).split()


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.models: dict[str, Model] = {}
        self.model: Model | None = None
        self.cover: Cover | None = None

    def fail(self, line: int, message: str) -> NetlistError:
        return NetlistError(self.path, line, message)

    def current(self, line: int, directive: str) -> Model:
        if self.model is None:
            raise self.fail(line, f"{directive} outside a .model")
        return self.model

    def feed(self, line: int, tokens: list[str]) -> None:
        head = tokens[0]
        if not head.startswith("."):
            self.cube(line, tokens)
            return
        self.cover = None
        if head == ".model":
            self.start_model(line, tokens)
        elif head in (".inputs", ".outputs"):
            ports = self.current(line, head).inputs if head == ".inputs" else self.model.outputs
            ports.extend(tokens[1:])
        elif head == ".names":
            if len(tokens) < 2:
                raise self.fail(line, ".names needs at least an output net")
            self.cover = Cover(tokens[1:-1], tokens[-1], [], True, line)
            self.current(line, head).covers.append(self.cover)
        elif head == ".subckt":
            self.subckt(line, tokens)
        elif head in (".conn", ".barbuf"):
            if len(tokens) != 3:
                raise self.fail(line, f"{head} needs exactly two nets, got {len(tokens) - 1}")
            self.current(line, head).covers.append(Cover([tokens[1]], tokens[2], ["1"], True, line))
        elif head == ".end":
            self.current(line, head)
            self.model = None
        elif head in _REJECTED:
            raise self.fail(line, f"{head} is not supported: only combinational netlists")
        elif head not in _IGNORED:
            raise self.fail(line, f"unknown BLIF directive {head!r}")

    def start_model(self, line: int, tokens: list[str]) -> None:
        if len(tokens) != 2:
            raise self.fail(line, f".model needs exactly one name, got {tokens[1:]}")
        if tokens[1] in self.models:
            raise self.fail(line, f"model {tokens[1]!r} defined twice")
        self.model = Model(tokens[1], line)
        self.models[tokens[1]] = self.model

    def subckt(self, line: int, tokens: list[str]) -> None:
        if len(tokens) < 2:
            raise self.fail(line, ".subckt needs a model name")
        pins: dict[str, str] = {}
        for pin in tokens[2:]:
            formal, eq, actual = pin.partition("=")
            if not eq or not formal or not actual:
                raise self.fail(line, f"expected formal=actual, got {pin!r}")
            if formal in pins:
                raise self.fail(line, f"port {formal!r} connected twice")
            pins[formal] = actual
        self.current(line, ".subckt").instances.append(Instance(tokens[1], pins, line))

    def cube(self, line: int, tokens: list[str]) -> None:
        cover = self.cover
        if cover is None:
            raise self.fail(line, f"unexpected {' '.join(tokens)!r} outside a .names cover")
        width = len(cover.inputs)
        if len(tokens) == (2 if width else 1):
            cube, value = (tokens[0], tokens[1]) if width else ("", tokens[0])
        else:
            cube, value = "?", "?"  # wrong token count: reported below
        if len(cube) != width or set(cube) - set("01-"):
            raise self.fail(
                line,
                f"expected a cube of {width} characters from 0/1/- and an output 0/1, "
                f"got {' '.join(tokens)!r}",
            )
        if value not in ("0", "1"):
            raise self.fail(line, f"cover output must be 0 or 1, got {value!r}")
        if cover.cubes and cover.onset != (value == "1"):
            raise self.fail(line, "a cover mixes on-set (1) and off-set (0) rows")
        cover.onset = value == "1"
        cover.cubes.append(cube)


def parse_blif(
    path: str | Path, top: str | None = None, library: dict[str, Model] | None = None
) -> Netlist:
    """Parse a BLIF file; ``top`` names the model to simulate (default: the first).

    ``.subckt`` instances of models the file does not define are looked up in ``library``
    (cells, see :func:`.cells.cell_library`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NetlistError(path, None, f"not a text file ({exc})") from exc
    parser = _Parser(path)
    for line, tokens in _logical_lines(text):
        parser.feed(line, tokens)
    if not parser.models:
        raise NetlistError(path, None, "no .model found")
    name = top or next(iter(parser.models))
    if name not in parser.models:
        raise NetlistError(path, None, f"no model {name!r}; models: {sorted(parser.models)}")
    return Netlist(path, parser.models, name, library=library or {})
