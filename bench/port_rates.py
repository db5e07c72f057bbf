"""Throughput of the instructions the AVX-512 VBMI forward is built from, and the bound they set.

    python bench/port_rates.py [--iterations 100000000] [--json rates.json]

Compiles a small C program (a C compiler with AVX-512 VBMI / VNNI support, gcc or clang, and a
CPU that has them) that times eight independent chains of each instruction the forward's inner
loop issues (``vpermb``, ``vpermi2b``, ``vpunpcklbw``, ``vpdpwssd``, ``vpblendmb``) and one
dependent chain of ``vpaddd`` (latency one cycle: the clock). It prints nanoseconds and cycles per
instruction, then the forward's bound per plane size P (64, 128, 256 row codes): port 5 issues
the permutes and the unpacks only, so 64 multiply-accumulates take at least
``2 x permute + 2 x unpack`` port-5 cycles (two permutes and a blend per plane at P = 256), and
compares it with fp32 ``torch.mm`` measured in the same run (one thread, CPU clock).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

# One C loop per instruction: eight independent register chains (vpaddd: one dependent chain).
_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <immintrin.h>
static double now(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
}
#define EIGHT(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7)
#define TIME(name, op, per_iter)                                                          \
  {                                                                                       \
    __m512i v0 = a, v1 = b, v2 = a, v3 = b, v4 = a, v5 = b, v6 = a, v7 = b;               \
    double s = now();                                                                     \
    for (long i = 0; i < n; ++i) {                                                        \
      __asm__ volatile(op : "+v"(v0), "+v"(v1), "+v"(v2), "+v"(v3), "+v"(v4), "+v"(v5),   \
                       "+v"(v6), "+v"(v7) : "v"(t0), "v"(t1) : "k1");                    \
    }                                                                                     \
    double e = now() - s;                                                                 \
    __m512i sum = _mm512_add_epi32(_mm512_add_epi32(v0, v1), _mm512_add_epi32(v2, v3));   \
    sum = _mm512_add_epi32(sum, _mm512_add_epi32(_mm512_add_epi32(v4, v5),                \
                                                  _mm512_add_epi32(v6, v7)));             \
    printf("%s %.6f %d\n", name, e / (n * (double)per_iter) * 1e9,                        \
           _mm512_reduce_add_epi32(sum) & 1);                                            \
  }
#define PERMB(i) "vpermb %9, %" #i ", %" #i "\n\t"
#define PERMI2B(i) "vpermi2b %9, %8, %" #i "\n\t"
#define UNPACK(i) "vpunpcklbw %9, %8, %" #i "\n\t"
#define DPWSSD(i) "vpdpwssd %9, %8, %" #i "\n\t"
#define BLEND(i) "vpblendmb %9, %8, %" #i "%{%%k1%}\n\t"
#define ADD1(i) "vpaddd %9, %0, %0\n\t"
int main(int argc, char** argv) {
  long n = atol(argv[1]);
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
  __m512i t0 = _mm512_set1_epi8(1), t1 = _mm512_set1_epi8(2);
  TIME("vpaddd_chain", EIGHT(ADD1), 8)
  TIME("vpermb", EIGHT(PERMB), 8)
  TIME("vpermi2b", EIGHT(PERMI2B), 8)
  TIME("vpunpcklbw", EIGHT(UNPACK), 8)
  TIME("vpdpwssd", EIGHT(DPWSSD), 8)
  TIME("vpblendmb", "kxnorq %%k1, %%k1, %%k1\n\t" EIGHT(BLEND), 8)
  return 0;
}
"""

_FLAGS = ["-O2", "-mavx512f", "-mavx512bw", "-mavx512vbmi", "-mavx512vnni"]


def compiler() -> str:
    """The C compiler to build the probe with (``cc``, ``gcc`` or ``clang``)."""
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("port_rates: needs a C compiler (cc, gcc or clang) on PATH")


def probe_medians(program: str, flags: list[str], argument: int) -> dict[str, float]:
    """Compile the C ``program`` with ``flags``, run it three times with ``argument`` and return,
    per name (the first field of each output line), the median of the second field."""
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = Path(tmp) / "probe.c", Path(tmp) / "probe"
        source.write_text(program)
        subprocess.run([compiler(), *flags, str(source), "-o", str(binary)], check=True)
        runs: dict[str, list[float]] = {}
        for _ in range(3):
            out = subprocess.run(
                [str(binary), str(argument)], check=True, capture_output=True, text=True
            ).stdout
            for line in out.splitlines():
                name, value = line.split()[:2]
                runs.setdefault(name, []).append(float(value))
    return {name: sorted(values)[1] for name, values in runs.items()}


def instruction_ns(iterations: int) -> dict[str, float]:
    """Nanoseconds per instruction of each probe (median of three runs of the program)."""
    return probe_medians(_PROGRAM, _FLAGS, iterations)


def mm_gmacs(m: int = 4096, k: int = 1152, n: int = 128, repeats: int = 7) -> float:
    """fp32 ``torch.mm`` G-MAC per CPU-second on one thread (median of ``repeats``)."""
    torch.set_num_threads(1)
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b)
        times.append(time.process_time() - start)
    return m * k * n / sorted(times)[repeats // 2] / 1e9


def bounds(cycles: dict[str, float], ghz: float) -> dict[int, float]:
    """The forward's port-5 bound in G-LUT-MAC/s per plane size P (64 codes per lookup)."""
    unpacks = 2 * cycles["vpunpcklbw"]
    port5 = {
        64: 2 * cycles["vpermb"] + unpacks,
        128: 2 * cycles["vpermi2b"] + unpacks,
        256: 4 * cycles["vpermi2b"] + unpacks,
    }
    return {p: 64 / c * ghz for p, c in port5.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100_000_000)
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.iterations < 1000:
        p.error(f"--iterations must be at least 1000 (fewer time nothing), got {args.iterations}")
    ns = instruction_ns(args.iterations)
    cycle_ns = ns["vpaddd_chain"]
    ghz = 1 / cycle_ns
    cycles = {name: value / cycle_ns for name, value in ns.items() if name != "vpaddd_chain"}
    print(f"clock from a dependent vpaddd chain: {ghz:.2f} GHz")
    print("| instruction | ns | cycles (throughput) |\n|---|---|---|")
    for name, value in cycles.items():
        print(f"| `{name}` | {ns[name]:.3f} | {value:.2f} |")
    mm = mm_gmacs()
    limit = bounds(cycles, ghz)
    print(f"\nfp32 torch.mm, 1 thread: {mm:.1f} G-MAC/s")
    print("| plane bytes P (row codes) | forward bound G-LUT-MAC/s | bound / torch.mm |")
    print("|---|---|---|")
    for size, value in limit.items():
        print(f"| {size} | {value:.1f} | {value / mm:.2f} |")
    if args.json:
        record = {"ghz": ghz, "ns": ns, "cycles": cycles, "mm_gmacs": mm, "bound_gmacs": limit}
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
