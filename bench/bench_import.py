"""Importing a folder of 8-bit EvoApproxLib circuits on one core (workers=1), compile included.

Run: ``OMP_NUM_THREADS=1 pytest bench/bench_import.py --benchmark-enable -p no:cacheprovider``.
The baseline is loading the resulting catalogue (sha256-verified ``.lut`` files); every import
round starts with an empty compile cache, so C compilation is counted.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from appmult_fx.luts.catalogue import load_catalogue
from appmult_fx.luts.library import import_library

EVO = Path(__file__).resolve().parents[2] / "shared" / "evoapprox"
FOLDERS = ("8x8_unsigned", "8x8_signed")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not EVO.is_dir():
        pytest.skip("../shared is absent")
    root = tmp_path_factory.mktemp("lib")
    for folder in FOLDERS:
        shutil.copytree(EVO / folder, root / folder)
    return root


def test_baseline_load_catalogue(benchmark, library: Path, tmp_path: Path) -> None:
    import_library(library, tmp_path / "cat", workers=1, progress=False)
    mults = benchmark(load_catalogue, tmp_path / "cat")
    assert len(mults) >= 3


def test_import_8bit_folder_one_core(benchmark, library: Path, tmp_path: Path) -> None:
    counter = itertools.count()

    def run() -> int:
        os.environ["APPMULT_FX_CACHE_DIR"] = str(tmp_path / f"cache{next(counter)}")  # cold cache
        report = import_library(library, tmp_path / "cat", workers=1, progress=False)
        return len(report.entries) + len(report.refused)

    circuits = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["circuits"] = circuits
    assert circuits == sum(len(list((library / f).glob("*.c"))) for f in FOLDERS)
