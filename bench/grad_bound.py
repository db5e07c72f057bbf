"""What bounds the LUT gradient products on the CPU: their inner loop alone, timed against
fp32 ``torch.mm``.

    python bench/grad_bound.py [--sweeps 400] [--json bound.json]

Both gradient products need one float table entry per multiply-accumulate, so the AVX-512
kernels (``cuda/lut_gemm_cpu_avx512_grad.cpp``) read one 64-byte table row (16 columns) per
FMA, chosen by a code: a code load, an address, and an FMA with a memory operand. This compiles
a small C program (a C compiler and AVX-512 F are needed) that runs that loop as the dW kernel
does (8 accumulating k per row of G, 2 rows in flight, G rows streamed) and times it

* with the table rows drawn at random from tables of 4 KB (in L1) up to 1 MB (in L2), the
  working sets of the kernels' per-k tables (at 8 bits, 256 rows: 16 KB per k and 16 columns
  for dW, 64 KB per k for dA over 64 columns, 32 KB with the 128 rows a ReLU leaves; 1 MB for a
  dA group);
* with every code 0 (the same code loads and addresses, the rows always in L1);
* without codes (the same table-row loads and FMAs at fixed offsets: what the loop costs
  without the code loads and addresses),

and prints G-MAC/s and the ratio to fp32 ``torch.mm`` measured in the same run (one thread,
CPU clock), so a reader can see how far a table-row kernel can go on this machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from port_rates import mm_gmacs, probe_medians

# R = 8 accumulating k per row of G, U = 2 rows in flight (grad_w_tile<8, 2>); tables [rows][8]
# of 64-byte rows; codes uint16 so that tables past 256 rows (the working set of several k)
# can be drawn.
_PROGRAM = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
enum { R = 8, ROWS = 2048 };
static double now(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
}
#define LOOP(LOOKUP)                                                                         \
  for (long s = 0; s < sweeps; ++s) {                                                        \
    __asm__ volatile("" ::: "memory");                                                       \
    for (int m = 0; m < ROWS; m += 2) {                                                      \
      __asm__ volatile("" : "+r"(tab)); /* FIXED: the rows stay loads, not registers */     \
      const __m512 g0 = _mm512_load_ps(g + m * 16), g1 = _mm512_load_ps(g + m * 16 + 16);   \
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                                  \
        acc[r] = _mm512_fmadd_ps(g0, LOOKUP(m, r), acc[r]);                                  \
        acc[R + r] = _mm512_fmadd_ps(g1, LOOKUP(m + 1, r), acc[R + r]);                      \
      }                                                                                      \
    }                                                                                        \
  }
#define CODED(m, r) _mm512_load_ps(tab + ((long)codes[(m) * R + (r)] * R + (r)) * 16)
#define FIXED(m, r) _mm512_load_ps(tab + (((m) & 1) * R + (r)) * 16)
// One timed function per lookup: the sweeps' seconds; the accumulators' sum goes to out.
#define TIMED(name, LOOKUP)                                                                   \
  __attribute__((noinline)) static double name(const float* g, const uint16_t* codes,         \
                                               const float* tab, long sweeps, float* out) {   \
    __m512 acc[2 * R];                                                                       \
    for (int r = 0; r < 2 * R; ++r) acc[r] = _mm512_setzero_ps();                            \
    double t = now();                                                                        \
    LOOP(LOOKUP)                                                                             \
    t = now() - t;                                                                           \
    for (int r = 1; r < 2 * R; ++r) acc[0] = _mm512_add_ps(acc[0], acc[r]);                  \
    _mm512_storeu_ps(out, acc[0]);                                                           \
    return t;                                                                                \
  }
TIMED(coded, CODED)
TIMED(fixed, FIXED)
int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const long sweeps = atol(argv[1]);
  const long sizes[] = {4096, 16384, 32768, 131072, 1048576};  // table bytes
  float* g = aligned_alloc(64, ROWS * 64);
  uint16_t* codes = aligned_alloc(64, ROWS * R * 2);
  float* tab = aligned_alloc(64, 1048576);
  float out[16], check = 0;
  for (int i = 0; i < ROWS * 16; ++i) g[i] = 1e-3f * (i % 7);
  for (int i = 0; i < 1048576 / 4; ++i) tab[i] = 1e-3f * (i % 5);
  srand(1);
  const double macs = (double)sweeps * ROWS * R * 16;
  for (int i = 0; i < 5; ++i) {
    const long rows = sizes[i] / (R * 64);
    for (int j = 0; j < ROWS * R; ++j) codes[j] = rand() % rows;
    coded(g, codes, tab, 1, out);
    printf("random_%ld %.3f\n", sizes[i], macs / coded(g, codes, tab, sweeps, out) / 1e9);
    check += out[0];
  }
  for (int j = 0; j < ROWS * R; ++j) codes[j] = 0;
  printf("code_0 %.3f\n", macs / coded(g, codes, tab, sweeps, out) / 1e9);
  printf("no_codes %.3f\n", macs / fixed(g, codes, tab, sweeps, out) / 1e9);
  check += out[0];
  fprintf(stderr, "%g\n", check);
  return 0;
}
"""

_FLAGS = ["-O3", "-mavx512f"]


def loop_gmacs(sweeps: int) -> dict[str, float]:
    """G-MAC/s of the table-row loop per case (median of three runs of the program)."""
    return probe_medians(_PROGRAM, _FLAGS, sweeps)


def describe(name: str) -> str:
    """A table row's label for a case of the program."""
    if name.startswith("random_"):
        size = int(name.split("_")[1])
        return f"random rows of a {size // 1024} KB table"
    return {"code_0": "every code 0 (same loads, rows in L1)", "no_codes": "no codes"}[name]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweeps", type=int, default=400, help="passes over 2048 rows per case")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.sweeps < 10:
        p.error(f"--sweeps must be at least 10 (fewer time nothing), got {args.sweeps}")
    rates = loop_gmacs(args.sweeps)
    mm = mm_gmacs()
    print(f"fp32 torch.mm, 1 thread: {mm:.1f} G-MAC/s")
    print("| table-row loop | G-MAC/s | / torch.mm |\n|---|---|---|")
    for name, value in rates.items():
        print(f"| {describe(name)} | {value:.1f} | {value / mm:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"mm_gmacs": mm, "loop_gmacs": rates}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
