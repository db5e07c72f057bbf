// CPU LUT-GEMM kernels ("table rows"), compiled once per ISA.
//
// This header is included by one translation unit per instruction set
// (lut_gemm_cpu_avx2.cpp under `#pragma GCC target("avx2,fma")`, lut_gemm_cpu_portable.cpp with
// the compiler's baseline flags); each defines APPMULT_CPU_NS first so the two copies live in
// different namespaces. It includes no C++ standard library templates so that no inline function
// compiled for AVX2 can be picked by the linker for the portable copy.
//
// Structure (all three products): for a fixed k and a tile of NT = 32 columns, the table
// restricted to the column codes, Tk[u][j] = TBL[u][w[k, n0 + j]], is a (2**bits x NT) block;
// it is built for a block of kb consecutive k (an 8x8 transpose of the transposed table on AVX2)
// and kept in L1/L2. Then
//   forward  Y[m, tile]  += Tk[a[m,k]][:]                 (int32 vector adds, wrap-around = mod 2**32)
//   dA       dA[m, k]    += dot(G[m, tile], Tk[a[m,k]])   (float FMAs, 8 k reduced at once)
//   dW       dW[k, tile] += G[m, tile] * Tk[a[m,k]][:]     (float FMAs, accumulators over m)
// so every multiply-accumulate is one lane of a vector add or FMA and the table is read with
// one row load per (m, k) instead of one gather per product. The forward keeps 16-bit entries
// (widened on load) when the binding found that the table fits them, which halves the table
// traffic; the binding also picks the orientation (Y or Y^T) that amortises the table builds.

#ifndef APPMULT_CPU_NS
#error "define APPMULT_CPU_NS before including lut_gemm_cpu_kernels.h"
#endif

namespace APPMULT_CPU_NS {
namespace {

constexpr int NT = 32;  // columns per tile: 4 vectors of 8 lanes

typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v8f __attribute__((vector_size(32)));

inline v8i load_i(const int32_t* p) {
  v8i v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store_i(int32_t* p, v8i v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline v8f load_f(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store_f(float* p, v8f v) { __builtin_memcpy(p, &v, sizeof(v)); }
// a * b + c, fused where the ISA has FMA (-std=c++17 turns off automatic contraction).
inline v8f fmadd(v8f a, v8f b, v8f c) {
#ifdef __FMA__
  return _mm256_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}
inline int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }
inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// Largest k-block whose tables (kb * NT * row_bytes) stay within `budget` bytes.
inline int64_t k_block(int64_t row_bytes, int64_t budget) {
  int64_t kb = budget / (row_bytes * NT);
  return kb < 1 ? 1 : kb;
}

// 8 x 8 transposes: out[r * NT + q] = src[q][u0 + r] for q, r < 8.
inline void transpose8(const int32_t* const* src, int64_t u0, int32_t* out) {
#ifdef __AVX2__
  __m256 r[8];
  for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(reinterpret_cast<const float*>(src[q] + u0));
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  float* o = reinterpret_cast<float*>(out);
  _mm256_storeu_ps(o + 0 * NT, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(o + 1 * NT, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(o + 2 * NT, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(o + 3 * NT, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(o + 4 * NT, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(o + 5 * NT, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(o + 6 * NT, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(o + 7 * NT, _mm256_permute2f128_ps(s3, s7, 0x31));
#else
  for (int r = 0; r < 8; ++r)
    for (int q = 0; q < 8; ++q) out[r * NT + q] = src[q][u0 + r];
#endif
}

inline void transpose8(const int16_t* const* src, int64_t u0, int16_t* out) {
#ifdef __SSE2__
  __m128i r[8];
  for (int q = 0; q < 8; ++q)
    r[q] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[q] + u0));
  __m128i t0 = _mm_unpacklo_epi16(r[0], r[1]), t1 = _mm_unpackhi_epi16(r[0], r[1]);
  __m128i t2 = _mm_unpacklo_epi16(r[2], r[3]), t3 = _mm_unpackhi_epi16(r[2], r[3]);
  __m128i t4 = _mm_unpacklo_epi16(r[4], r[5]), t5 = _mm_unpackhi_epi16(r[4], r[5]);
  __m128i t6 = _mm_unpacklo_epi16(r[6], r[7]), t7 = _mm_unpackhi_epi16(r[6], r[7]);
  __m128i s0 = _mm_unpacklo_epi32(t0, t2), s1 = _mm_unpackhi_epi32(t0, t2);
  __m128i s2 = _mm_unpacklo_epi32(t1, t3), s3 = _mm_unpackhi_epi32(t1, t3);
  __m128i s4 = _mm_unpacklo_epi32(t4, t6), s5 = _mm_unpackhi_epi32(t4, t6);
  __m128i s6 = _mm_unpacklo_epi32(t5, t7), s7 = _mm_unpackhi_epi32(t5, t7);
  const __m128i rows[8] = {_mm_unpacklo_epi64(s0, s4), _mm_unpackhi_epi64(s0, s4),
                           _mm_unpacklo_epi64(s1, s5), _mm_unpackhi_epi64(s1, s5),
                           _mm_unpacklo_epi64(s2, s6), _mm_unpackhi_epi64(s2, s6),
                           _mm_unpacklo_epi64(s3, s7), _mm_unpackhi_epi64(s3, s7)};
  for (int q = 0; q < 8; ++q) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + q * NT), rows[q]);
#else
  for (int r = 0; r < 8; ++r)
    for (int q = 0; q < 8; ++q) out[r * NT + q] = src[q][u0 + r];
#endif
}

// tab[kk][u][j] = lt[code(kk, j) * n + u] for kk < kb, u < n, j < NT, where
// code(kk, j) = w[(k0 + kk) * ldw + n0 + j] for columns j < ncols and 0 beyond (padding columns,
// whose results are discarded). lt is the transposed table: lt[v * n + u] = TBL[u][v].
template <typename E>
void build_tables(const E* lt, int64_t n, const uint8_t* w, int64_t ldw, int64_t k0, int64_t kb,
                  int64_t n0, int64_t ncols, E* tab) {
  for (int64_t kk = 0; kk < kb; ++kk) {
    const uint8_t* wk = w + (k0 + kk) * ldw + n0;
    const E* src[NT];
    for (int j = 0; j < NT; ++j) src[j] = lt + (j < ncols ? wk[j] : 0) * n;
    E* dst = tab + kk * n * NT;
    if (n >= 8) {
      for (int j0 = 0; j0 < NT; j0 += 8)
        for (int64_t u0 = 0; u0 < n; u0 += 8) transpose8(src + j0, u0, dst + u0 * NT + j0);
    } else {
      for (int64_t u = 0; u < n; ++u)
        for (int j = 0; j < NT; ++j) dst[u * NT + j] = src[j][u];
    }
  }
}

// ---------------------------------------------------------------- forward (int32, mod 2**32)

typedef int16_t v8s __attribute__((vector_size(16)));

// Eight table entries widened to int32 lanes.
inline v8i load_entries(const int32_t* p) { return load_i(p); }
inline v8i load_entries(const int16_t* p) {
  v8s v;
  __builtin_memcpy(&v, p, sizeof(v));
  return __builtin_convertvector(v, v8i);
}

// R rows of Y[:, tile] += SUM_{kk < kb} Tk[a[m, k0 + kk]].
template <int R, typename E>
inline void fwd_rows(const uint8_t* a, int64_t K, int64_t m, int64_t k0, int64_t kb, const E* tab,
                     int64_t n, int32_t* y, int64_t ldy) {
  v8i acc[R][4];
  const uint8_t* ar[R];
  for (int r = 0; r < R; ++r) {
    ar[r] = a + (m + r) * K + k0;
    for (int c = 0; c < 4; ++c) acc[r][c] = load_i(y + (m + r) * ldy + 8 * c);
  }
  for (int64_t kk = 0; kk < kb; ++kk) {
    const E* t = tab + kk * n * NT;
    for (int r = 0; r < R; ++r) {
      const E* row = t + static_cast<int64_t>(ar[r][kk]) * NT;
      for (int c = 0; c < 4; ++c) acc[r][c] += load_entries(row + 8 * c);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c) store_i(y + (m + r) * ldy + 8 * c, acc[r][c]);
}

// y [B, M, ldy] (ldy = NT * ceil(N / NT), pre-filled) += SUM_k TBL[a, w]; lt = TBL^T.
template <typename E>
void lut_fwd_impl(const uint8_t* a, const uint8_t* w, const E* lt, int64_t n, int64_t B,
                  int64_t M, int64_t K, int64_t N, int32_t* y, int nthreads, int64_t budget) {
  const int64_t ldy = NT * ceil_div(N, NT), ntiles = ldy / NT;
  // Tables for kb steps of k: more k per pass means fewer passes over Y.
  const int64_t kb = min64(K, k_block(n * static_cast<int64_t>(sizeof(E)), budget));
  // Split M when there are too few column tiles to keep every thread busy.
  int64_t mchunks = ceil_div(2 * nthreads, ntiles * B);
  mchunks = mchunks < 1 ? 1 : min64(mchunks, ceil_div(M, 64));
  const int64_t mstep = ceil_div(M, mchunks), ntasks = B * ntiles * mchunks;
#pragma omp parallel num_threads(nthreads)
  {
    E* tab = static_cast<E*>(aligned_alloc(64, kb * n * NT * sizeof(E) + 64));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / (ntiles * mchunks), rest = task % (ntiles * mchunks);
      const int64_t n0 = (rest / mchunks) * NT, m0 = (rest % mchunks) * mstep;
      const int64_t m1 = min64(M, m0 + mstep);
      const uint8_t* ab = a + b * M * K;
      const uint8_t* wb = w + b * K * N;
      int32_t* yb = y + b * M * ldy + n0;
      for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t kc = min64(kb, K - k0);
        build_tables(lt, n, wb, N, k0, kc, n0, min64(NT, N - n0), tab);
        int64_t m = m0;
        for (; m + 3 <= m1; m += 3) fwd_rows<3>(ab, K, m, k0, kc, tab, n, yb, ldy);
        for (; m < m1; ++m) fwd_rows<1>(ab, K, m, k0, kc, tab, n, yb, ldy);
      }
    }
    free(tab);
  }
}

}  // namespace

void lut_fwd(const uint8_t* a, const uint8_t* w, const uint32_t* lt, int64_t n, int64_t B,
             int64_t M, int64_t K, int64_t N, int32_t* y, int nthreads, int64_t budget) {
  lut_fwd_impl(a, w, reinterpret_cast<const int32_t*>(lt), n, B, M, K, N, y, nthreads, budget);
}

void lut_fwd16(const uint8_t* a, const uint8_t* w, const uint16_t* lt, int64_t n, int64_t B,
               int64_t M, int64_t K, int64_t N, int32_t* y, int nthreads, int64_t budget) {
  lut_fwd_impl(a, w, reinterpret_cast<const int16_t*>(lt), n, B, M, K, N, y, nthreads, budget);
}

// ---------------------------------------------------------------- dA (float)

namespace {

// Lane kk of the result is the horizontal sum of acc[kk].
inline v8f reduce8(const v8f* acc) {
#ifdef __AVX2__
  __m256 h0 = _mm256_hadd_ps(acc[0], acc[1]), h1 = _mm256_hadd_ps(acc[2], acc[3]);
  __m256 h2 = _mm256_hadd_ps(acc[4], acc[5]), h3 = _mm256_hadd_ps(acc[6], acc[7]);
  h0 = _mm256_hadd_ps(h0, h1);
  h2 = _mm256_hadd_ps(h2, h3);
  return _mm256_add_ps(_mm256_permute2f128_ps(h0, h2, 0x20), _mm256_permute2f128_ps(h0, h2, 0x31));
#else
  v8f out;
  for (int kk = 0; kk < 8; ++kk) {
    float s = 0.f;
    for (int l = 0; l < 8; ++l) s += acc[kk][l];
    out[kk] = s;
  }
  return out;
#endif
}

}  // namespace

// da [B, M, K] (zero-initialised) += SUM_n g * GA[a, w]; g is [B, M, ldg] zero-padded to
// ldg = NT * ceil(N / NT); lt = GA^T as bits.
void lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const uint32_t* lt, int64_t n,
                int64_t B, int64_t M, int64_t K, int64_t N, float* da, int nthreads) {
  const int64_t ldg = NT * ceil_div(N, NT), kblocks = ceil_div(K, 8);
  int64_t mchunks = ceil_div(2 * nthreads, kblocks * B);
  mchunks = mchunks < 1 ? 1 : min64(mchunks, ceil_div(M, 64));
  const int64_t mstep = ceil_div(M, mchunks), ntasks = B * kblocks * mchunks;
#pragma omp parallel num_threads(nthreads)
  {
    // 8 tables, plus one zero row block for k beyond K in the last block.
    float* tab = static_cast<float*>(aligned_alloc(64, 8 * n * NT * 4));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / (kblocks * mchunks), rest = task % (kblocks * mchunks);
      const int64_t k0 = (rest / mchunks) * 8, m0 = (rest % mchunks) * mstep;
      const int64_t m1 = min64(M, m0 + mstep), kc = min64(8, K - k0);
      const uint8_t* ab = a + b * M * K;
      const float* gb = g + b * M * ldg;
      float* dab = da + b * M * K;
      for (int64_t kk = kc; kk < 8; ++kk)
        for (int64_t i = 0; i < n * NT; ++i) tab[kk * n * NT + i] = 0.f;
      for (int64_t n0 = 0; n0 < ldg; n0 += NT) {
        build_tables(reinterpret_cast<const int32_t*>(lt), n, w + b * K * N, N, k0, kc, n0,
                     min64(NT, N - n0), reinterpret_cast<int32_t*>(tab));
        for (int64_t m = m0; m < m1; ++m) {
          const float* gm = gb + m * ldg + n0;
          const v8f g0 = load_f(gm), g1 = load_f(gm + 8), g2 = load_f(gm + 16), g3 = load_f(gm + 24);
          const uint8_t* am = ab + m * K + k0;
          v8f acc[8];
          for (int kk = 0; kk < 8; ++kk) {
            const float* row = tab + kk * n * NT + (kk < kc ? static_cast<int64_t>(am[kk]) : 0) * NT;
            acc[kk] = fmadd(g3, load_f(row + 24),
                            fmadd(g2, load_f(row + 16), fmadd(g1, load_f(row + 8), g0 * load_f(row))));
          }
          const v8f s = reduce8(acc);
          float* out = dab + m * K + k0;
          for (int64_t kk = 0; kk < kc; ++kk) out[kk] += s[kk];
        }
      }
    }
    free(tab);
  }
}

// ---------------------------------------------------------------- dW (float)

namespace {

// dw[k0 + r, tile] += SUM_{m0 <= m < m1} g[m, tile] * Tk[a[m, k0 + r]] for r < R.
template <int R>
inline void grad_w_rows(const float* g, int64_t ldg, const uint8_t* a, int64_t K, int64_t m0,
                        int64_t m1, int64_t k0, const float* tab, int64_t n, float* dw,
                        int64_t lddw) {
  v8f acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = v8f{};
  for (int64_t m = m0; m < m1; ++m) {
    const float* gm = g + m * ldg;
    const v8f g0 = load_f(gm), g1 = load_f(gm + 8), g2 = load_f(gm + 16), g3 = load_f(gm + 24);
    const uint8_t* am = a + m * K + k0;
    for (int r = 0; r < R; ++r) {
      const float* row = tab + r * n * NT + static_cast<int64_t>(am[r]) * NT;
      acc[r][0] = fmadd(g0, load_f(row), acc[r][0]);
      acc[r][1] = fmadd(g1, load_f(row + 8), acc[r][1]);
      acc[r][2] = fmadd(g2, load_f(row + 16), acc[r][2]);
      acc[r][3] = fmadd(g3, load_f(row + 24), acc[r][3]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c) {
      float* out = dw + (k0 + r) * lddw + 8 * c;
      store_f(out, load_f(out) + acc[r][c]);
    }
}

}  // namespace

// dw [B, K, lddw] (zero-initialised, lddw = ldg) += SUM_m g * GW[a, w]; g as for lut_grad_a.
void lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const uint32_t* lt, int64_t n,
                int64_t B, int64_t M, int64_t K, int64_t N, float* dw, int nthreads) {
  const int64_t ldg = NT * ceil_div(N, NT), ntiles = ldg / NT;
  const int64_t kb = min64(K, 3 * ceil_div(k_block(n * 4, 192 * 1024), 3));
  const int64_t kblocks = ceil_div(K, kb), ntasks = B * ntiles * kblocks;
  const int64_t mb = 512;  // rows of G per pass: a [mb x NT] float block stays in L1/L2
#pragma omp parallel num_threads(nthreads)
  {
    float* tab = static_cast<float*>(aligned_alloc(64, kb * n * NT * 4));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / (ntiles * kblocks), rest = task % (ntiles * kblocks);
      const int64_t n0 = (rest / kblocks) * NT, k0 = (rest % kblocks) * kb;
      const int64_t kc = min64(kb, K - k0);
      const uint8_t* ab = a + b * M * K;
      const float* gb = g + b * M * ldg + n0;
      float* dwb = dw + b * K * ldg + n0;
      build_tables(reinterpret_cast<const int32_t*>(lt), n, w + b * K * N, N, k0, kc, n0,
                   min64(NT, N - n0), reinterpret_cast<int32_t*>(tab));
      for (int64_t m0 = 0; m0 < M; m0 += mb) {
        const int64_t m1 = min64(M, m0 + mb);
        int64_t kk = 0;
        for (; kk + 3 <= kc; kk += 3)
          grad_w_rows<3>(gb, ldg, ab, K, m0, m1, k0 + kk, tab + kk * n * NT, n, dwb, ldg);
        for (; kk < kc; ++kk)
          grad_w_rows<1>(gb, ldg, ab, K, m0, m1, k0 + kk, tab + kk * n * NT, n, dwb, ldg);
      }
    }
    free(tab);
  }
}

}  // namespace APPMULT_CPU_NS
