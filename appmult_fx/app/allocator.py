"""Keep freed memory in the process, so that a training step reuses it instead of faulting it in.

A converted model's step allocates and frees buffers of 1-16 MB (im2col columns, gradient
rows, saved activations). glibc's ``malloc`` returns the top of its heap to the kernel whenever
more than its trim threshold (dynamically 2x the mmap threshold, at most 64 MB) lies free
there, and serves blocks above its mmap threshold from fresh mappings, so every step faults the
same memory in again, 4 KB at a time: about 36 000 minor faults (70 ms of system time) per
step of the CIFAR ResNet-18 at batch 16 on one thread (``bench/step_faults.py``).
:func:`keep_freed_memory` sets both thresholds once (``mallopt``), after which freed memory
stays with the process (its resident size stays at the peak, as a training run's does anyway)
and the faults disappear.

It changes the whole process's allocator, so the library never calls it on import: the
``appmult-fx`` command line does (it owns its process), and a training script may.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2): blocks above it are
# always mapped afresh.
MMAP_THRESHOLD_MAX = 32 << 20
# Keep any amount of free memory at the top of the heap.
TRIM_THRESHOLD_NEVER = (1 << 31) - 1

# "0" (or "false", "no", "off") leaves the allocator as it is, for the command line's call and
# a script's alike.
OPT_OUT_VARIABLE = "APPMULT_FX_KEEP_FREED_MEMORY"
_OFF, _ON = ("0", "false", "no", "off"), ("", "1", "true", "yes", "on")
# glibc's own settings of these thresholds: a user who set them has chosen, and is not
# overridden.
_USER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
_USER_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold")


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory in the process (``mallopt``: mmap threshold 32 MB, no
    trimming), so repeated steps stop faulting their buffers in. True if it was set; False where
    it was not: off glibc, with ``APPMULT_FX_KEEP_FREED_MEMORY=0``, or where the user set either
    threshold through glibc's own ``MALLOC_*_THRESHOLD_`` or ``GLIBC_TUNABLES``. A value of
    ``APPMULT_FX_KEEP_FREED_MEMORY`` other than 0/1, false/true, no/yes, off/on: ValueError."""
    switch = os.environ.get(OPT_OUT_VARIABLE, "").strip().lower()
    if switch not in _OFF + _ON:
        raise ValueError(
            f"{OPT_OUT_VARIABLE}={os.environ[OPT_OUT_VARIABLE]!r}: expected 0 or 1 "
            "(false/true, no/yes, off/on)"
        )
    if switch in _OFF:
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in os.environ for name in _USER_VARIABLES) or any(
        name in tunables for name in _USER_TUNABLES
    ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_NEVER)
    )
