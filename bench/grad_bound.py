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

It also times the kernels' table build (``build_quad``: 256 x 16 tables from the transposed
table, in L1) in G entries/s and turns both rates into a bound per ResNet-18 shape: a gradient
product of M rows, N columns and ``2**bits``-entry operands builds, per multiply-accumulate, at
least ``min(D(M) / M, D(N) / N)`` table entries, where ``D(x) = 2**bits * (1 - (1 -
2**-bits)**x)`` is the number of codes x uniform codes reach (the tables of a k are built over
the codes of one side for each 16 of the other, whichever side is cheaper; only the rows a
code reaches). With the builds at their L1 rate and every lookup at the loop's L1 rate, no
table-row kernel exceeds ``1 / (entries / build_rate + 1 / loop_rate)`` (reductions, packing
and L2 misses left out, so the kernels stay below it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lut_gemm import RESNET18_CIFAR
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
// The kernels' table build (build_quad in cuda/lut_gemm_cpu_avx512_grad.cpp): Tk[u][j] =
// lt[code_j][u] for 256 rows u and 16 columns j, by 4 x 4 transposes of 128-bit pieces.
static inline __m512 quarters(const float* p0, const float* p1, const float* p2,
                              const float* p3) {
  __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(p0));
  v = _mm512_insertf32x4(v, _mm_loadu_ps(p1), 1);
  v = _mm512_insertf32x4(v, _mm_loadu_ps(p2), 2);
  return _mm512_insertf32x4(v, _mm_loadu_ps(p3), 3);
}
static inline void build_quad(const float* const* src, long u, float* out) {
  __m512 in[4];
  for (int s = 0; s < 4; ++s)
    in[s] = quarters(src[s] + u, src[4 + s] + u, src[8 + s] + u, src[12 + s] + u);
  const __m512d d0 = _mm512_castps_pd(_mm512_unpacklo_ps(in[0], in[1]));
  const __m512d d1 = _mm512_castps_pd(_mm512_unpackhi_ps(in[0], in[1]));
  const __m512d d2 = _mm512_castps_pd(_mm512_unpacklo_ps(in[2], in[3]));
  const __m512d d3 = _mm512_castps_pd(_mm512_unpackhi_ps(in[2], in[3]));
  _mm512_storeu_ps(out + (u + 0) * 16, _mm512_castpd_ps(_mm512_unpacklo_pd(d0, d2)));
  _mm512_storeu_ps(out + (u + 1) * 16, _mm512_castpd_ps(_mm512_unpackhi_pd(d0, d2)));
  _mm512_storeu_ps(out + (u + 2) * 16, _mm512_castpd_ps(_mm512_unpacklo_pd(d1, d3)));
  _mm512_storeu_ps(out + (u + 3) * 16, _mm512_castpd_ps(_mm512_unpackhi_pd(d1, d3)));
}
// Seconds to build 2 k of 256 x 16 tables (32 KB, in L1) `sweeps` x 64 times; a 256 x 256
// transposed table and random codes.
__attribute__((noinline)) static double builds(const float* lt, float* tk, long sweeps) {
  const float* src[16];
  double t = now();
  for (long s = 0; s < 64 * sweeps; ++s)
    for (int k = 0; k < 2; ++k) {
      for (int j = 0; j < 16; ++j) src[j] = lt + ((s * 37 + k * 101 + j * 53) & 255) * 256;
      for (long u = 0; u < 256; u += 4) build_quad(src, u, tk + k * 4096);
      __asm__ volatile("" ::: "memory");
    }
  return now() - t;
}
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
  builds(tab, tab + 65536, 1);
  printf("build %.3f\n", 64.0 * sweeps * 2 * 4096 / builds(tab, tab + 65536, sweeps) / 1e9);
  check += tab[65536 + 4095];
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


def entries_per_mac(m: int, n: int, bits: int) -> float:
    """Table entries a gradient product of ``m`` rows and ``n`` columns with uniform
    ``bits``-bit codes builds per multiply-accumulate, at least (the cheaper side)."""
    codes = 2**bits

    def reached(x: int) -> float:
        return codes * (1.0 - (1.0 - 1.0 / codes) ** x)

    return min(reached(m) / m, reached(n) / n)


def shape_bounds(build_rate: float, loop_rate: float, bits: int) -> dict[str, float]:
    """G-MAC/s no table-row gradient kernel exceeds on each ResNet-18 shape (``fc`` left out:
    its 82 K multiply-accumulates are all call overhead): builds at ``build_rate`` G entries/s
    and lookups at ``loop_rate`` G-MAC/s, nothing else."""
    return {
        name: 1.0 / (entries_per_mac(m, n, bits) / build_rate + 1.0 / loop_rate)
        for name, m, _, n in RESNET18_CIFAR
        if name != "fc"
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweeps", type=int, default=400, help="passes over 2048 rows per case")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.sweeps < 10:
        p.error(f"--sweeps must be at least 10 (fewer time nothing), got {args.sweeps}")
    rates = loop_gmacs(args.sweeps)
    build = rates.pop("build")
    mm = mm_gmacs()
    print(f"fp32 torch.mm, 1 thread: {mm:.1f} G-MAC/s")
    print("| table-row loop | G-MAC/s | / torch.mm |\n|---|---|---|")
    for name, value in rates.items():
        print(f"| {describe(name)} | {value:.1f} | {value / mm:.2f} |")
    loop = max(rates[f"random_{size}"] for size in (4096, 16384, 32768))
    print(f"\ntable builds (256 x 16, in L1): {build:.1f} G entries/s; lookups: {loop:.1f} G-MAC/s")
    print("| shape | bits | entries / MAC | bound G-MAC/s | bound / torch.mm |")
    print("|---|---|---|---|---|")
    bounds = {}
    for bits in (7, 8):
        bounds[bits] = shape_bounds(build, loop, bits)
        for name, m, _, n in RESNET18_CIFAR[:-1]:
            value = bounds[bits][name]
            print(
                f"| {name} | {bits} | {entries_per_mac(m, n, bits):.3f} | {value:.1f} "
                f"| {value / mm:.2f} |"
            )
    if args.json:
        figures = {"mm_gmacs": mm, "loop_gmacs": rates, "build_gentries": build, "bounds": bounds}
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
