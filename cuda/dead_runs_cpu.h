// Runs of 16 entries of a convolution's im2col rows that are all 0 (dead_runs_cpu.cpp), bound
// in lut_gemm_cpu.cpp.
#pragma once

#include <torch/extension.h>

// Flags [1, N*Ho*Wo, ceil(K / 16)] (uint8, 1 = every entry of the run is 0) of the runs of 16
// k, from k = 0, of the im2col rows of x [N, C, H, W] (contiguous float32; K = kh*kw*C ordered
// kh, kw, C, rows in output order, one group) for a (kh, kw) kernel at the given stride and
// dilation. An entry is 0 when its value is +0 or -0.
torch::Tensor dead_runs(const torch::Tensor& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t dh, int64_t dw);

// grad = 0 where x is +0 or -0 (both contiguous float32 of one shape), in one pass: the masked
// fill of torch's two (x == 0, then masked_fill_).
void zero_where_zero(torch::Tensor& grad, const torch::Tensor& x);
