"""Per-layer multiplier assignment, with ``torch.ao`` ``QConfigMapping`` precedence.

Lowest to highest: ``set_global`` < ``set_object_type`` < ``set_module_name_regex`` <
``set_module_name``. A rule's multiplier ``None`` keeps the layer in float.
``set_module_name`` applies to the named layer and to every layer inside a module of that
name (the longest matching name wins); regexes are tried in insertion order with
``re.match`` (anchored at the start, as in ``torch.ao``) and the first match wins.
"""

from __future__ import annotations

import json
import numbers
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from appmult_fx.luts.formats import load_multiplier
from appmult_fx.luts.registry import multiplier as builtin_multiplier

from .ops_table import canonical_object_type, object_type_name

GRADIENT_MODES = ("lut", "ste")
FLOAT = "float"  # in spec files (TOML has no null): keep the layer in float
BACKWARD_MODES = ("approximate", "exact")


_CALL = re.compile(r"@\d+(?=\.|$)")  # a call suffix of a layer name: ``fc@2``, ``blk@2.fc``


def regex_covers(pattern: str, layer_name: str) -> bool:
    """Whether a ``module_name_regex`` rule covers a layer: ``re.match`` on its name, or on the
    name without call suffixes (``fc$`` covers ``fc@1`` and ``fc@2``, as it covers ``fc``)."""
    return bool(re.match(pattern, layer_name) or re.match(pattern, _CALL.sub("", layer_name)))


def covers(rule_name: str, layer_name: str) -> bool:
    """Whether a ``module_name`` rule covers a layer: the layer itself, one of its calls
    (``fc@2``) or a layer inside it (``layer1.0.conv1``)."""
    return layer_name == rule_name or layer_name.startswith((rule_name + ".", rule_name + "@"))


@dataclass(frozen=True)
class Rule:
    """What one layer becomes: its multiplier (``None`` = float) and per-rule options.

    ``gradient`` (``"lut"``/``"ste"``) and ``backward`` (FP multipliers:
    ``"approximate"``/``"exact"``) default to ``convert``'s arguments when ``None``.
    ``per_channel`` quantizes weights per output channel; ``momentum`` is the activation
    observers' moving-average momentum.
    """

    multiplier: Any = None
    gradient: str | None = None
    backward: str | None = None
    per_channel: bool = False
    momentum: float = 0.1

    def __post_init__(self) -> None:
        _check_choice("gradient", self.gradient, GRADIENT_MODES)
        _check_choice("backward", self.backward, BACKWARD_MODES)
        object.__setattr__(self, "per_channel", _as_bool("per_channel", self.per_channel))
        object.__setattr__(self, "momentum", _as_fraction("momentum", self.momentum))


def _as_bool(option: str, value: Any) -> bool:
    """``value`` as a bool: a bool, a numpy bool or the integer 0 or 1; TypeError for anything
    else (a string such as ``"no"`` is truthy and would quietly mean True)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{option} must be true or false (a bool), got {value!r}")


def _as_fraction(option: str, value: Any) -> float:
    """``value`` as a float in (0, 1]: any real number (numpy's and 0-d tensors included), not
    a bool or a string."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{option} must be a number in (0, 1], got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{option} must be a number in (0, 1], got {value!r}") from exc
    if not 0.0 < number <= 1.0:
        raise ValueError(f"{option} must be in (0, 1], got {value!r}")
    return number


def _check_choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` is ``None`` (``convert``'s default) or one of ``choices``."""
    if value is not None and (not isinstance(value, str) or value not in choices):
        raise ValueError(f"{option} must be one of {choices}, got {value!r}")


_OPTION_KEYS = {f.name for f in fields(Rule)} - {"multiplier"}


def resolve_multiplier(ref: Any) -> Any:
    """A multiplier object from an object, a built-in name or a LUT file path (``None`` stays)."""
    if ref is None or hasattr(ref, "kind"):
        return ref
    if isinstance(ref, (str, Path)):
        text = str(ref)
        try:
            return builtin_multiplier(text)
        except KeyError:
            pass
        path = Path(text).expanduser()
        if path.exists():
            return load_multiplier(path)
        raise ValueError(
            f"{text!r} is neither a built-in multiplier name (see `appmult-fx lut list`) "
            "nor an existing LUT file"
        )
    raise TypeError(
        f"expected a multiplier, a built-in name or a LUT path, got {type(ref).__name__}"
    )


def _make_rule(mult: Any, options: dict[str, Any], where: str) -> Rule:
    """The rule ``where`` (e.g. ``module_name 'fc'``) describes; bad options name it."""
    unknown = set(options) - _OPTION_KEYS
    if unknown:
        raise ValueError(
            f"{where}: unknown rule option(s) {sorted(unknown)}; known: {sorted(_OPTION_KEYS)}"
        )
    try:
        Rule(**options)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from exc
    return Rule(resolve_multiplier(mult), **options)


class Spec:
    """Which multiplier each layer uses (see the module docstring for precedence)."""

    def __init__(self) -> None:
        self.global_rule: Rule | None = None
        self.object_type_rules: dict[Any, Rule] = {}
        self.regex_rules: list[tuple[str, Rule]] = []
        self.module_name_rules: dict[str, Rule] = {}

    def set_global(self, mult: Any, **options: Any) -> Spec:
        """Rule for every layer no other rule matches."""
        self.global_rule = _make_rule(mult, options, "global rule")
        return self

    def set_object_type(self, object_type: Any, mult: Any, **options: Any) -> Spec:
        """Rule for layers of a module class (``nn.Linear``) or function (``F.conv2d``)."""
        key = canonical_object_type(object_type)
        rule = _make_rule(mult, options, f"object_type {object_type_name(key)!r}")
        self.object_type_rules[key] = rule
        return self

    def set_module_name_regex(self, pattern: str, mult: Any, **options: Any) -> Spec:
        """Rule for layers whose qualified name matches ``pattern`` (``re.match``)."""
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad module_name_regex {pattern!r}: {exc}") from exc
        self.regex_rules.append(
            (pattern, _make_rule(mult, options, f"module_name_regex {pattern!r}"))
        )
        return self

    def set_module_name(self, name: str, mult: Any, **options: Any) -> Spec:
        """Rule for the layer (or every layer inside the module) with qualified name ``name``."""
        self.module_name_rules[name] = _make_rule(mult, options, f"module_name {name!r}")
        return self

    def rule_for(self, layer_name: str, object_types: tuple[Any, ...]) -> Rule | None:
        """The rule that applies to a layer (its object types most specific first), or
        ``None`` when no rule matches (float)."""
        best = None
        for name, rule in self.module_name_rules.items():
            if (name == "" or covers(name, layer_name)) and (
                best is None or len(name) > len(best[0])
            ):
                best = (name, rule)
        if best is not None:
            return best[1]
        for pattern, rule in self.regex_rules:
            if regex_covers(pattern, layer_name):
                return rule
        for object_type in object_types:
            if object_type in self.object_type_rules:
                return self.object_type_rules[object_type]
        return self.global_rule

    def with_default_gradient(self, gradient: str) -> Spec:
        """A copy where rules without a gradient mode get ``gradient``."""
        return self._map(lambda r: r if r.gradient else replace(r, gradient=gradient))

    def with_default_backward(self, backward: str) -> Spec:
        """A copy where rules without a backward mode get ``backward``."""
        return self._map(lambda r: r if r.backward else replace(r, backward=backward))

    def _map(self, fn: Any) -> Spec:
        out = Spec()
        out.global_rule = fn(self.global_rule) if self.global_rule else None
        out.object_type_rules = {k: fn(v) for k, v in self.object_type_rules.items()}
        out.regex_rules = [(p, fn(r)) for p, r in self.regex_rules]
        out.module_name_rules = {k: fn(v) for k, v in self.module_name_rules.items()}
        return out

    # ---- files -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | Path | None = None) -> Spec:
        """Build a spec from ``{"global", "object_type", "module_name_regex", "module_name"}``.

        A rule is a multiplier reference (built-in name, LUT path relative to ``base_dir``,
        or ``null`` / ``"float"`` for float) or a table
        ``{"multiplier": ..., "gradient": ..., "per_channel": ...}``.
        ``module_name_regex`` is a list of ``[pattern, rule]`` pairs or a table.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a spec must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"global", "object_type", "module_name_regex", "module_name"}
        if unknown:
            raise ValueError(
                f"unknown spec key(s) {sorted(unknown)}; expected global, object_type, "
                "module_name_regex, module_name"
            )
        spec = cls()

        def rule_args(value: Any, where: str) -> tuple[Any, dict[str, Any]]:
            opts: dict[str, Any] = {}
            if isinstance(value, dict):
                if "multiplier" not in value:
                    raise ValueError(
                        f"{where}: a rule table needs a 'multiplier' key "
                        '("float" or null for float)'
                    )
                opts = {k: v for k, v in value.items() if k != "multiplier"}
                value = value["multiplier"]
            return (None if value == FLOAT else _relative(value, base_dir)), opts

        if "global" in data:
            mult, opts = rule_args(data["global"], "global")
            spec.set_global(mult, **opts)
        for key, value in _as_mapping(data.get("object_type", {}), "object_type").items():
            mult, opts = rule_args(value, f"object_type.{key}")
            spec.set_object_type(key, mult, **opts)
        regex = data.get("module_name_regex", [])
        pairs = list(regex.items()) if isinstance(regex, dict) else regex
        for item in pairs:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise ValueError(
                    f"module_name_regex entries must be [pattern, rule] pairs, got {item!r}"
                )
            mult, opts = rule_args(item[1], f"module_name_regex {item[0]!r}")
            spec.set_module_name_regex(item[0], mult, **opts)
        for key, value in _as_mapping(data.get("module_name", {}), "module_name").items():
            mult, opts = rule_args(value, f"module_name.{key}")
            spec.set_module_name(key, mult, **opts)
        return spec

    @classmethod
    def from_file(cls, path: str | Path) -> Spec:
        """Read a spec from a JSON (``.json``) or TOML (``.toml``) file; LUT paths in it are
        relative to the file's folder."""
        path = Path(path)
        return cls.from_text(path.read_text(), path)

    @classmethod
    def from_text(cls, text: str, path: str | Path) -> Spec:
        """A spec from ``text``, read as the content of ``path`` would be by :meth:`from_file`
        (its suffix says JSON or TOML; LUT paths are relative to its folder)."""
        path = Path(path)
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            elif path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                raise ValueError(f"{path}: spec files must end in .json or .toml")
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{path}: not a valid spec file: {exc}") from exc
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (multipliers by name)."""

        def enc(rule: Rule) -> Any:
            opts = {
                k: getattr(rule, k)
                for k in sorted(_OPTION_KEYS)
                if getattr(rule, k) != getattr(Rule(), k)
            }
            name = None if rule.multiplier is None else rule.multiplier.name
            return {"multiplier": name, **opts} if opts else name

        out: dict[str, Any] = {}
        if self.global_rule is not None:
            out["global"] = enc(self.global_rule)
        if self.object_type_rules:
            out["object_type"] = {
                object_type_name(k): enc(v) for k, v in self.object_type_rules.items()
            }
        if self.regex_rules:
            out["module_name_regex"] = [[p, enc(r)] for p, r in self.regex_rules]
        if self.module_name_rules:
            out["module_name"] = {k: enc(v) for k, v in self.module_name_rules.items()}
        return out

    def __repr__(self) -> str:
        return f"Spec({json.dumps(self.to_dict())})"


def _as_mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' must be a table/object, got {type(value).__name__}")
    return value


def _relative(ref: Any, base_dir: str | Path | None) -> Any:
    """Resolve a file reference relative to ``base_dir`` when it names an existing file there."""
    if isinstance(ref, str) and base_dir is not None and not Path(ref).is_absolute():
        candidate = Path(base_dir) / ref
        if candidate.exists():
            return str(candidate)
    return ref
