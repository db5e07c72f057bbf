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
