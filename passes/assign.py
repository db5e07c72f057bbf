"""Resolve the spec for every matched layer, checking the spec against the model."""

from __future__ import annotations

import warnings

from torch import fx

from .match import LayerSite
from .spec import Rule, Spec, regex_covers
from .spec import covers as rule_covers


def assign(
    gm: fx.GraphModule, sites: list[LayerSite], spec: Spec
) -> list[tuple[LayerSite, Rule | None]]:
    """Pair each site with its rule. Unknown ``module_name`` entries raise; those naming a
    module without convertible layers, and regexes that match no layer, warn."""
    layer_names = [s.name for s in sites]
    module_names = {n for n, _ in gm.named_modules()}

    def covers(name: str) -> bool:
        return any(rule_covers(name, n) for n in layer_names)

    for name in spec.module_name_rules:
        if name and name not in module_names and not covers(name):
            raise ValueError(
                f"spec module_name {name!r} names no layer or module of the model; layers are: "
                + ", ".join(layer_names[:20])
                + (" ..." if len(layer_names) > 20 else "")
            )
    empty = [n for n in spec.module_name_rules if n and n in module_names and not covers(n)]
    if empty:
        warnings.warn(
            f"spec module_name {', '.join(map(repr, empty))}: no convertible layer in that "
            "module, so the rule changes nothing (its multiplies, if any, stay float; see "
            "amx.layers)",
            stacklevel=3,
        )
    for pattern, _ in spec.regex_rules:
        if not any(regex_covers(pattern, n) for n in layer_names):
            warnings.warn(f"spec module_name_regex {pattern!r} matches no layer", stacklevel=3)
    return [(site, spec.rule_for(site.name, site.object_types)) for site in sites]
