"""Hooks on layer modules that convert replaces are reported, not silently dropped."""

from __future__ import annotations

import pytest
from torch import nn

import appmult_fx as amx


def test_hooks_on_converted_modules_are_reported_float_ones_are_not() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].register_forward_hook(lambda m, i, o: o * 0)
    model[2].register_forward_pre_hook(lambda m, i: i)
    spec = amx.Spec().set_global("mul8u_exact").set_module_name("2", None)
    with pytest.warns(UserWarning, match="hooks registered on '0' do not run") as caught:
        amx.convert(model, spec)
    assert not any("'2'" in str(w.message) for w in caught)
