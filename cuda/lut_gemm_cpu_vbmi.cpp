// Forward LUT-GEMM with AVX-512 VBMI byte permutes and VNNI word dot products.
//
// For a fixed column code v = w[k, n], the table column T[:, v] (16-bit entries, split into a
// low-byte and a high-byte plane of P = 64, 128 or 256 bytes each) fits in 2 (<= 64 row codes),
// 4 (<= 128) or 8 (<= 256) zmm registers. Byte permutes then look up 64 activation codes at once
// in each plane: one single-register `vpermb` per plane at 64 codes, one two-register
// `vpermi2b` at 128 (twice the port-5 time of `vpermb` on Sapphire Rapids), two and a blend at
// 256. Unpacking the two byte vectors gives the 64 signed 16-bit entries, and `vpdpwssd` with a
// (1, 0) / (0, 1) word pattern adds the even / odd words into int32 accumulators (wrap-around =
// mod 2**32, the reference's semantics). No table is built per call beyond the planes of the n
// column codes.
//
// The operands are packed here (in parallel) before the products: the row operand into blocks
// [K][64 R] of codes (rows permuted within each 64 as accumulate() needs, zero-padded), the column
// operand into one contiguous run of K codes per column. The binding (lut_gemm_cpu.cpp) passes
// `planes[v]` = the low bytes then the high bytes of T[u][v] - offset as int16 (P bytes each,
// zero past the table; a permute reads only the low log2(P) bits of a code, so codes must be
// below P, which the op layer's range check guarantees); results go straight to the strided
// int32 output.
#if defined(__x86_64__)
#include <immintrin.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "lut_gemm_cpu.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")
#include "lut_gemm_cpu_avx512.h"

namespace appmult_cpu_vbmi {
namespace {

constexpr int64_t kCols = 16;  // output columns per task

// Adds the 16-bit entries of 64 codes (`lo`/`hi`: their low/high byte planes) to the four
// accumulators. unpacklo/hi work in 128-bit lanes L (16 codes each) and dword t of a lane holds
// words 2t and 2t + 1, so lane 4L + t of accumulator q receives the code at byte position
// 16L + 8(q / 2) + 2t + q % 2; pack_rows stores row 16q + 4L + t there, which makes lane i of
// accumulator q the sum of row 16q + i.
inline void accumulate(__m512i lo, __m512i hi, __m512i even, __m512i odd, __m512i* acc) {
  const __m512i w0 = _mm512_unpacklo_epi8(lo, hi), w1 = _mm512_unpackhi_epi8(lo, hi);
  acc[0] = _mm512_dpwssd_epi32(acc[0], w0, even);
  acc[1] = _mm512_dpwssd_epi32(acc[1], w0, odd);
  acc[2] = _mm512_dpwssd_epi32(acc[2], w1, even);
  acc[3] = _mm512_dpwssd_epi32(acc[3], w1, odd);
}

// Row of a 64-row block whose code sits at byte position p (the inverse of accumulate()).
inline int64_t row_at(int64_t p) {
  const int64_t lane = p / 16, q = 2 * ((p % 16) / 8) + p % 2, t = (p % 8) / 2;
  return 16 * q + 4 * lane + t;
}

// A code operand: code(b, i, k) = row(b, i)[off(k)], a strided view (base[b * sb + i * si +
// k * sk]) or, where `win` is set, windows (row_windows.h; B = 1). off is strictly increasing
// in k (sk >= 1), so off(k + L - 1) - off(k) == L - 1 means L contiguous codes.
struct Codes {
  const uint8_t* base;
  int64_t sb, si, sk;
  const appmult_rows::Windows* win;
  const uint8_t* row(int64_t b, int64_t i) const {
    return win != nullptr ? win->base + win->rows[i] : base + b * sb + i * si;
  }
  int64_t off(int64_t k) const { return win != nullptr ? win->cols[k] : k * sk; }
  uint8_t at(int64_t b, int64_t i, int64_t k) const { return row(b, i)[off(k)]; }
};

// out[j * ld] (8 bytes) = byte j of the 8-byte runs x[0..7] (byte i of out[j * ld] from x[i]):
// an 8 x 8 byte transpose in three rounds of unpacks.
inline void transpose8x8(const uint64_t* x, uint8_t* out, int64_t ld) {
  __m128i v[8];
  for (int i = 0; i < 8; ++i) v[i] = _mm_cvtsi64_si128(static_cast<long long>(x[i]));
  const __m128i t0 = _mm_unpacklo_epi8(v[0], v[1]), t1 = _mm_unpacklo_epi8(v[2], v[3]);
  const __m128i t2 = _mm_unpacklo_epi8(v[4], v[5]), t3 = _mm_unpacklo_epi8(v[6], v[7]);
  const __m128i u0 = _mm_unpacklo_epi16(t0, t1), u1 = _mm_unpackhi_epi16(t0, t1);
  const __m128i u2 = _mm_unpacklo_epi16(t2, t3), u3 = _mm_unpackhi_epi16(t2, t3);
  const __m128i w[4] = {_mm_unpacklo_epi32(u0, u2), _mm_unpackhi_epi32(u0, u2),
                        _mm_unpacklo_epi32(u1, u3), _mm_unpackhi_epi32(u1, u3)};
  for (int j = 0; j < 4; ++j) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + (2 * j) * ld), w[j]);
    _mm_storeh_pd(reinterpret_cast<double*>(out + (2 * j + 1) * ld), _mm_castsi128_pd(w[j]));
  }
}

// dst[b][blk][k][p] = code(b, blk * RB + 64 (p / 64) + row_at(p % 64), k), 0 for padding rows.
// Positions go 8 at a time: where 8 codes of k are contiguous, 8 x 8 byte transposes of 8-byte
// runs (a byte-by-byte loop of strided stores took about 1 ns per code, as long as the
// products of 56 columns); else code by code.
void pack_rows(const Codes& src, int64_t B, int64_t rows, int64_t K, int64_t RB, int64_t blocks,
               uint8_t* dst, int nthreads) {
  constexpr int64_t KC = 64;  // k per pass: 64 destination rows of RB bytes stay in L1
  const int64_t kchunks = (K + KC - 1) / KC;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t task = 0; task < B * blocks * kchunks; ++task) {
    const int64_t bb = task / kchunks, k0 = (task % kchunks) * KC;
    const int64_t b = bb / blocks, blk = bb % blocks, k1 = k0 + KC < K ? k0 + KC : K;
    uint8_t* out = dst + bb * K * RB;
    for (int64_t p0 = 0; p0 < RB; p0 += 8) {
      const uint8_t* from[8];  // the 8 positions' rows, nullptr for padding rows
      for (int64_t i = 0; i < 8; ++i) {
        const int64_t r = blk * RB + 64 * (p0 / 64) + row_at((p0 + i) % 64);
        from[i] = r < rows ? src.row(b, r) : nullptr;
      }
      for (int64_t k = k0; k < k1; k += 8) {
        const int64_t o = src.off(k);
        if (k + 8 <= k1 && src.off(k + 7) - o == 7) {
          uint64_t x[8];
          for (int64_t i = 0; i < 8; ++i)
            if (from[i] != nullptr) std::memcpy(&x[i], from[i] + o, 8);
            else x[i] = 0;
          transpose8x8(x, out + k * RB + p0, RB);
          continue;
        }
        for (int64_t kk = k; kk < k + 8 && kk < k1; ++kk) {
          const int64_t ok = src.off(kk);
          for (int64_t i = 0; i < 8; ++i)
            out[kk * RB + p0 + i] = from[i] != nullptr ? from[i][ok] : 0;
        }
      }
    }
  }
}

// dst[b][c][k] = code(b, c, k): contiguous runs of k copied whole (one run per column for a
// dense operand, one per window tap for windows), else in 64 x 64 tiles (reads along whichever
// stride is 1 stay within a few lines; writes go to 64 runs of 64 bytes).
void pack_cols(const Codes& src, int64_t B, int64_t cols, int64_t K, uint8_t* dst,
               int nthreads) {
  constexpr int64_t T = 64;
  const int64_t cchunks = (cols + T - 1) / T;
  const std::vector<int64_t> runs =
      src.win != nullptr || src.sk == 1
          ? appmult_rows::contiguous_runs([&src](int64_t k) { return src.off(k); }, K)
          : std::vector<int64_t>{};
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t task = 0; task < B * cchunks; ++task) {
    const int64_t b = task / cchunks, c0 = (task % cchunks) * T;
    const int64_t c1 = c0 + T < cols ? c0 + T : cols;
    if (!runs.empty()) {
      for (int64_t c = c0; c < c1; ++c) {
        const uint8_t* from = src.row(b, c);
        for (size_t r = 0; r + 1 < runs.size(); ++r)
          std::memcpy(dst + (b * cols + c) * K + runs[r], from + src.off(runs[r]),
                      runs[r + 1] - runs[r]);
      }
      continue;
    }
    for (int64_t k0 = 0; k0 < K; k0 += T) {
      const int64_t k1 = k0 + T < K ? k0 + T : K;
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t c = c0; c < c1; ++c) dst[(b * cols + c) * K + k] = src.at(b, c, k);
    }
  }
}

// dst[i] = (first ? start : dst[i]) + sums of row i of the block, for i < rows.
template <int R>
inline void add_block(const __m512i (&acc)[R][4], int64_t rows, bool first, int32_t start,
                      int32_t* dst) {
  const __m512i base = _mm512_set1_epi32(start);
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) {
      const int64_t i = 64 * r + 16 * q;
      if (i >= rows) return;
      const __mmask16 valid =
          rows - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (rows - i)) - 1);
      const __m512i old = first ? base : _mm512_maskz_loadu_epi32(valid, dst + i);
      _mm512_mask_storeu_epi32(dst + i, valid, _mm512_add_epi32(old, acc[r][q]));
    }
}

// The low (`lo`) and high (`hi`) entry bytes of the 64 row codes `idx` in a column's planes of
// P bytes each (t: the planes' P / 64 registers, low plane first).
template <int P>
inline void lookup(const __m512i* t, __m512i idx, __m512i& lo, __m512i& hi) {
  if constexpr (P == 64) {
    lo = _mm512_permutexvar_epi8(idx, t[0]);
    hi = _mm512_permutexvar_epi8(idx, t[1]);
  } else if constexpr (P == 128) {
    lo = _mm512_permutex2var_epi8(t[0], idx, t[1]);
    hi = _mm512_permutex2var_epi8(t[2], idx, t[3]);
  } else {
    const __mmask64 top = _mm512_movepi8_mask(idx);  // code >= 128
    lo = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t[0], idx, t[1]),
                                _mm512_permutex2var_epi8(t[2], idx, t[3]));
    hi = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t[4], idx, t[5]),
                                _mm512_permutex2var_epi8(t[6], idx, t[7]));
  }
}

// One column (codes wcol[0..ks)) over ks steps of a packed row block ablk [ks][64R], added to
// dst by add_block. Where `live` is given, the steps whose column code it does not flag (codes
// whose planes are all zero: they add nothing) are skipped, 64 codes' flags at a time.
template <int R, int P>
void column_block(const uint8_t* ablk, const uint8_t* wcol, const appmult_avx512::LiveTable* live,
                  const uint8_t* planes, int64_t ks, int64_t rows, bool first, int32_t start,
                  int32_t* dst) {
  constexpr int64_t RB = 64 * R, V = 2 * P / 64;  // V: registers of a column's two planes
  const __m512i even = _mm512_set1_epi32(1), odd = _mm512_set1_epi32(1 << 16);
  __m512i acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = _mm512_setzero_si512();
  const auto step = [&](int64_t k) {
    const uint8_t* p = planes + static_cast<int64_t>(wcol[k]) * 2 * P;
    __m512i t[V];
    for (int64_t i = 0; i < V; ++i) t[i] = _mm512_loadu_si512(p + 64 * i);
    const uint8_t* ak = ablk + k * RB;
    for (int r = 0; r < R; ++r) {
      __m512i lo, hi;
      lookup<P>(t, _mm512_loadu_si512(ak + 64 * r), lo, hi);
      accumulate(lo, hi, even, odd, acc[r]);
    }
  };
  if (live == nullptr) {
    for (int64_t k = 0; k < ks; ++k) step(k);
  } else {
    for (int64_t k0 = 0; k0 < ks; k0 += 64) {
      const __mmask64 in = ks - k0 >= 64 ? ~0ull : (1ull << (ks - k0)) - 1;
      const __m512i flags = live->live_bytes(_mm512_maskz_loadu_epi8(in, wcol + k0));
      for (uint64_t set = _mm512_test_epi8_mask(flags, flags) & in; set != 0; set &= set - 1)
        step(k0 + __builtin_ctzll(set));
    }
  }
  add_block<R>(acc, rows, first, start, dst);
}

// out[b, r, c] for all rows and columns. A task owns one row block and kCols columns and walks K
// in slices whose packed codes (32 KB) stay in L1 while every column of the task uses them. When
// output rows are contiguous (os_r == 1) columns accumulate in place; otherwise (then os_c == 1)
// in a column-major [kCols][64R] tile that leaves as row segments, so no output line is written
// by many tasks.
template <int R, int P>
void products(const uint8_t* apack, const uint8_t* wt, const appmult_avx512::LiveTable* live,
              const uint8_t* planes, int64_t B, int64_t rows, int64_t K, int64_t cols,
              int32_t start, int32_t* out, int64_t os_b, int64_t os_r, int64_t os_c,
              int nthreads) {
  constexpr int64_t RB = 64 * R, KS = 32768 / RB;
  const int64_t blocks = (rows + RB - 1) / RB, cchunks = (cols + kCols - 1) / kCols;
  const bool tiled = os_r != 1;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t task = 0; task < B * blocks * cchunks; ++task) {
    const int64_t b = task / (blocks * cchunks), rest = task % (blocks * cchunks);
    const int64_t blk = rest / cchunks, c0 = (rest % cchunks) * kCols;
    const int64_t c1 = c0 + kCols < cols ? c0 + kCols : cols;
    const int64_t row0 = blk * RB, nrows = rows - row0 < RB ? rows - row0 : RB;
    const uint8_t* ablk = apack + (b * blocks + blk) * K * RB;
    alignas(64) int32_t tile[kCols * RB];
    for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += KS) {
      const int64_t ks = K - k0 < KS ? K - k0 : KS;
      for (int64_t c = c0; c < c1; ++c) {
        const uint8_t* wcol = wt + (b * cols + c) * K + k0;
        int32_t* dst = tiled ? tile + (c - c0) * RB : out + b * os_b + c * os_c + row0;
        column_block<R, P>(ablk + k0 * RB, wcol, live, planes, ks, nrows, k0 == 0, start, dst);
      }
    }
    if (tiled) {
      const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
      const __m512i from = _mm512_mullo_epi32(lane, _mm512_set1_epi32(RB));
      const __mmask16 valid = static_cast<__mmask16>((1u << (c1 - c0)) - 1);
      for (int64_t i = 0; i < nrows; ++i)
        _mm512_mask_storeu_epi32(out + b * os_b + (row0 + i) * os_r + c0, valid,
                                 _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, from,
                                                             tile + i, 4));
    }
  }
}

using Bytes = std::unique_ptr<uint8_t, decltype(&std::free)>;

// `bytes` (rounded up to 64) of 64-byte aligned memory, freed with the owner; std::bad_alloc (a
// Python MemoryError) when there is none.
Bytes aligned_bytes(int64_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) throw std::bad_alloc();
  return Bytes(static_cast<uint8_t*>(p), &std::free);
}

using Products = void (*)(const uint8_t*, const uint8_t*, const appmult_avx512::LiveTable*,
                         const uint8_t*, int64_t, int64_t, int64_t, int64_t, int32_t, int32_t*,
                         int64_t, int64_t, int64_t, int);

// The products of row blocks of 64 R rows for planes of P bytes.
template <int R>
Products products_for(int64_t P) {
  return P == 64 ? products<R, 64> : P == 128 ? products<R, 128> : products<R, 256>;
}

}  // namespace

namespace {
std::atomic<int64_t> g_skipping_calls{0};  // skipping_calls()
}  // namespace

int64_t skipping_calls() { return g_skipping_calls.load(); }

bool supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vnni");
}

void lut_fwd(const uint8_t* row_codes, const int64_t* row_strides, const uint8_t* col_codes,
             const int64_t* col_strides, const uint8_t* planes, int64_t P, int64_t B, int64_t rows,
             int64_t K, int64_t cols, int32_t start, int32_t* out, const int64_t* out_strides,
             int nthreads, const appmult_rows::Windows* row_win,
             const appmult_rows::Windows* col_win, const uint8_t* col_dead) {
  // Blocks of 4 x 64 rows (16 accumulators + up to 8 table registers in the 32 zmm) amortise
  // each table load over 256 rows; smaller blocks where those would pad much.
  const int64_t RB = rows % 256 == 0 || rows >= 1024 ? 256 : rows % 128 == 0 ? 128 : 64;
  const int64_t blocks = (rows + RB - 1) / RB;
  const Bytes apack_owner = aligned_bytes(B * blocks * RB * K + 64);
  uint8_t* apack = apack_owner.get();
  pack_rows({row_codes, row_strides[0], row_strides[1], row_strides[2], row_win}, B, rows, K, RB,
            blocks, apack, nthreads);
  // The column operand is used in place when it already is [B][cols][K].
  const bool packed = col_win == nullptr && col_strides[2] == 1 && col_strides[1] == K &&
                      col_strides[0] == cols * K;
  const Bytes wt_owner = packed ? Bytes(nullptr, &std::free) : aligned_bytes(B * cols * K + 64);
  uint8_t* wt = wt_owner.get();
  if (!packed)
    pack_cols({col_codes, col_strides[0], col_strides[1], col_strides[2], col_win}, B, cols, K,
              wt, nthreads);
  const uint8_t* wp = packed ? col_codes : wt;
  // The column codes whose planes are all zero, whose steps are skipped.
  const appmult_avx512::LiveTable table(col_dead);
  const appmult_avx512::LiveTable* live = col_dead != nullptr ? &table : nullptr;
  if (live != nullptr) ++g_skipping_calls;
  const Products run = RB == 256 ? products_for<4>(P) : RB == 128 ? products_for<2>(P)
                                                                  : products_for<1>(P);
  run(apack, wp, live, planes, B, rows, K, cols, start, out, out_strides[0],
      out_strides[1], out_strides[2], nthreads);
}

}  // namespace appmult_cpu_vbmi

#pragma GCC pop_options
#endif
