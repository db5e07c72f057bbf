// Gradient LUT-GEMM products with AVX-512 (F + BW) float FMAs ("table rows", 16-lane vectors).
//
// For a fixed k and a set of columns j, the table restricted to the column codes,
// Tk[u][j] = TBL[u][code(k, j)], is built by 4 x 4 in-lane transposes of 128-bit pieces of the
// transposed table (one load, three inserts and two shuffles per 16-entry row); where few rows
// are swept against a wide table (rows_reached: after a ReLU, ResNet-18's layer4 at batch 16),
// only for the groups of 4 rows a k's codes reach. Then
//   dA  dA[m, k]  = dot(G[m, :], Tk[a[m, k]][:])   N in chunks of up to 128 columns (a G row
//                   chunk in registers, tables of a group of k in L2), the dots of 16 (m, k)
//                   pairs reduced to one vector by a shuffle tree, chunks added up in dA;
//   dW  dW[k, tile] += G[m, tile] * Tk[a[m, k]][tile]   a 16-column tile for up to 8 k (tables
//                   in L2, or within 32 KB of L1 for sweeps under 4096 rows: 2 k at 8 bits, 4 at
//                   7, 8 at <= 6), accumulators held in
//                   registers over a sweep of up to 8192 rows of m. G is packed by tiles and the
//                   row codes by k groups first, so a sweep streams both from consecutive lines
//                   (the G tile read in place, N floats apart, ran 4x slower from L2) and each
//                   lookup is a byte load, a shift and an FMA at a constant offset.
// Every multiply-accumulate is one lane of an FMA and the table is read with one row load per
// (m, k, 16 columns): a code load, an address and an FMA, which bounds the loop at about 0.6x
// fp32 torch.mm with the tables in L1 and 0.32-0.45x from L2 (bench/grad_bound.py). dA is
// bound by those reads from L2 (a per-k table over a chunk of up to 128 columns is 16-128 KB);
// dW by the same reads and, for short sweeps (256-1024 rows at 8 bits), by building the tables
// (a 16 x n transpose per k and tile, about 2 multiply-accumulates' worth per entry). The
// binding (lut_gemm_cpu.cpp) picks the orientation; lut_grad_a_t runs dA through the dW kernel
// on the transposed product (rows over N) reading G and the codes and writing dA in place.
#if defined(__x86_64__)
#include <immintrin.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include <omp.h>

#include "lut_gemm_cpu.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vbmi,avx2,fma")
#include "lut_gemm_cpu_avx512.h"

namespace appmult_cpu_avx512 {
namespace {

using appmult_avx512::LiveTable;
using appmult_avx512::reduce16;
using appmult_avx512::slot_of;

constexpr int64_t kLanes = 16;
constexpr int64_t kRun = appmult::kDeadRun;

inline int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }
inline int64_t max64(int64_t x, int64_t y) { return x > y ? x : y; }
inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// Lanes below `count` (0..16) set.
inline __mmask16 lanes_below(int64_t count) {
  return count >= kLanes ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << count) - 1u);
}

// 128-bit pieces p[0..3] of four rows as the four quarters of one vector.
inline __m512 quarters(const float* p0, const float* p1, const float* p2, const float* p3) {
  __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(p0));
  v = _mm512_insertf32x4(v, _mm_loadu_ps(p1), 1);
  v = _mm512_insertf32x4(v, _mm_loadu_ps(p2), 2);
  return _mm512_insertf32x4(v, _mm_loadu_ps(p3), 3);
}

// The groups of 4 table rows the codes of a product's swept side reach, per (b, k): bit q for
// rows 4q .. 4q + 3 (rows_reached). A table build skips the groups no code reaches.
struct UsedRows {
  const uint64_t* quads;  // [B * K], or nullptr: every row
  uint64_t of(int64_t bk) const { return quads == nullptr ? ~0ull : quads[bk]; }
};

// out[u * ldt + j] = src[j][u] for u = 4q .. 4q + 3, j < 16: a 4 x 4 transpose within each
// 128-bit lane L of the vectors holding src[4L + s][4q .. 4q + 3] (s = 0..3).
inline void build_quad(const float* const* src, int64_t q, float* out, int64_t ldt) {
  const int64_t u = 4 * q;
  __m512 in[4];
  for (int s = 0; s < 4; ++s)
    in[s] = quarters(src[s] + u, src[4 + s] + u, src[8 + s] + u, src[12 + s] + u);
  const __m512 t0 = _mm512_unpacklo_ps(in[0], in[1]), t1 = _mm512_unpackhi_ps(in[0], in[1]);
  const __m512 t2 = _mm512_unpacklo_ps(in[2], in[3]), t3 = _mm512_unpackhi_ps(in[2], in[3]);
  const __m512d d0 = _mm512_castps_pd(t0), d1 = _mm512_castps_pd(t1);
  const __m512d d2 = _mm512_castps_pd(t2), d3 = _mm512_castps_pd(t3);
  _mm512_storeu_ps(out + (u + 0) * ldt, _mm512_castpd_ps(_mm512_unpacklo_pd(d0, d2)));
  _mm512_storeu_ps(out + (u + 1) * ldt, _mm512_castpd_ps(_mm512_unpackhi_pd(d0, d2)));
  _mm512_storeu_ps(out + (u + 2) * ldt, _mm512_castpd_ps(_mm512_unpacklo_pd(d1, d3)));
  _mm512_storeu_ps(out + (u + 3) * ldt, _mm512_castpd_ps(_mm512_unpackhi_pd(d1, d3)));
}

// The groups of 4 rows of a table of n rows (a multiple of 4, at most 256) as a bit mask.
inline uint64_t all_quads(int64_t n) { return n >= 256 ? ~0ull : (1ull << (n / 4)) - 1; }

// Table rows a build takes for a table of n rows: 4 per group in `quads`.
inline int64_t built_rows(uint64_t quads, int64_t n) {
  return 4 * __builtin_popcountll(quads & all_quads(n));
}

// Tk[u * ldt + j] = TBL[u][code[j * sj]] for j < ncols, 0 for ncols <= j < width (width a
// multiple of 16, at most ldt), from lt, the transposed table (lt[v * n + u] = TBL[u][v]);
// `zero` holds n zeros. Only the groups of 4 rows in `quads` are built (UsedRows); the other
// rows are left as they are, as no code of the product reads them.
void build_tables(const float* lt, int64_t n, const uint8_t* code, int64_t sj, int64_t ncols,
                  int64_t width, const float* zero, float* tk, int64_t ldt, uint64_t quads) {
  quads &= all_quads(n);
  for (int64_t j0 = 0; j0 < width; j0 += kLanes) {
    const float* src[kLanes];
    for (int64_t j = 0; j < kLanes; ++j)
      src[j] = j0 + j < ncols ? lt + static_cast<int64_t>(code[(j0 + j) * sj]) * n : zero;
    for (uint64_t q = quads; q != 0; q &= q - 1) build_quad(src, __builtin_ctzll(q), tk + j0, ldt);
  }
}

// `bytes` (rounded up to 64) of 64-byte aligned memory; std::bad_alloc (a Python MemoryError)
// when there is none.
template <typename T>
T* allocate(int64_t bytes) {
  void* p = aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<T*>(p);
}

// Scratch of every thread of a parallel region, allocated before it (so a failed allocation
// throws outside the region): per thread `table_floats` floats of tables and n zeros, 64-byte
// aligned; the tables zeroed too where a kernel reads tables it did not build (dW: the k past
// K that pad the last group).
struct Scratch {
  float* pool;
  int64_t table_floats, stride;
  Scratch(int nthreads, int64_t table_floats, int64_t n, bool zero_tables)
      : table_floats(table_floats), stride((table_floats + n + 15) / 16 * 16) {
    pool = allocate<float>(nthreads * stride * 4);
    for (int t = 0; t < nthreads; ++t) {
      if (zero_tables) memset(tables(t), 0, table_floats * 4);
      memset(zero(t), 0, n * 4);
    }
  }
  ~Scratch() { free(pool); }
  float* tables(int thread) const { return pool + thread * stride; }
  float* zero(int thread) const { return tables(thread) + table_floats; }
};

// ---------------------------------------------------------------- dA

// Operands of one dA task: G rows (a chunk of N columns of them), codes, and the tables of the
// k-group starting at k0 restricted to the chunk.
struct GradA {
  const float* g;    // [M][ldg] rows of G, offset to the chunk's first column
  const uint8_t* a;  // [M, K] codes
  const float* tab;  // [kc][n][16 NV] tables of k0 .. k0 + kc - 1
  float* da;         // [M, K]
  int64_t M, K, N, ldg, n, k0;  // N: columns of the chunk
  bool add;          // add to da (a later chunk) or store
  const uint8_t* dead;  // [M, R] flags of the runs of 16 k left 0 (no dots), or null
  int64_t R;            // runs per row: ceil(K / 16)
  // Whether row m's run holding k (of the group) is left out; a block of k never straddles
  // runs (lut_grad_a aligns the groups).
  bool skipped(int64_t m, int64_t kk) const {
    return dead != nullptr && dead[m * R + (k0 + kk) / kRun] != 0;
  }
};

// One block of 16 dots: rows m0 .. m0 + 16/KK - 1 times k = kk0 .. kk0 + KK - 1 (relative to
// the group), lane i = (m0 + i / KK, kk0 + i % KK). The chunk's N columns fill NV vectors and
// each G row chunk is held in registers.
template <int KK, int NV>
inline void dot_block(const GradA& p, int64_t m0, int64_t kk0, __m512* acc) {
  constexpr int MM = 16 / KK;
  constexpr int64_t ldt = NV * kLanes;
  const __mmask16 tail = lanes_below(p.N - (NV - 1) * kLanes);
  const float* tab = p.tab + kk0 * p.n * ldt;
#pragma GCC unroll 16
  for (int mm = 0; mm < MM; ++mm) {
    const int64_t m = min64(m0 + mm, p.M - 1);
    const float* gm = p.g + m * p.ldg;
    const uint8_t* am = p.a + m * p.K + p.k0 + kk0;
    __m512 gv[NV];
    for (int c = 0; c < NV; ++c)
      gv[c] = c + 1 < NV ? _mm512_loadu_ps(gm + c * kLanes)
                         : _mm512_maskz_loadu_ps(tail, gm + c * kLanes);
#pragma GCC unroll 16
    for (int kk = 0; kk < KK; ++kk) {
      const float* row = tab + (kk * p.n + am[kk]) * ldt;
      __m512 s0 = _mm512_mul_ps(gv[0], _mm512_load_ps(row)), s1 = _mm512_setzero_ps();
      if (NV > 1) s1 = _mm512_mul_ps(gv[1], _mm512_load_ps(row + 16));
#pragma GCC unroll 8
      for (int c = 2; c < NV; c += 2) {
        s0 = _mm512_fmadd_ps(gv[c], _mm512_load_ps(row + c * 16), s0);
        if (c + 1 < NV) s1 = _mm512_fmadd_ps(gv[c + 1], _mm512_load_ps(row + c * 16 + 16), s1);
      }
      acc[slot_of(mm * KK + kk)] = _mm512_add_ps(s0, s1);
    }
  }
}

// dA[m, k0 + kk0 + kk] for the rows m0 .. m0 + 15 and KK k of the group (kc of which are real).
// Rows whose run holding the block is flagged dead take no dots (a block of 16 k: the whole
// block is skipped) and keep 0 in every chunk.
template <int KK, int NV>
void dots_for_rows(const GradA& p, int64_t m0, int64_t kk0, int64_t kc) {
  constexpr int MM = 16 / KK;
  for (int64_t mb = m0; mb < m0 + 16 && mb < p.M; mb += MM) {
    float* out = p.da + mb * p.K + p.k0 + kk0;
    if (KK == 16 && p.skipped(mb, kk0)) {
      if (!p.add) _mm512_mask_storeu_ps(out, lanes_below(kc), _mm512_setzero_ps());
      continue;
    }
    __m512 acc[16];
    dot_block<KK, NV>(p, mb, kk0, acc);
    const __m512 sums = reduce16(acc);
    if (KK == 16) {
      const __mmask16 real = lanes_below(kc);
      _mm512_mask_storeu_ps(out, real,
                            p.add ? _mm512_add_ps(sums, _mm512_maskz_loadu_ps(real, out)) : sums);
    } else {
      alignas(64) float buf[16];
      _mm512_store_ps(buf, sums);
      for (int mm = 0; mm < MM && mb + mm < p.M; ++mm) {
        const bool zero = p.skipped(mb + mm, kk0);
        for (int64_t kk = 0; kk < kc; ++kk) {
          float& o = out[mm * p.K + kk];
          o = zero ? 0.0f : p.add ? o + buf[mm * KK + kk] : buf[mm * KK + kk];
        }
      }
    }
  }
}

// The k of a group in chunks of 16, then 8, 4, 2, 1 (the binary digits of the remainder).
template <int NV>
void grad_a_rows(const GradA& p, int64_t kc, int64_t m0, int64_t m1) {
  for (int64_t m = m0; m < m1; m += 16) {
    GradA q = p;
    q.M = m1;
    int64_t kk = 0;
    for (; kk + 16 <= kc; kk += 16) dots_for_rows<16, NV>(q, m, kk, 16);
    if (kc - kk >= 8) dots_for_rows<8, NV>(q, m, kk, 8), kk += 8;
    if (kc - kk >= 4) dots_for_rows<4, NV>(q, m, kk, 4), kk += 4;
    if (kc - kk >= 2) dots_for_rows<2, NV>(q, m, kk, 2), kk += 2;
    if (kc - kk >= 1) dots_for_rows<1, NV>(q, m, kk, 1);
  }
}

using RowsFn = void (*)(const GradA&, int64_t, int64_t, int64_t);

// The rows kernel for a chunk of nv (1..8) vectors.
RowsFn rows_fn(int64_t nv) {
  switch (nv) {
    case 1: return grad_a_rows<1>;
    case 2: return grad_a_rows<2>;
    case 3: return grad_a_rows<3>;
    case 4: return grad_a_rows<4>;
    case 5: return grad_a_rows<5>;
    case 6: return grad_a_rows<6>;
    case 7: return grad_a_rows<7>;
    default: return grad_a_rows<8>;
  }
}

}  // namespace

// Rows swept per table row below which the binding finds the rows in use before the tables
// are built: the builds (a table row per k and 16 columns) then weigh as much as the sweeps,
// and after a ReLU most k reach few codes (ResNet-18 at batch 16, 8 bits: 256-1024 rows of
// 128).
constexpr int64_t kUsedRowsScan = 16;

RowsReached rows_reached(const uint8_t* a, int64_t sb, int64_t sm, int64_t sk, int64_t B,
                         int64_t M, int64_t K, int64_t n, int nthreads) {
  RowsReached out;
  out.built = static_cast<double>(n);
  if (M >= kUsedRowsScan * n || B * K == 0) return out;
  constexpr int64_t kBlock = 64;
  out.quads.assign(B * K, 0);
  const int64_t blocks = ceil_div(K, kBlock);
  uint8_t* const flags = allocate<uint8_t>(nthreads * kBlock * 256);
#pragma omp parallel num_threads(nthreads)
  {
    uint8_t* const seen = flags + omp_get_thread_num() * kBlock * 256;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < B * blocks; ++blk) {
      const int64_t b = blk / blocks, k0 = blk % blocks * kBlock, kc = min64(kBlock, K - k0);
      memset(seen, 0, kBlock * 256);
      for (int64_t m = 0; m < M; ++m) {
        const uint8_t* row = a + b * sb + m * sm + k0 * sk;
        for (int64_t k = 0; k < kc; ++k) seen[k * 256 + row[k * sk]] = 1;
      }
      for (int64_t k = 0; k < kc; ++k) {  // a group's 4 flag bytes as one 32-bit word
        const uint32_t* words = reinterpret_cast<const uint32_t*>(seen + k * 256);
        uint64_t quads = 0;
        for (int q = 0; q < 64; ++q) quads |= static_cast<uint64_t>(words[q] != 0) << q;
        out.quads[b * K + k0 + k] = quads;
      }
    }
  }
  free(flags);
  int64_t built = 0;
  for (const uint64_t quads : out.quads) built += built_rows(quads, n);
  out.built = static_cast<double>(built) / static_cast<double>(B * K);
  return out;
}

constexpr int64_t kChunk = 8 * kLanes;  // columns per pass: a chunk of a G row fits 8 registers

// da [B, M, K] = SUM_n g * GA[a, w] for g [B, M, N]; lt = GA^T; reached: the rows a's codes
// reach per (b, k), or null (every row is built). N is taken in
// chunks of up to 128 columns (so a G row chunk stays in registers across the k of a group, and
// more k share the budget than with whole rows when N > 128; the partial dots add up in da).
// Tables of a group of k cover one chunk and stay within `budget` bytes (L2); each task sweeps
// its rows once per group and chunk.
void lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const float* lt, int64_t n,
                int64_t B, int64_t M, int64_t K, int64_t N, float* da, int nthreads,
                int64_t budget, const uint64_t* reached, const uint8_t* dead) {
  const UsedRows used = {reached};
  const int64_t ldt = kLanes * ceil_div(min64(N, kChunk), kLanes), tsz = n * ldt;
  int64_t kg = min64(K, max64(1, budget / (tsz * 4)));
  // With dead runs, groups start at multiples of 16 (or of a power of two below 16), so that
  // the blocks of 16, 8, .. 1 k a group splits into never straddle runs.
  if (dead != nullptr && kg < K) kg = kg >= kRun ? kg / kRun * kRun : 1 << (63 - __builtin_clzll(kg));
  const int64_t R = ceil_div(K, kRun);
  const int64_t groups = ceil_div(K, kg);
  // Split M when there are too few groups to balance the threads (each part builds the tables).
  const int64_t mchunks = max64(1, min64(ceil_div(4 * nthreads, groups * B), M / 1024));
  const int64_t mstep = kLanes * ceil_div(ceil_div(M, mchunks), kLanes);
  const int64_t ntasks = B * groups * mchunks;
  const Scratch scratch(nthreads, kg * tsz, n, false);
#pragma omp parallel num_threads(nthreads)
  {
    float* const tables = scratch.tables(omp_get_thread_num());
    const float* const zero = scratch.zero(omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / (groups * mchunks), rest = task % (groups * mchunks);
      const int64_t k0 = (rest / mchunks) * kg, m0 = (rest % mchunks) * mstep;
      const int64_t kc = min64(kg, K - k0), m1 = min64(M, m0 + mstep);
      if (m0 >= m1) continue;
      for (int64_t c0 = 0; c0 < N; c0 += kChunk) {
        const int64_t nc = min64(kChunk, N - c0), width = kLanes * ceil_div(nc, kLanes);
        for (int64_t kk = 0; kk < kc; ++kk)
          build_tables(lt, n, w + (b * K + k0 + kk) * N + c0, 1, nc, width, zero,
                       tables + kk * n * width, width, used.of(b * K + k0 + kk));
        const GradA p = {g + b * M * N + c0, a + b * M * K, tables, da + b * M * K,
                         M, K, nc, N, n, k0, c0 > 0,
                         dead == nullptr ? nullptr : dead + b * M * R, R};
        rows_fn(width / kLanes)(p, kc, m0, m1);
      }
    }
  }
}

// ---------------------------------------------------------------- dW

namespace {

// Rows per block of packed row codes (pack_codes); sweeps start at multiples of it.
constexpr int64_t kCodeBlock = 256;

// Operands of one dW sweep: a 16-column tile of G and dW, codes by row, tables of R k from k0.
// Where `live` is set, a block of kCodeBlock rows holds only its live[block] rows whose codes
// reach a table row that is not all zero (pack_codes), at their offsets `offs` in the block.
struct GradW {
  const float* g;         // [rows][16] packed tile of G, from the sweep's first row
  const uint8_t* codes;   // [rows][R] row codes of the R k, from the sweep's first row
  const uint16_t* live;   // live rows per block of the sweep, or nullptr: every row
  const uint8_t* offs;    // [rows] offsets of the live rows in their block
  const float* tab;       // [n][R][16] tables, interleaved by k
  float* dw;              // dw[k * ok + j * oj], offset to the tile
  int64_t rows, k0, ok, oj;
  __mmask16 cols;  // real columns of the tile
  bool add;        // add to dw (else store)
};

// dw[k0 + r, tile] (+)= SUM_m g[m, tile] * Tk[code(m, r)] for r < R (rc of which are real), U
// rows of m per step so that U * R accumulators hide the FMA latency. A row's R codes are one
// run of bytes and its R table rows sit R lines apart from a common base, so each lookup is a
// byte load, a shift and an FMA with a memory operand at a constant offset. A block with rows
// left out reads each live row's G line at its offset.
template <int R, int U>
void grad_w_tile(const GradW& p, int64_t rc) {
  __m512 acc[U][R];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u) acc[u][r] = _mm512_setzero_ps();
  // acc[u] += G line `gl` times the table rows of the R codes at `c`.
  const auto step = [&](int u, const float* gl, const uint8_t* c) {
    const __m512 gv = _mm512_load_ps(gl);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      acc[u][r] = _mm512_fmadd_ps(
          gv, _mm512_load_ps(p.tab + (static_cast<int64_t>(c[r]) * R + r) * kLanes), acc[u][r]);
  };
  for (int64_t s = 0; s < p.rows; s += kCodeBlock) {
    const int64_t len = min64(kCodeBlock, p.rows - s);
    const float* g = p.g + s * kLanes;
    const uint8_t* codes = p.codes + s * R;
    const int64_t live = p.live == nullptr ? len : p.live[s / kCodeBlock];
    int64_t i = 0;
    if (live == len) {
      for (; i + U <= len; i += U)
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) step(u, g + (i + u) * kLanes, codes + (i + u) * R);
      for (; i < len; ++i) step(0, g + i * kLanes, codes + i * R);
    } else {
      const uint8_t* offs = p.offs + s;
      for (; i + U <= live; i += U)
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) step(u, g + offs[i + u] * kLanes, codes + (i + u) * R);
      for (; i < live; ++i) step(0, g + offs[i] * kLanes, codes + i * R);
    }
  }
  for (int r = 0; r < rc; ++r) {
    for (int u = 1; u < U; ++u) acc[0][r] = _mm512_add_ps(acc[0][r], acc[u][r]);
    float* out = p.dw + (p.k0 + r) * p.ok;
    if (p.oj == 1) {
      if (p.add) acc[0][r] = _mm512_add_ps(acc[0][r], _mm512_maskz_loadu_ps(p.cols, out));
      _mm512_mask_storeu_ps(out, p.cols, acc[0][r]);
    } else {  // a column of the transposed result
      alignas(64) float buf[kLanes];
      _mm512_store_ps(buf, acc[0][r]);
      for (int j = 0; j < kLanes && ((p.cols >> j) & 1); ++j)
        out[j * p.oj] = p.add ? out[j * p.oj] + buf[j] : buf[j];
    }
  }
}

using TileFn = void (*)(const GradW&, int64_t);

constexpr int64_t kShortSweep = 4096;       // rows below which a sweep keeps its tables in L1
constexpr int64_t kShortBudget = 32 << 10;  // bytes of tables in L1 (a 48 KB L1d)

// k per sweep of `rows` rows: at most 8, tables (R * n * 16 floats) within `budget` bytes, or
// within L1 for a short sweep, which cannot amortise L2 misses on its tables. Measured on
// Sapphire Rapids (1 thread, 8 bits): 4096+ rows run best with 8 k (128 KB, in L2), 256-1024
// rows with 2 (32 KB, in L1): 1.1-1.4x the speed of 16 k there.
int64_t tile_k(int64_t n, int64_t budget, int64_t rows) {
  const int64_t bytes = rows < kShortSweep ? min64(budget, kShortBudget) : budget;
  const int64_t r = bytes / (n * kLanes * 4);
  return r >= 8 ? 8 : r >= 4 ? 4 : 2;  // n <= 256: 32 KB always holds 2
}

TileFn tile_fn(int64_t r) {
  switch (r) {
    case 8: return grad_w_tile<8, 2>;
    case 4: return grad_w_tile<4, 2>;
    default: return grad_w_tile<2, 4>;
  }
}

// o[m * W .. m * W + W) = s[m * sm .. m * sm + W) for m0 <= m < m1.
template <int64_t W>
inline void copy_runs(const uint8_t* s, int64_t sm, int64_t m0, int64_t m1, uint8_t* o) {
  for (int64_t m = m0; m < m1; ++m) memcpy(o + m * W, s + m * sm, W);
}

// Rows (of R bytes each) among the 64 / R whose bytes hold a nonzero flag.
template <int R>
inline uint64_t rows_with_flags(__m512i flags) {
  if constexpr (R == 8) return _mm512_test_epi64_mask(flags, flags);
  else if constexpr (R == 4) return _mm512_test_epi32_mask(flags, flags);
  else return _mm512_test_epi16_mask(flags, flags);
}

// Drops the rows of a packed block (`rows` rows of R codes at o) whose kc real codes (the others
// pad K; their sums are never stored) all reach all-zero table rows (their products add only
// zeros): the live rows move to the front, in order, and
// offs[i] = the block offset of the i-th; returns their count. A block with fewer than one row
// in kDropAtLeast to drop is left whole (returns `rows`): reading G through the offsets would
// cost more than the rows save.
constexpr int64_t kDropAtLeast = 8;

template <int R>
int64_t keep_live_rows(uint8_t* o, int64_t rows, int64_t kc, const LiveTable& lt,
                       uint8_t* offs) {
  constexpr int64_t per = 64 / R;  // rows per vector
  uint64_t sets[kCodeBlock / per];  // the live rows of each vector
  uint64_t real = 0;  // the bytes of the kc real codes of each row (the others pad K)
  for (int64_t p = 0; p < 64; ++p) real |= static_cast<uint64_t>(p % R < kc) << p;
  int64_t live = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += per) {
    const int64_t n = min64(per, rows - r0);
    const __mmask64 bytes = real & (n * R >= 64 ? ~0ull : (1ull << (n * R)) - 1);
    const __m512i flags =
        _mm512_maskz_mov_epi8(bytes, lt.live_bytes(_mm512_maskz_loadu_epi8(bytes, o + r0 * R)));
    sets[r0 / per] = rows_with_flags<R>(flags);  // rows past `rows` have no flag
    live += __builtin_popcountll(sets[r0 / per]);
  }
  if ((rows - live) * kDropAtLeast < rows) return rows;
  int64_t kept = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += per)
    for (uint64_t set = sets[r0 / per]; set != 0; set &= set - 1) {
      const int64_t r = r0 + __builtin_ctzll(set);
      if (kept != r) memcpy(o + kept * R, o + r * R, R);  // kept <= r: unread rows stay intact
      offs[kept++] = static_cast<uint8_t>(r);
    }
  return kept;
}

// Row codes by groups of R k (2, 4 or 8): out[b][k / R][m][k % R] = src[b * sb + m * sm +
// k * sk] (0 for the k past K that pad the last group), in blocks of kCodeBlock rows. Where
// `dead` (256 flags: the table rows that are all zero) is given, each block keeps only its live
// rows (keep_live_rows): live[(b * groups + k / R) * blocks + block] of them, their offsets in
// offs[b][k / R][m]. Returns the number of blocks that left rows out.
int64_t pack_codes(const uint8_t* src, int64_t sb, int64_t sm, int64_t sk, int64_t B, int64_t M,
                   int64_t K, int64_t R, uint8_t* out, const uint8_t* dead, uint16_t* live,
                   uint8_t* offs, int nthreads) {
  constexpr int64_t T = kCodeBlock;
  const int64_t groups = ceil_div(K, R), mb = ceil_div(M, T);
  const LiveTable table(dead);
  int64_t compacted = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : compacted)
  for (int64_t blk = 0; blk < B * groups * mb; ++blk) {
    const int64_t b = blk / (groups * mb), grp = blk / mb % groups, m0 = blk % mb * T;
    const int64_t m1 = min64(M, m0 + T), k0 = grp * R, kc = min64(R, K - k0);
    const uint8_t* s = src + b * sb + k0 * sk;
    uint8_t* o = out + ((b * groups + grp) * M) * R;
    if (kc < R) memset(o + m0 * R, 0, (m1 - m0) * R);
    if (sk == 1 && kc == R) {  // one fixed-size move per row (a memcpy call each took longer)
      if (R == 8) copy_runs<8>(s, sm, m0, m1, o);
      else if (R == 4) copy_runs<4>(s, sm, m0, m1, o);
      else copy_runs<2>(s, sm, m0, m1, o);
    } else if (sk == 1) {
      for (int64_t m = m0; m < m1; ++m) memcpy(o + m * R, s + m * sm, kc);
    } else {
      for (int64_t r = 0; r < kc; ++r)
        for (int64_t m = m0; m < m1; ++m) o[m * R + r] = s[m * sm + r * sk];
    }
    if (dead == nullptr) continue;
    uint8_t* const block = o + m0 * R;
    uint8_t* const at = offs + (b * groups + grp) * M + m0;
    const int64_t kept = R == 8   ? keep_live_rows<8>(block, m1 - m0, kc, table, at)
                         : R == 4 ? keep_live_rows<4>(block, m1 - m0, kc, table, at)
                                  : keep_live_rows<2>(block, m1 - m0, kc, table, at);
    live[blk] = static_cast<uint16_t>(kept);
    compacted += kept < m1 - m0 ? 1 : 0;
  }
  return compacted;
}

// gp[b][t][r][j] = g[b * sb + r * sr + (16 t + j) * sc] for rows r < M and columns 16 t + j < N
// (zero past N): G by 16-column tiles, rows read in place (sc == 1) or across (sr == 1).
// With `check`, returns whether every entry of G is finite (else true): x * 0 is 0 for finite x
// and NaN for NaN and inf, so a sum of them stays 0 unless one is met; read in place, the sum
// rides on the copy.
bool pack_tiles(const float* g, int64_t sb, int64_t sr, int64_t sc, int64_t B, int64_t M,
                int64_t N, float* gp, bool check, int nthreads) {
  const int64_t tiles = ceil_div(N, kLanes);
  bool finite = true;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(&& : finite)
  for (int64_t bt = 0; bt < B * tiles; ++bt) {
    const int64_t b = bt / tiles, t = bt % tiles, ncols = min64(kLanes, N - t * kLanes);
    const float* src = g + b * sb + t * kLanes * sc;
    float* dst = gp + bt * M * kLanes;
    const __m512 zero = _mm512_setzero_ps();
    __m512 nan = zero;
    if (sc == 1) {
      for (int64_t r = 0; r < M; ++r) {
        const __m512 v = _mm512_maskz_loadu_ps(lanes_below(ncols), src + r * sr);
        _mm512_store_ps(dst + r * kLanes, v);
        if (check) nan = _mm512_fmadd_ps(v, zero, nan);
      }
    } else {
      memset(dst, 0, M * kLanes * 4);
      for (int64_t j = 0; j < ncols; ++j)
        for (int64_t r = 0; r < M; ++r) dst[r * kLanes + j] = src[j * sc + r * sr];
      if (check)
        for (int64_t r = 0; r < M; ++r)
          nan = _mm512_fmadd_ps(_mm512_load_ps(dst + r * kLanes), zero, nan);
    }
    finite = finite && _mm512_cmp_ps_mask(nan, nan, _CMP_UNORD_Q) == 0;
  }
  return finite;
}

std::atomic<int64_t> g_compacted_blocks{0};  // compacted_blocks()

constexpr int64_t kRowBlock = 8192;  // rows per sweep: their G tile lines (512 KB) stay in L2
constexpr int64_t kTaskK = 64;       // k per task: sweeps of one row block share its G tile

// Operands of the dW kernel: G [B][M][N], the row codes (a[b][m][k] at b * sb + m * sm + k *
// sk), the column codes and the output.
struct GradWArgs {
  const float* g;    // g of row m, column j: g[b * sgb + m * sgm + j * sgj]
  const uint8_t* a;  // code of row m at k: a[b * sab + m * sam + k * sak]
  const uint8_t* w;  // code of column j at k: w[b * sb + k * sk + j * sj]
  float* dw;         // dw[b * ob + k * ok + j * oj]
  int64_t sgb, sgm, sgj, sab, sam, sak, sb, sk, sj, ob, ok, oj;
};

// dw [B, K, N] = SUM_m g * GW[a, w]; lt = GW^T. G is packed by 16-column tiles and the row codes
// by groups of R k (both then stream from consecutive lines). A task takes a tile and kTaskK k;
// per block of rows it sweeps groups of R k (tile_k). Where `dead` flags all-zero table rows and
// G is finite, the rows whose R codes all reach such rows are left out of the sweeps: their
// terms are all +-0. The other terms are summed as before but in other accumulators (the kept
// rows shift), so the last bits can differ, as between orientations, and a sum of nothing but
// underflowed negative terms can come out -0 where the full sweep gives +0. A NaN or inf in G
// would turn the skipped zeros into NaN, so then every row is swept.
void grad_w_impl(const GradWArgs& x, const float* lt, int64_t n, int64_t B, int64_t M, int64_t K,
                 int64_t N, int nthreads, int64_t budget, const uint64_t* reached,
                 const uint8_t* dead) {
  const UsedRows used = {reached};
  const int64_t R = tile_k(n, budget, min64(M, kRowBlock));
  const TileFn tile = tile_fn(R);
  // Fewer k per task where that leaves too few tasks to balance the threads.
  const int64_t tiles = ceil_div(N, kLanes), groups = ceil_div(K, R);
  const int64_t split = max64(1, groups / ceil_div(4 * nthreads, B * tiles));
  const int64_t kstep = R * min64(ceil_div(kTaskK, R), split);
  const int64_t chunks = ceil_div(K, kstep), ntasks = B * tiles * chunks;
  float* gp = allocate<float>(B * tiles * M * kLanes * 4);
  const bool finite =
      pack_tiles(x.g, x.sgb, x.sgm, x.sgj, B, M, N, gp, dead != nullptr, nthreads);
  uint8_t* codes = allocate<uint8_t>(B * groups * M * R);
  const bool skip = dead != nullptr && finite;
  const int64_t blocks = ceil_div(M, kCodeBlock);
  uint16_t* live = skip ? allocate<uint16_t>(B * groups * blocks * 2) : nullptr;
  uint8_t* offs = skip ? allocate<uint8_t>(B * groups * M) : nullptr;
  g_compacted_blocks += pack_codes(x.a, x.sab, x.sam, x.sak, B, M, K, R, codes,
                                   skip ? dead : nullptr, live, offs, nthreads);
  const Scratch scratch(nthreads, R * n * kLanes, n, true);
#pragma omp parallel num_threads(nthreads)
  {
    float* const tables = scratch.tables(omp_get_thread_num());
    const float* const zero = scratch.zero(omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / (tiles * chunks), rest = task % (tiles * chunks);
      const int64_t n0 = (rest / chunks) * kLanes, k1 = min64(K, (rest % chunks + 1) * kstep);
      const int64_t ncols = min64(kLanes, N - n0);
      for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
        for (int64_t k0 = (rest % chunks) * kstep; k0 < k1; k0 += R) {
          const int64_t rc = min64(R, K - k0);
          for (int64_t r = 0; r < rc; ++r)
            build_tables(lt, n, x.w + b * x.sb + (k0 + r) * x.sk + n0 * x.sj, x.sj, ncols,
                         kLanes, zero, tables + r * kLanes, R * kLanes, used.of(b * K + k0 + r));
          const int64_t grp = b * groups + k0 / R;
          const GradW p = {gp + ((b * tiles + n0 / kLanes) * M + m0) * kLanes,
                           codes + (grp * M + m0) * R,
                           skip ? live + grp * blocks + m0 / kCodeBlock : nullptr,
                           skip ? offs + grp * M + m0 : nullptr,
                           tables,
                           x.dw + b * x.ob + n0 * x.oj,
                           min64(kRowBlock, M - m0),
                           k0,
                           x.ok,
                           x.oj,
                           lanes_below(ncols),
                           m0 > 0};
          tile(p, rc);
        }
      }
    }
  }
  free(offs);
  free(live);
  free(codes);
  free(gp);
}

}  // namespace

int64_t compacted_blocks() { return g_compacted_blocks.load(); }

// dw [B, K, N] = SUM_m g * GW[a, w] for g [B, M, N]; lt = GW^T.
void lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const float* lt, int64_t n,
                int64_t B, int64_t M, int64_t K, int64_t N, float* dw, int nthreads,
                int64_t budget, const uint64_t* reached, const uint8_t* dead) {
  const GradWArgs x = {g, a, w, dw, M * N, N, 1, M * K, K, 1, K * N, N, 1, K * N, N, 1};
  grad_w_impl(x, lt, n, B, M, K, N, nthreads, budget, reached, dead);
}

// da [B, M, K] = SUM_n g * GA[a, w] through the dW kernel on the transposed product (rows over
// N, 16-column tiles over M) for g [B, M, N] read across: w holds the row codes (w[b][k][n]), a
// the column codes (stride K), and the results go to columns of da.
void lut_grad_a_t(const float* g, const uint8_t* a, const uint8_t* w, const float* ga,
                  int64_t n, int64_t B, int64_t M, int64_t K, int64_t N, float* da,
                  int nthreads, int64_t budget, const uint64_t* reached, const uint8_t* dead) {
  const GradWArgs x = {g, w, a, da, M * N, 1, N, K * N, 1, N, M * K, 1, K, M * K, 1, K};
  grad_w_impl(x, ga, n, B, N, K, M, nthreads, budget, reached, dead);
}

}  // namespace appmult_cpu_avx512

#pragma GCC pop_options
#endif
