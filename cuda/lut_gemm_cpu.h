// Entry points of the CPU LUT-GEMM kernels, one namespace per instruction set.
#pragma once
#include <cstdint>
#include <vector>

#include "row_windows.h"

namespace appmult {
// k per run of dA a dead flag leaves 0 (lut_bmm_grad_a's `dead`, dead_runs; ops/reference.RUN).
constexpr int64_t kDeadRun = 16;
}  // namespace appmult

#define APPMULT_CPU_DECLARE(NS)                                                                  \
  namespace NS {                                                                                 \
  void lut_fwd(const uint8_t* a, const uint8_t* w, const uint32_t* lt, int64_t n, int64_t B,     \
               int64_t M, int64_t K, int64_t N, int32_t* y, int nthreads, int64_t budget); \
  void lut_fwd16(const uint8_t* a, const uint8_t* w, const uint16_t* lt, int64_t n, int64_t B,   \
                 int64_t M, int64_t K, int64_t N, int32_t* y, int nthreads, int64_t budget);                   \
  void lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const uint32_t* lt,        \
                  int64_t n, int64_t B, int64_t M, int64_t K, int64_t N, float* da,              \
                  int nthreads);                                                                 \
  void lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const uint32_t* lt,        \
                  int64_t n, int64_t B, int64_t M, int64_t K, int64_t N, float* dw,              \
                  int nthreads);                                                                 \
  }

APPMULT_CPU_DECLARE(appmult_cpu_portable)
#if defined(__x86_64__) || defined(__i386__)
#define APPMULT_CPU_HAS_AVX2_PATH 1
APPMULT_CPU_DECLARE(appmult_cpu_avx2)
#endif

#if defined(__x86_64__)
#define APPMULT_CPU_HAS_VBMI_PATH 1
// AVX-512 VBMI + VNNI forward (lut_gemm_cpu_vbmi.cpp); layouts documented there.
namespace appmult_cpu_vbmi {
bool supported();
// Calls that skipped the steps of all-zero column codes since the extension loaded (for tests:
// they show the skipping took place).
int64_t skipping_calls();
// out[b, r, c] = start + SUM_k T[row(b, r, k), col(b, c, k)] (mod 2**32) for codes given by
// base pointers and (batch, index, k) strides, or (B = 1) read through windows where row_win /
// col_win is given (the pointer and strides of that operand then unused); out strides (batch,
// row, column); planes of P = 64, 128 or 256 bytes per column code (row codes below P).
// col_dead: 256 flags of the column codes whose planes are all zero (their steps are skipped),
// or null.
void lut_fwd(const uint8_t* row_codes, const int64_t* row_strides, const uint8_t* col_codes,
             const int64_t* col_strides, const uint8_t* planes, int64_t P, int64_t B, int64_t rows,
             int64_t K, int64_t cols, int32_t start, int32_t* out, const int64_t* out_strides,
             int nthreads, const appmult_rows::Windows* row_win = nullptr,
             const appmult_rows::Windows* col_win = nullptr, const uint8_t* col_dead = nullptr);
}  // namespace appmult_cpu_vbmi

// AVX-512 (F + BW) gradient products (lut_gemm_cpu_avx512_grad.cpp); g [B, M, N] and outputs
// unpadded, lt = the transposed float table; tables of a task within `budget` bytes.
namespace appmult_cpu_avx512 {
// The groups of 4 table rows the codes of a product's swept side reach, per (b, k) of
// a[b * sb + m * sm + k * sk] (m < M): quads[b * K + k] bit q for rows 4q .. 4q + 3; only when
// M < 16 n (few rows swept against a table of n rows; else empty: every row is built).
// `built`: the mean table rows per k the builds then take.
struct RowsReached {
  std::vector<uint64_t> quads;
  double built = 0;
  const uint64_t* data() const { return quads.empty() ? nullptr : quads.data(); }
};
RowsReached rows_reached(const uint8_t* a, int64_t sb, int64_t sm, int64_t sk, int64_t B,
                         int64_t M, int64_t K, int64_t n, int nthreads);
// lt = the transposed table; reached: RowsReached::data() of the swept side's codes, or null;
// dead: [B, M, ceil(K / 16)] flags of the runs of 16 k of dA to leave 0 (no dots), or null.
void lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const float* lt, int64_t n,
                int64_t B, int64_t M, int64_t K, int64_t N, float* da, int nthreads,
                int64_t budget, const uint64_t* reached, const uint8_t* dead);
// dead: 256 flags of the table rows (indexed by the swept side's codes) that are all zero, or
// null; where G is finite, the swept rows whose codes reach only those are skipped.
void lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const float* lt, int64_t n,
                int64_t B, int64_t M, int64_t K, int64_t N, float* dw, int nthreads,
                int64_t budget, const uint64_t* reached, const uint8_t* dead);
// Blocks of 256 swept rows the dW kernel (and dA through it) has left rows out of since the
// extension loaded (for tests: they show the skipping took place).
int64_t compacted_blocks();
// dA through the dW kernel on the transposed product, g [B, M, N] read across, ga = GA itself
// (n = its columns); reached and dead: of w's codes (the swept side).
void lut_grad_a_t(const float* g, const uint8_t* a, const uint8_t* w, const float* ga,
                  int64_t n, int64_t B, int64_t M, int64_t K, int64_t N, float* da,
                  int nthreads, int64_t budget, const uint64_t* reached, const uint8_t* dead);
}  // namespace appmult_cpu_avx512

// Narrow-column fast path (lut_gemm_cpu_narrow.cpp, AVX-512 VBMI/VNNI): the column operand w
// has at most 16 codes. rt: 257 rows of 32 bytes (low then high bytes of T[u][v] - offset as
// int16, zero rows beyond the table and at 256); gr: 256 rows of 16 floats (GA or GW, zero
// beyond); a [B, M, K] (read in place by both gradients).
namespace appmult_cpu_narrow {
void lut_fwd(const uint8_t* a, const uint8_t* w, const uint8_t* rt, int64_t B, int64_t M,
             int64_t K, int64_t N, int32_t start, int32_t* y, int nthreads);
// The same with a's rows [M, K] read through windows (B = 1).
void lut_fwd_windows(const appmult_rows::Windows& a, const uint8_t* w, const uint8_t* rt,
                     int64_t M, int64_t K, int64_t N, int32_t start, int32_t* y, int nthreads);
void lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const float* gr, int64_t B,
                int64_t M, int64_t K, int64_t N, float* da, int nthreads);
void lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const float* gr, int64_t B,
                int64_t M, int64_t K, int64_t N, float* dw, int nthreads);
}  // namespace appmult_cpu_narrow
#endif
