"""bench/lut_gemm.py's arguments: ``--zeros`` outside [0, 1) is refused before any timing."""

from __future__ import annotations

import pytest

from tests.bench_scripts import load_bench_script


def _module():
    return load_bench_script("lut_gemm")


@pytest.mark.parametrize("share", ["1", "1.5", "-0.1"])
def test_zero_share_outside_the_unit_interval_is_refused(share: str, capsys) -> None:
    assert _module().main(["--zeros", share]) == 2
    assert "--zeros must be in [0, 1)" in capsys.readouterr().err


def test_zero_share_is_parsed() -> None:
    args = _module().parse_args(["--zeros", "0.55", "--bits", "7x8"])
    assert args.zeros == 0.55 and args.bits == [(7, 8)]
