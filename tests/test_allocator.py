"""``keep_freed_memory``: freed buffers stay in the process (no page faults when a step's
buffers come back), never on import, never over the user's own settings; the CLI sets it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

import appmult_fx as amx
from appmult_fx.app import allocator
from appmult_fx.cli import main

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A fresh process: 24 buffers of 4 MB written and freed per round, as a step's im2col columns
# and gradient rows are; the minor faults of five rounds after three warm-up rounds, per round,
# and the pages a round touches.
_ROUNDS = """
import json, resource, sys
import torch
import appmult_fx as amx
kept = amx.keep_freed_memory()
def one_round():
    buffers = [torch.empty(1 << 20, dtype=torch.float32).fill_(1.0) for _ in range(24)]
    del buffers
for _ in range(3):
    one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    one_round()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"kept": kept, "faults": faults, "pages": 24 * (4 << 20) // 4096}))
"""


def _rounds(**env_settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    env.pop(allocator.OPT_OUT_VARIABLE, None)
    done = subprocess.run(
        [sys.executable, "-c", _ROUNDS],
        capture_output=True,
        text=True,
        env={**env, **env_settings},
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_buffers_come_back_without_page_faults() -> None:
    kept = _rounds()
    assert kept["kept"] is True
    assert kept["faults"] <= 0.02 * kept["pages"], kept
    # the control: a process whose allocator hands every freed buffer back (a fixed 128 KB mmap
    # threshold, which keep_freed_memory leaves alone) faults each round's pages in again
    handed_back = _rounds(MALLOC_MMAP_THRESHOLD_="131072")
    assert handed_back["kept"] is False
    assert handed_back["faults"] >= 0.9 * handed_back["pages"], handed_back


class _FakeLibc:
    """A stand-in for ``ctypes.CDLL(None)`` recording ``mallopt`` calls."""

    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

        def mallopt(param: int, value: int) -> int:
            self.calls.append((param, value))
            return self.result

        self.mallopt = mallopt


@pytest.fixture
def fake_libc(monkeypatch: pytest.MonkeyPatch) -> _FakeLibc:
    libc = _FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(allocator.OPT_OUT_VARIABLE, raising=False)
    return libc


def test_sets_both_thresholds(fake_libc: _FakeLibc) -> None:
    assert allocator.keep_freed_memory() is True
    assert fake_libc.calls == [
        (allocator.M_MMAP_THRESHOLD, 32 << 20),
        (allocator.M_TRIM_THRESHOLD, (1 << 31) - 1),
    ]


def test_reports_a_refused_setting(fake_libc: _FakeLibc) -> None:
    fake_libc.result = 0
    assert allocator.keep_freed_memory() is False


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


def test_not_on_import() -> None:
    code = (
        "import sys, appmult_fx, appmult_fx.ops; print('appmult_fx.app.allocator' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_public_name() -> None:
    assert amx.keep_freed_memory is allocator.keep_freed_memory


def test_command_line_sets_it(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["lut", "list"]) == 0
    assert calls == [1]
    assert "mul8u_exact" in capsys.readouterr().out


def test_command_line_reports_a_garbled_switch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(allocator.OPT_OUT_VARIABLE, "sometimes")
    assert main(["lut", "list"]) == 2
    assert "APPMULT_FX_KEEP_FREED_MEMORY='sometimes'" in capsys.readouterr().err
