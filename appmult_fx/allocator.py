"""Keep freed memory in the process, so that a training step reuses it instead of faulting it in.

A converted model's step allocates and frees buffers of 1-16 MB (im2col columns, gradient
rows, saved activations). glibc's ``malloc`` returns the top of its heap to the kernel whenever
more than its trim threshold (dynamically 2x the mmap threshold, at most 64 MB) lies free
there, and serves blocks above its mmap threshold from fresh mappings, so every step faults the
same memory in again, 4 KB at a time: about 36 000 minor faults (70 ms of system time) per
step of the CIFAR ResNet-18 at batch 16 on one thread (``bench/step_faults.py``).
:func:`keep_freed_memory` sets both thresholds once (``mallopt``), after which freed memory
stays with the process and the faults disappear; the process keeps its heap at its high-water
mark (a training run reaches it at every step anyway).

It changes the whole process's allocator, so neither ``import appmult_fx`` nor
``appmult_fx.cli.main`` calls it: the ``appmult-fx`` console script does (it owns its process),
so do the search workers it spawns, and a training script may.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (and stay there once freed): a ResNet activation
# at batch 256 is 64-128 MB. glibc before 2.26 refuses thresholds above 32 MB (HEAP_MAX_SIZE /
# 2 on 64-bit); there the ceiling is taken instead.
MMAP_THRESHOLD = 512 << 20
MMAP_THRESHOLD_OLD_GLIBC = 32 << 20
# Trim the heap's top only when more than 2 GB lie free there.
TRIM_THRESHOLD = (1 << 31) - 1

# "0" (or "false", "no", "off") leaves the allocator as it is, for the console script's call
# and a script's alike.
OPT_OUT_VARIABLE = "APPMULT_FX_KEEP_FREED_MEMORY"
_OFF, _ON = ("0", "false", "no", "off"), ("", "1", "true", "yes", "on")
# glibc's own settings of these thresholds: a user who set them has chosen, and is not
# overridden.
_USER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
_USER_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold")

_kept = False  # whether this process set them


def _switched_off() -> bool:
    """Whether ``APPMULT_FX_KEEP_FREED_MEMORY`` says no (ValueError on a value it cannot read)."""
    switch = os.environ.get(OPT_OUT_VARIABLE, "").strip().lower()
    if switch not in _OFF + _ON:
        raise ValueError(
            f"{OPT_OUT_VARIABLE}={os.environ[OPT_OUT_VARIABLE]!r}: expected 0 or 1 "
            "(false/true, no/yes, off/on)"
        )
    return switch in _OFF


def _users_thresholds() -> bool:
    """Whether the user set either threshold through glibc's own variables."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(name in os.environ for name in _USER_VARIABLES) or any(
        name in tunables for name in _USER_TUNABLES
    )


def _glibc_malloc() -> ctypes.CDLL | None:
    """glibc, where it is the C library and its ``malloc`` is the one the process calls (not
    one preloaded in front of it, such as jemalloc or tcmalloc, which glibc's ``mallopt`` does
    not tune); else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL("libc.so.6")
    called = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
    return libc if called == ctypes.cast(libc.malloc, ctypes.c_void_p).value else None


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory in the process (``mallopt``: blocks up to 512 MB from the
    heap, whose top is trimmed only past 2 GB free), so repeated steps stop faulting their
    buffers in. True if it was set; False where it was not: off glibc or with another
    ``malloc`` preloaded, with ``APPMULT_FX_KEEP_FREED_MEMORY=0``, or where the user set either
    threshold through glibc's own ``MALLOC_*_THRESHOLD_`` or ``GLIBC_TUNABLES``. Another value
    of ``APPMULT_FX_KEEP_FREED_MEMORY`` than 0/1, false/true, no/yes, off/on: ValueError."""
    global _kept
    if _switched_off() or _users_thresholds():
        return False
    libc = _glibc_malloc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the trim threshold first: on its own it only keeps more, never less, than the default
    if not mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        return False
    _kept = bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        or mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_OLD_GLIBC)
    )
    return _kept


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` set the thresholds in this process (spawned workers
    set them again: a fresh interpreter starts with glibc's defaults)."""
    return _kept
