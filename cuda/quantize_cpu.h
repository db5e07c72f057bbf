// One-pass CPU quantizer (quantize_cpu.cpp), bound in lut_gemm_cpu.cpp's module.
#pragma once

#include <torch/extension.h>

#include <tuple>

// {codes, clamp mask, any NaN or inf in x} of x: round(clamp(x / scale - zero_point, qmin,
// qmax)), the mask (bool, true where clamped) only when with_mask (else an empty tensor).
// scale and zero_point hold one value or one per index of x's dimension 0.
std::tuple<torch::Tensor, torch::Tensor, bool> quantize_forward(
    const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero_point,
    double qmin, double qmax, bool with_mask);

// The straight-through gradient of x: g / scale, 0 where the mask is set.
torch::Tensor quantize_backward(const torch::Tensor& g, const torch::Tensor& mask,
                                const torch::Tensor& scale);
