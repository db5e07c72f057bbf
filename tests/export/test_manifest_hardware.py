"""The manifest carries each multiplier's hardware figures (or null), schema-checked."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

import appmult_fx as amx
from appmult_fx.export.manifest import schema, write_luts


def test_hardware_in_manifest_entries(tmp_path: Path) -> None:
    with_hw = amx.multiplier("mul4u_trunc2").with_hardware(
        power_mw=0.126, area_um2=284.9, delay_ns=0.94, source="EvoApproxLib header (PDK45)"
    )
    entries = write_luts([with_hw, amx.multiplier("mul4u_exact")], tmp_path)
    assert entries[0]["hardware"] == with_hw.hardware and entries[1]["hardware"] is None
    validator = jsonschema.Draft202012Validator(
        {**schema()["$defs"]["multiplier"], "$defs": schema()["$defs"]}
    )
    for entry in entries:
        validator.validate(entry)
    bad = {**entries[0], "hardware": {"power_mw": -1.0}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    assert amx.load_multiplier(tmp_path / entries[0]["file"]).hardware == with_hw.hardware


def test_one_table_under_two_names_keeps_both_entries_and_figures(tmp_path: Path) -> None:
    """Two circuits with the same truth table and their own power: neither is dropped."""
    import torch
    from torch import nn

    base = amx.multiplier("mul8u_trunc4")
    a = base.renamed("vendorA_mul").with_hardware(power_mw=1.0)
    b = base.renamed("vendorB_mul").with_hardware(power_mw=0.1)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 4)
    spec = amx.Spec().set_module_name("0", a).set_module_name("2", b)
    gm = amx.convert(model, spec)
    amx.calibrate(gm, [x], progress=False)
    amx.export(gm.eval(), x, tmp_path, progress=False)
    manifest = amx.load_exported(tmp_path).manifest
    figures = {m["name"]: m["hardware"]["power_mw"] for m in manifest["multipliers"]}
    assert figures == {"vendorA_mul": 1.0, "vendorB_mul": 0.1}
    assert [layer["multiplier"] for layer in manifest["layers"]] == ["vendorA_mul", "vendorB_mul"]


def test_one_name_and_table_with_two_power_figures_is_refused() -> None:
    from appmult_fx.export.manifest import distinct_multipliers

    base = amx.multiplier("mul8u_trunc4")
    with pytest.raises(ValueError, match="different hardware figures"):
        distinct_multipliers([base.with_hardware(power_mw=1.0), base.with_hardware(power_mw=0.5)])
    assert len(distinct_multipliers([base, base, base.renamed("other")])) == 2


def test_names_that_differ_in_unsafe_characters_get_their_own_files(tmp_path: Path) -> None:
    base = amx.multiplier("mul8u_trunc4")
    entries = write_luts([base.renamed("x-y"), base.renamed("x_y")], tmp_path)
    assert len({e["file"] for e in entries}) == 2
    for entry in entries:
        assert amx.load_multiplier(tmp_path / entry["file"]).name == entry["name"]
