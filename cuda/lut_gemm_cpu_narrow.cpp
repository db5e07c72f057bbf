// Narrow-column fast path (AVX-512): the column (weight) operand has at most 16 codes
// (bits_b <= 4), so one row of a table, T[u][0..15], fits one register and the table is indexed
// by register permutes of the column codes; nothing is built per k.
//
//   forward  rt[u] = the low bytes then the high bytes of T[u][v] - offset (int16), 32 bytes.
//            Rows u0 = a[m, 2p] and u1 = a[m, 2p + 1] share one register (rt[u0] | rt[u1]), and
//            one `vpermb` by the prepared index vector of k = 2p, 2p + 1 and 16 columns gives
//            32 words: word 2t = T[u0][w[2p, n_t]], word 2t + 1 = T[u1][w[2p + 1, n_t]]. One
//            `vpdpwssd` with (1, 1) words adds both into the int32 lane of column n_t
//            (wrap-around = mod 2**32): 32 multiply-accumulates per permute + dot product.
//   dA       gr[u] = GA[u][0..15] (float):
//            dA[m, k] = SUM_n G[m, n] * vpermps(w[k, n], gr[a[m, k]]), 16 columns per FMA, 16 k
//            reduced at once by a shuffle tree.
//   dW       gr[u] = GW[u][0..15]: dW[k, n] += G[m, n] * vpermps(w[k, n], gr[a[m, k]]) over m,
//            accumulators for 2 k x 64 columns in registers, G blocks of 128 rows kept in L1.
// The binding (lut_gemm_cpu.cpp) prepares rt / gr with 256 rows (zero beyond the table) and the
// permutes use the low bits of the codes only, so no code reads outside them.
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#include "lut_gemm_cpu.h"
#include "row_windows.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")
#include "lut_gemm_cpu_avx512.h"

namespace appmult_cpu_narrow {
namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kZeroRow = 256;  // the all-zero row of rt (odd K pads its last pair with it)

inline int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }
inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }
inline __mmask16 lanes_below(int64_t count) {
  return count >= kLanes ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << (count > 0 ? count : 0)) - 1u);
}

// ---------------------------------------------------------------- forward

// idx[b][p][cb] (64 bytes): for column t of block cb, bytes 4t..4t+3 = w0, 16 + w0, 32 + w1,
// 48 + w1 with w0 = w[b, 2p, n], w1 = w[b, 2p + 1, n] (0 past K or N).
void build_pair_index(const uint8_t* w, int64_t B, int64_t K, int64_t N, uint8_t* idx,
                      int nthreads) {
  const int64_t pairs = ceil_div(K, 2), cbs = ceil_div(N, kLanes);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t bp = 0; bp < B * pairs; ++bp) {
    const int64_t b = bp / pairs, k = 2 * (bp % pairs);
    const uint8_t* w0 = w + (b * K + k) * N;
    const uint8_t* w1 = k + 1 < K ? w0 + N : nullptr;
    uint8_t* out = idx + bp * cbs * 64;
    for (int64_t n = 0; n < cbs * kLanes; ++n) {
      const uint8_t c0 = n < N ? w0[n] & 15 : 0, c1 = (n < N && w1) ? w1[n] & 15 : 0;
      uint8_t* o = out + (n / kLanes) * 64 + 4 * (n % kLanes);
      o[0] = c0, o[1] = 16 + c0, o[2] = 32 + c1, o[3] = 48 + c1;
    }
  }
}

inline __m512i row_pair(const uint8_t* rt, int64_t u0, int64_t u1) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rt + u0 * 32));
  const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rt + u1 * 32));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Row codes of a dense [M][K] operand.
struct DenseRows {
  const uint8_t* a;
  int64_t K;
  const uint8_t* row(int64_t m) const { return a + m * K; }
  int64_t at(int64_t k) const { return k; }
};

// Row codes read in place through windows (row_windows.h).
struct WindowRows {
  appmult_rows::Windows w;
  const uint8_t* row(int64_t m) const { return w.base + w.rows[m]; }
  int64_t at(int64_t k) const { return w.cols[k]; }
};

// Y[m .. m + R) x [n0, n0 + 16 C) (+)= SUM_{k0 <= k < k1} T[a, w], starting from `start` when
// k0 == 0 (rows past M computed on row M - 1 and not stored).
template <int R, int C, class Rows>
void fwd_rows(const Rows& a, const uint8_t* rt, const uint8_t* idx, int64_t cbs, int64_t M,
              int64_t K, int64_t N, int64_t m, int64_t n0, int64_t k0, int64_t k1, int32_t start,
              int32_t* y) {
  const uint8_t* ar[R];
  __m512i acc[R][C];
  for (int r = 0; r < R; ++r) {
    ar[r] = a.row(min64(m + r, M - 1));
    for (int c = 0; c < C; ++c) {
      const int32_t* yc = y + min64(m + r, M - 1) * N + n0 + kLanes * c;
      acc[r][c] = k0 == 0 ? _mm512_set1_epi32(start)
                          : _mm512_maskz_loadu_epi32(lanes_below(N - n0 - kLanes * c), yc);
    }
  }
  const __m512i ones = _mm512_set1_epi32(0x00010001);
  const uint8_t* ip = idx + (k0 / 2 * cbs + n0 / kLanes) * 64;
  for (int64_t k = k0; k < k1; k += 2, ip += cbs * 64) {
    const int64_t o0 = a.at(k), o1 = k + 1 < K ? a.at(k + 1) : -1;
    __m512i t[R];
    for (int r = 0; r < R; ++r) t[r] = row_pair(rt, ar[r][o0], o1 >= 0 ? ar[r][o1] : kZeroRow);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const __m512i x = _mm512_loadu_si512(ip + 64 * c);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
        acc[r][c] = _mm512_dpwssd_epi32(acc[r][c], _mm512_permutexvar_epi8(x, t[r]), ones);
    }
  }
  for (int r = 0; r < R && m + r < M; ++r)
    for (int c = 0; c < C; ++c)
      _mm512_mask_storeu_epi32(y + (m + r) * N + n0 + kLanes * c,
                               lanes_below(N - n0 - kLanes * c), acc[r][c]);
}

constexpr int64_t kSliceK = 128;  // k per slice: its index vectors (16 KB) stay in L1

template <int C, class Rows>
void fwd_chunk(const Rows& a, const uint8_t* rt, const uint8_t* idx, int64_t cbs, int64_t M,
               int64_t K, int64_t N, int64_t m0, int64_t m1, int64_t n0, int32_t start,
               int32_t* y) {
  for (int64_t k0 = 0; k0 < K; k0 += kSliceK)
    for (int64_t m = m0; m < m1; m += 4)
      fwd_rows<4, C>(a, rt, idx, cbs, m1, K, N, m, n0, k0, min64(K, k0 + kSliceK), start, y);
}

// The chunk of up to 4 column blocks of 16.
template <class Rows>
void fwd_blocks(int64_t blocks, const Rows& a, const uint8_t* rt, const uint8_t* idx, int64_t cbs,
                int64_t M, int64_t K, int64_t N, int64_t m0, int64_t m1, int64_t n0,
                int32_t start, int32_t* y) {
  switch (blocks) {
    case 1: return fwd_chunk<1>(a, rt, idx, cbs, M, K, N, m0, m1, n0, start, y);
    case 2: return fwd_chunk<2>(a, rt, idx, cbs, M, K, N, m0, m1, n0, start, y);
    case 3: return fwd_chunk<3>(a, rt, idx, cbs, M, K, N, m0, m1, n0, start, y);
    default: return fwd_chunk<4>(a, rt, idx, cbs, M, K, N, m0, m1, n0, start, y);
  }
}

// Tasks of (batch, 64 columns, rows): rows split until there are enough tasks for the threads.
struct Tasks {
  int64_t per_b, cchunks, mchunks, mstep;
  Tasks(int64_t B, int64_t M, int64_t cols, int64_t col_step, int64_t row_align, int nthreads) {
    cchunks = ceil_div(cols, col_step);
    mchunks = ceil_div(4 * nthreads, B * cchunks);
    mchunks = mchunks < 1 ? 1 : min64(mchunks, ceil_div(M, row_align));
    mstep = row_align * ceil_div(ceil_div(M, mchunks), row_align);
    mchunks = ceil_div(M, mstep);
    per_b = cchunks * mchunks;
  }
};

}  // namespace

namespace {

// Y [B, M, N] for row operands rows(b) (B = 1 for windows).
template <class RowsOf>
void forward(RowsOf rows, const uint8_t* w, const uint8_t* rt, int64_t B, int64_t M, int64_t K,
             int64_t N, int32_t start, int32_t* y, int nthreads) {
  const int64_t pairs = ceil_div(K, 2), cbs = ceil_div(N, kLanes);
  uint8_t* idx = static_cast<uint8_t*>(std::aligned_alloc(64, B * pairs * cbs * 64 + 64));
  build_pair_index(w, B, K, N, idx, nthreads);
  const Tasks t(B, M, N, 4 * kLanes, 16, nthreads);
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t task = 0; task < B * t.per_b; ++task) {
    const int64_t b = task / t.per_b, rest = task % t.per_b;
    const int64_t n0 = (rest / t.mchunks) * 4 * kLanes, m0 = (rest % t.mchunks) * t.mstep;
    const int64_t m1 = min64(M, m0 + t.mstep);
    fwd_blocks(min64(4, ceil_div(N - n0, kLanes)), rows(b), rt, idx + b * pairs * cbs * 64, cbs,
               M, K, N, m0, m1, n0, start, y + b * M * N);
  }
  std::free(idx);
}

}  // namespace

void lut_fwd(const uint8_t* a, const uint8_t* w, const uint8_t* rt, int64_t B, int64_t M,
             int64_t K, int64_t N, int32_t start, int32_t* y, int nthreads) {
  const auto rows = [a, M, K](int64_t b) { return DenseRows{a + b * M * K, K}; };
  forward(rows, w, rt, B, M, K, N, start, y, nthreads);
}

void lut_fwd_windows(const appmult_rows::Windows& a, const uint8_t* w, const uint8_t* rt,
                     int64_t M, int64_t K, int64_t N, int32_t start, int32_t* y, int nthreads) {
  const auto rows = [a](int64_t) { return WindowRows{a}; };
  forward(rows, w, rt, 1, M, K, N, start, y, nthreads);
}

// ---------------------------------------------------------------- gradients

namespace {

// wi[b][k][n] = w[b, k, n] & 15 as int32 for n < ld (a multiple of 16), 0 past N.
int32_t* widen_codes(const uint8_t* w, int64_t B, int64_t K, int64_t N, int64_t ld,
                     int nthreads) {
  int32_t* wi = static_cast<int32_t*>(std::aligned_alloc(64, B * K * ld * 4 + 64));
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t bk = 0; bk < B * K; ++bk)
    for (int64_t n = 0; n < ld; ++n) wi[bk * ld + n] = n < N ? w[bk * N + n] & 15 : 0;
  return wi;
}

// dA[m, k0 .. k0 + kc) = SUM_n G[m, n] * gr[a[m, k]][w[k, n]] for one row m; NV = the vectors
// per row when known at compile time (unrolled), else 0.
template <int NV>
void grad_a_row(const float* gm, const uint8_t* am, const int32_t* wi, const float* gr,
                int64_t ld, int64_t N, int64_t k0, int64_t kc, float* out) {
  const int64_t nv = NV > 0 ? NV : ld / kLanes;
  const __mmask16 tail = lanes_below(N - (nv - 1) * kLanes);
  __m512 acc[16];
#pragma GCC unroll 16
  for (int kk = 0; kk < 16; ++kk) {
    const int64_t k = k0 + (kk < kc ? kk : 0);
    const __m512 row = _mm512_loadu_ps(gr + static_cast<int64_t>(am[k]) * kLanes);
    const int32_t* wk = wi + k * ld;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 2 <= nv - 1; c += 2) {
      s0 = _mm512_fmadd_ps(_mm512_loadu_ps(gm + c * kLanes),
                           _mm512_permutexvar_ps(_mm512_load_si512(wk + c * kLanes), row), s0);
      s1 = _mm512_fmadd_ps(_mm512_loadu_ps(gm + c * kLanes + kLanes),
                           _mm512_permutexvar_ps(_mm512_load_si512(wk + c * kLanes + kLanes), row),
                           s1);
    }
    for (; c < nv; ++c) {
      const __m512 gv = c + 1 < nv ? _mm512_loadu_ps(gm + c * kLanes)
                                   : _mm512_maskz_loadu_ps(tail, gm + c * kLanes);
      s0 = _mm512_fmadd_ps(gv, _mm512_permutexvar_ps(_mm512_load_si512(wk + c * kLanes), row), s0);
    }
    acc[appmult_avx512::slot_of(kk)] = _mm512_add_ps(s0, s1);
  }
  _mm512_mask_storeu_ps(out, lanes_below(kc), appmult_avx512::reduce16(acc));
}

using RowFn = void (*)(const float*, const uint8_t*, const int32_t*, const float*, int64_t,
                       int64_t, int64_t, int64_t, float*);
constexpr RowFn kRowFns[9] = {grad_a_row<0>, grad_a_row<1>, grad_a_row<2>,
                              grad_a_row<3>, grad_a_row<4>, grad_a_row<5>,
                              grad_a_row<6>, grad_a_row<7>, grad_a_row<8>};

// dW[k .. k + 2) x 16 C columns (+)= SUM_{m < rows} G[m, cols] * gr[a[m][k]][w[k, cols]] for
// am = &a[0][k] (rows K apart; the pair's second code `d` bytes on); `two` false: only row k
// is real. A block's code rows stay in L1 across the task's k pairs, so a is read in place.
template <int C>
void grad_w_pair(const float* g, int64_t N, const uint8_t* am, int64_t K, int64_t d,
                 const int32_t* wi0, const int32_t* wi1, const float* gr, int64_t rows,
                 __mmask16 tail, bool two, bool add, float* dw0, float* dw1) {
  __m512i i0[C], i1[C];
  __m512 acc0[C], acc1[C];
  for (int c = 0; c < C; ++c) {
    i0[c] = _mm512_load_si512(wi0 + c * kLanes);
    i1[c] = _mm512_load_si512(wi1 + c * kLanes);
    acc0[c] = acc1[c] = _mm512_setzero_ps();
  }
  for (int64_t m = 0; m < rows; ++m) {
    const uint8_t* code = am + m * K;
    const __m512 r0 = _mm512_loadu_ps(gr + static_cast<int64_t>(code[0]) * kLanes);
    const __m512 r1 = _mm512_loadu_ps(gr + static_cast<int64_t>(code[d]) * kLanes);
    const float* gm = g + m * N;
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const __m512 gv = c + 1 < C ? _mm512_loadu_ps(gm + c * kLanes)
                                  : _mm512_maskz_loadu_ps(tail, gm + c * kLanes);
      acc0[c] = _mm512_fmadd_ps(gv, _mm512_permutexvar_ps(i0[c], r0), acc0[c]);
      acc1[c] = _mm512_fmadd_ps(gv, _mm512_permutexvar_ps(i1[c], r1), acc1[c]);
    }
  }
  for (int c = 0; c < C; ++c) {
    const __mmask16 mask = c + 1 < C ? static_cast<__mmask16>(0xFFFF) : tail;
    float* o0 = dw0 + c * kLanes;
    if (add) acc0[c] = _mm512_add_ps(acc0[c], _mm512_maskz_loadu_ps(mask, o0));
    _mm512_mask_storeu_ps(o0, mask, acc0[c]);
    if (!two) continue;
    float* o1 = dw1 + c * kLanes;
    if (add) acc1[c] = _mm512_add_ps(acc1[c], _mm512_maskz_loadu_ps(mask, o1));
    _mm512_mask_storeu_ps(o1, mask, acc1[c]);
  }
}

using PairFn = void (*)(const float*, int64_t, const uint8_t*, int64_t, int64_t, const int32_t*,
                        const int32_t*, const float*, int64_t, __mmask16, bool, bool, float*,
                        float*);
constexpr PairFn kPairFns[4] = {grad_w_pair<1>, grad_w_pair<2>, grad_w_pair<3>, grad_w_pair<4>};

constexpr int64_t kRowBlock = 128;  // rows of G per sweep: a 128 x 64 float block stays in L1
constexpr int64_t kTaskK = 16;      // k per dW task (even)

}  // namespace

void lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const float* gr, int64_t B,
                int64_t M, int64_t K, int64_t N, float* da, int nthreads) {
  const int64_t ld = kLanes * ceil_div(N, kLanes);
  int32_t* wi = widen_codes(w, B, K, N, ld, nthreads);
  const Tasks t(B, M, 1, 1, 64, nthreads);  // (batch, rows of 64)
  const RowFn row = kRowFns[ld / kLanes <= 8 ? ld / kLanes : 0];
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t task = 0; task < B * t.mchunks; ++task) {
    const int64_t b = task / t.mchunks, m0 = (task % t.mchunks) * t.mstep;
    const int64_t m1 = min64(M, m0 + t.mstep);
    // Blocks of 64 rows: their G rows and codes stay in L1 while the k groups sweep them.
    for (int64_t mb = m0; mb < m1; mb += 64)
      for (int64_t k0 = 0; k0 < K; k0 += 16)
        for (int64_t m = mb; m < min64(m1, mb + 64); ++m)
          row(g + (b * M + m) * N, a + (b * M + m) * K, wi + b * K * ld, gr, ld, N, k0,
              min64(16, K - k0), da + (b * M + m) * K + k0);
  }
  std::free(wi);
}

void lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const float* gr, int64_t B,
                int64_t M, int64_t K, int64_t N, float* dw, int nthreads) {
  const int64_t ld = kLanes * ceil_div(N, kLanes);
  int32_t* wi = widen_codes(w, B, K, N, ld, nthreads);
  const int64_t cchunks = ceil_div(N, 4 * kLanes), kchunks = ceil_div(K, kTaskK);
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t task = 0; task < B * cchunks * kchunks; ++task) {
    const int64_t b = task / (cchunks * kchunks), rest = task % (cchunks * kchunks);
    const int64_t n0 = (rest / kchunks) * 4 * kLanes, k0 = (rest % kchunks) * kTaskK;
    const int64_t k1 = min64(K, k0 + kTaskK), blocks = min64(4, ceil_div(N - n0, kLanes));
    const __mmask16 tail = lanes_below(N - n0 - (blocks - 1) * kLanes);
    const uint8_t* ab = a + b * M * K;
    const int32_t* wib = wi + b * K * ld + n0;
    float* dwb = dw + b * K * N + n0;
    for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
      const float* gb = g + (b * M + m0) * N + n0;
      const int64_t rows = min64(kRowBlock, M - m0);
      for (int64_t k = k0; k < k1; k += 2) {
        const bool two = k + 1 < k1;
        const int64_t k2 = two ? k + 1 : k;
        kPairFns[blocks - 1](gb, N, ab + m0 * K + k, K, k2 - k, wib + k * ld,
                             wib + k2 * ld, gr, rows, tail, two, m0 > 0, dwb + k * N,
                             dwb + k2 * N);
      }
    }
  }
  std::free(wi);
}

}  // namespace appmult_cpu_narrow

#pragma GCC pop_options
#endif
