// One-pass CPU im2col of channels-last table indices (im2col_cpu.cpp), bound in lut_gemm_cpu.cpp.
#pragma once

#include <torch/extension.h>

// [groups, N * Ho * Wo, kh * kw * C/groups] windows (K ordered kh, kw, C/groups) of contiguous
// uint8 [N, H, W, C] indices, no padding.
torch::Tensor im2col_nhwc(const torch::Tensor& nhwc, int64_t kh, int64_t kw, int64_t sh,
                          int64_t sw, int64_t dh, int64_t dw, int64_t groups);
