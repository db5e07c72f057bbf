// One-pass CPU rescale of integer-domain sums (rescale_cpu.cpp), bound in lut_gemm_cpu.cpp.
#pragma once

#include <torch/extension.h>

// float32(double(acc) * scale) for float32 or float64 acc; scale (float64) holds one value or
// one per index of acc's dimension channel_dim (negative counts from the end).
torch::Tensor rescale_forward(const torch::Tensor& acc, const torch::Tensor& scale,
                              int64_t channel_dim);

// The gradient of acc: double(g) * scale, as float64 when to_double (a float64 acc), else
// rounded to float32.
torch::Tensor rescale_backward(const torch::Tensor& g, const torch::Tensor& scale,
                               int64_t channel_dim, bool to_double);
