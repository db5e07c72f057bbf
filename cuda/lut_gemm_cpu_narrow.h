// Torch side of the narrow-column fast path (lut_gemm_cpu_narrow_ops.cpp): the products when the
// column operand w has at most 16 codes (a table of at most 16 columns), AVX-512 VBMI/VNNI only.
#pragma once
#include <torch/extension.h>

#include <cstdint>

#include "row_windows.h"

namespace appmult_narrow {

// Whether the fast path serves a table with `cols` columns on this build.
bool serves(int64_t cols);

// Y [B, M, N] = start + SUM_k (T[a, w] - offset) (mod 2**32) for an int32 table whose entries
// minus `offset` fit int16.
torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& w, const torch::Tensor& table,
                      int64_t offset, int32_t start);

// The same for a [1, M, K] read through windows (row_windows.h).
torch::Tensor forward_windows(const appmult_rows::Windows& a, int64_t M, int64_t K,
                              const torch::Tensor& w, const torch::Tensor& table, int64_t offset,
                              int32_t start);

// dA [B, M, K] = SUM_n g * GA[a, w].
torch::Tensor grad_a(const torch::Tensor& g, const torch::Tensor& a, const torch::Tensor& w,
                     const torch::Tensor& ga);

// dW [B, K, N] = SUM_m g * GW[a, w].
torch::Tensor grad_w(const torch::Tensor& g, const torch::Tensor& a, const torch::Tensor& w,
                     const torch::Tensor& gw);

}  // namespace appmult_narrow
