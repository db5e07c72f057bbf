"""``keep_freed_memory``: freed buffers stay in the process (no page faults when a step's
buffers come back), never on import or from ``cli.main``, never over the user's own settings
or another ``malloc``; the console script and the search workers it spawns set it."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys

import pytest
import torch

import appmult_fx as amx
from appmult_fx import allocator
from appmult_fx.cli import console_main

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A fresh process (glibc's defaults, then the call unless argv[1] is "none"):
# * heap: a 48 MB block is served from the heap, not a fresh mapping (glibc's dynamic mmap
#   threshold stops at 32 MB), and 96 MB written and freed in 4 MB blocks leave the heap as
#   large as before (not trimmed): glibc's own counters (mallinfo2);
# * faults: the minor faults per round of five rounds of 24 x 4 MB tensors written and freed,
#   after three warm-up rounds, and the pages a round touches.
_PROCESS = """
import ctypes, json, resource, sys
import torch
from appmult_fx import allocator

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
kept = allocator.keep_freed_memory() if sys.argv[1] != "none" else None
mapped = libc.mallinfo2().hblkhd
big = libc.malloc(48 << 20)
ctypes.memset(big, 1, 48 << 20)
big_mapped = libc.mallinfo2().hblkhd > mapped
libc.free(big)
blocks = [libc.malloc(4 << 20) for _ in range(24)]
for b in blocks:
    ctypes.memset(b, 1, 4 << 20)
grown = libc.mallinfo2().arena
for b in blocks:
    libc.free(b)
trimmed = libc.mallinfo2().arena < grown

def one_round():
    buffers = [torch.empty(1 << 20, dtype=torch.float32).fill_(1.0) for _ in range(24)]
    del buffers

for _ in range(3):
    one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    one_round()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"kept": kept, "big_mapped": big_mapped, "trimmed": trimmed,
                  "faults": faults, "pages": 24 * (4 << 20) // 4096}))
"""


def _process(setting: str, **env_settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    env.pop(allocator.OPT_OUT_VARIABLE, None)
    done = subprocess.run(
        [sys.executable, "-c", _PROCESS, setting],
        capture_output=True,
        text=True,
        env={**env, **env_settings},
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_memory_stays_and_comes_back_without_page_faults() -> None:
    kept = _process("keep")
    assert kept["kept"] is True
    assert not kept["big_mapped"] and not kept["trimmed"], kept
    assert kept["faults"] <= 0.02 * kept["pages"], kept


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_glibc_defaults_map_large_blocks_afresh() -> None:
    """The control: without the call a 48 MB block is a fresh mapping, which is what the call
    changes (the trimming and the faults of the defaults depend on the heap's layout)."""
    assert _process("none")["big_mapped"] is True


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_an_allocator_that_hands_buffers_back_faults_each_round() -> None:
    """The control of the fault count: a fixed 128 KB mmap threshold (which the call leaves
    alone, as the user's own setting) maps and unmaps every 4 MB buffer."""
    handed_back = _process("keep", MALLOC_MMAP_THRESHOLD_="131072")
    assert handed_back["kept"] is False
    assert handed_back["faults"] >= 0.9 * handed_back["pages"], handed_back


class _FakeLibc:
    """A stand-in for the C library recording ``mallopt`` calls; ``malloc`` at address 1."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.refuse: set[tuple[int, int]] = set()
        self.malloc = ctypes_function(1)

        def mallopt(param: int, value: int) -> int:
            self.calls.append((param, value))
            return int((param, value) not in self.refuse)

        self.mallopt = mallopt


def ctypes_function(address: int) -> ctypes._CFuncPtr:
    """A C function pointer at ``address`` (never called: only its address is compared)."""
    return ctypes.cast(ctypes.c_void_p(address), ctypes.CFUNCTYPE(None))


@pytest.fixture
def fake_libc(monkeypatch: pytest.MonkeyPatch) -> _FakeLibc:
    libc = _FakeLibc()
    process = type("Process", (), {"malloc": libc.malloc})()
    monkeypatch.setattr(
        allocator.ctypes, "CDLL", lambda name: libc if name == "libc.so.6" else process
    )
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator, "_kept", False)
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(allocator.OPT_OUT_VARIABLE, raising=False)
    libc.process = process
    return libc


def test_sets_both_thresholds(fake_libc: _FakeLibc) -> None:
    assert allocator.keep_freed_memory() is True
    # M_TRIM_THRESHOLD = -1 and M_MMAP_THRESHOLD = -3 in glibc's malloc.h
    assert fake_libc.calls == [(-1, (1 << 31) - 1), (-3, 512 << 20)]
    assert allocator.freed_memory_kept() is True


def test_old_glibc_gets_its_ceiling(fake_libc: _FakeLibc) -> None:
    fake_libc.refuse = {(-3, 512 << 20)}
    assert allocator.keep_freed_memory() is True
    assert fake_libc.calls == [(-1, (1 << 31) - 1), (-3, 512 << 20), (-3, 32 << 20)]


def test_reports_refused_settings(fake_libc: _FakeLibc) -> None:
    fake_libc.refuse = {(-3, 512 << 20), (-3, 32 << 20)}
    assert allocator.keep_freed_memory() is False
    assert allocator.freed_memory_kept() is False
    fake_libc.refuse, fake_libc.calls = {(-1, (1 << 31) - 1)}, []
    assert allocator.keep_freed_memory() is False
    assert fake_libc.calls == [(-1, (1 << 31) - 1)]  # no mmap threshold without the trim one


def test_nothing_with_another_malloc_preloaded(fake_libc: _FakeLibc) -> None:
    fake_libc.process.malloc = ctypes_function(2)  # jemalloc / tcmalloc in front of glibc
    assert allocator.keep_freed_memory() is False
    assert fake_libc.calls == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (allocator.OPT_OUT_VARIABLE, "0"),
        (allocator.OPT_OUT_VARIABLE, " Off"),
        ("MALLOC_TRIM_THRESHOLD_", "1000000"),
        ("MALLOC_MMAP_THRESHOLD_", "65536"),
        ("GLIBC_TUNABLES", "glibc.cpu.x86_shstk=on:glibc.malloc.trim_threshold=1"),
    ],
)
def test_leaves_the_users_choice(
    fake_libc: _FakeLibc, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert allocator.keep_freed_memory() is False
    assert fake_libc.calls == []


@pytest.mark.parametrize("value", ["1", "true", "YES", "on", ""])
def test_the_switch_on(fake_libc: _FakeLibc, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(allocator.OPT_OUT_VARIABLE, value)
    assert allocator.keep_freed_memory() is True


def test_a_garbled_switch_is_refused(fake_libc: _FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.OPT_OUT_VARIABLE, "sometimes")
    with pytest.raises(ValueError, match="APPMULT_FX_KEEP_FREED_MEMORY='sometimes'"):
        allocator.keep_freed_memory()
    assert fake_libc.calls == []


def test_unrelated_tunables_do_not_stop_it(
    fake_libc: _FakeLibc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.x86_shstk=on")
    assert allocator.keep_freed_memory() is True


def test_nothing_off_glibc(fake_libc: _FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    assert allocator.keep_freed_memory() is False
    assert fake_libc.calls == []


def test_not_on_import_nor_from_cli_main() -> None:
    code = (
        "import appmult_fx, appmult_fx.ops, appmult_fx.assignment\n"
        "from appmult_fx import allocator\n"
        "from appmult_fx.cli import main\n"
        "assert main(['lut', 'list']) == 0\n"
        "print(allocator.freed_memory_kept())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_public_name() -> None:
    assert amx.keep_freed_memory is allocator.keep_freed_memory


def test_console_script_sets_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(sys, "argv", ["appmult-fx", "lut", "list"])
    assert console_main() == 0
    assert calls == [1]
    assert "mul8u_exact" in capsys.readouterr().out


def test_console_script_reports_a_garbled_switch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(allocator.OPT_OUT_VARIABLE, "sometimes")
    monkeypatch.setattr(sys, "argv", ["appmult-fx", "lut", "list"])
    assert console_main() == 2
    assert "APPMULT_FX_KEEP_FREED_MEMORY='sometimes'" in capsys.readouterr().err


def test_search_workers_set_it_where_their_parent_did(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spawned worker is a fresh interpreter: ``run_workers`` passes the parent's state and
    ``run_worker`` sets it before any work."""
    from appmult_fx.assignment import study

    calls = []
    monkeypatch.setattr(study, "keep_freed_memory", lambda: calls.append(1) or True)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise Stop

    monkeypatch.setattr(torch, "set_num_threads", stop)
    with pytest.raises(Stop):
        study.run_worker(None, None, 0, threads=1, keep_memory=True)
    assert calls == [1]
    calls.clear()
    with pytest.raises(Stop):
        study.run_worker(None, None, 0, threads=1)
    assert calls == []

    started = []

    class Context:
        def Barrier(self, n: int) -> None:  # noqa: N802
            return None

        def Process(self, target, args, kwargs):  # noqa: ANN001, ANN202, N802
            started.append(kwargs)
            return type("P", (), {"start": lambda s: None, "join": lambda s: None, "exitcode": 0})()

    monkeypatch.setattr(study.multiprocessing, "get_context", lambda name: Context())
    monkeypatch.setattr(
        study, "load_study", lambda cfg: type("S", (), {"get_trials": lambda *a, **k: []})()
    )
    monkeypatch.setattr(study, "freed_memory_kept", lambda: True)
    cfg = type("Cfg", (), {"storage": "sqlite:///x.db"})()
    study.run_workers(None, cfg, 2)
    assert started == [{"keep_memory": True}, {"keep_memory": True}]
