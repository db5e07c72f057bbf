"""The typed contract between rewrite and export: freeze reads LayerRecord.parts."""

import dataclasses

import pytest
import torch
from appmult_fx.passes.records import META_KEY
from torch import nn

import appmult_fx as amx
from appmult_fx.export.freeze import FROZEN_MODULE, freeze


def _converted() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 16, 3))
    gm = amx.convert(model, amx.Spec().set_global("mul6u_trunc3"), gradient="ste")
    amx.calibrate(gm, [torch.randn(2, 1, 4, 4)], progress=False)
    return gm.eval()


def test_frozen_ops_read_the_table_buffer_the_parts_name() -> None:
    gm = _converted()
    frozen, layers = freeze(gm)
    mult = amx.multiplier("mul6u_trunc3")
    assert [layer.name for layer in layers] == ["0", "2"]
    for layer in layers:
        assert gm.get_buffer(layer.record.parts.tables["table"]).equal(mult.table)
    tables = [
        n for n in frozen.graph.nodes if n.op == "get_attr" and "table" in str(n.target)
    ]  # the table is an operand of the frozen ops, stored once per multiplier
    assert len(tables) == 2 and {str(n.target) for n in tables} == {
        f"{FROZEN_MODULE}.table_{mult.sha256[:16]}"
    }
    assert frozen.get_buffer(str(tables[0].target)).equal(mult.table.int())


def test_a_record_without_parts_is_refused() -> None:
    gm = _converted()
    node = next(n for n in gm.graph.nodes if META_KEY in n.meta)
    node.meta[META_KEY] = dataclasses.replace(node.meta[META_KEY], parts=None)
    with pytest.raises(ValueError, match="does not describe a quantized LUT-GEMM"):
        freeze(gm)
