// Runs of 16 entries of a convolution's im2col rows that are all 0, for the input gradient: an
// input that is a ReLU's output has its gradient discarded wherever it is 0, so the dA kernel
// may leave such runs out (lut_grad_a's `dead`). When C is a multiple of 16 a run is 16
// channels of one pixel: one pass over x flags each pixel's groups of 16 channels, then each
// row copies its taps' flags; otherwise each run's entries are tested one by one.
#include "dead_runs_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lut_gemm_cpu.h"

namespace {

constexpr int64_t kRun = appmult::kDeadRun;

// Channels-last flags, one per pixel and group of 16 channels (c a multiple of 16): 1 where
// all 16 values are 0. Per image and group, the 16 planes are read in order and and-ed into
// one row of flags, which vectorises.
torch::Tensor dead_channel_runs(const torch::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3), groups = c / kRun;
  auto dead = torch::empty({n, hw, groups}, x.options().dtype(torch::kUInt8));
  const float* const src = x.data_ptr<float>();
  uint8_t* const out = dead.data_ptr<uint8_t>();
  at::parallel_for(0, n * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> acc(hw);
    uint8_t* __restrict__ row = acc.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, group = task % groups;
      const float* planes = src + (b * c + group * kRun) * hw;
      for (int64_t p = 0; p < hw; ++p) row[p] = planes[p] == 0.0f;
      for (int64_t ch = 1; ch < kRun; ++ch) {
        const float* __restrict__ plane = planes + ch * hw;
        for (int64_t p = 0; p < hw; ++p) row[p] &= plane[p] == 0.0f;
      }
      uint8_t* __restrict__ o = out + b * hw * groups + group;
      for (int64_t p = 0; p < hw; ++p) o[p * groups] = row[p];
    }
  });
  return dead;
}

// Channels-last flags of every value: 1 where it is 0 (any c).
torch::Tensor zero_flags(const torch::Tensor& x) {
  return x.eq(0).permute({0, 2, 3, 1}).contiguous().to(torch::kUInt8);
}

}  // namespace

torch::Tensor dead_runs(const torch::Tensor& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t dh, int64_t dw) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.scalar_type() == torch::kFloat32 &&
                  x.is_contiguous(),
              "appmult-fx: expected a contiguous float32 [N, C, H, W] tensor on the CPU, got ",
              x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1,
              "appmult-fx: expected kernel, stride and dilation >= 1");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
  TORCH_CHECK(h >= dh * (kh - 1) + 1 && wd >= dw * (kw - 1) + 1, "appmult-fx: a ", kh, "x", kw,
              " kernel with dilation (", dh, ", ", dw, ") is larger than the input ", h, "x", wd);
  const int64_t ho = (h - dh * (kh - 1) - 1) / sh + 1, wo = (wd - dw * (kw - 1) - 1) / sw + 1;
  const int64_t K = kh * kw * c, R = (K + kRun - 1) / kRun, M = n * ho * wo;
  auto flags = torch::empty({1, M, R}, x.options().dtype(torch::kUInt8));
  uint8_t* const f = flags.data_ptr<uint8_t>();
  if (c % kRun == 0) {  // a run is 16 channels of one pixel: copy each tap's group flags
    const auto dead = dead_channel_runs(x);
    const uint8_t* const d = dead.data_ptr<uint8_t>();
    const int64_t groups = c / kRun;
    at::parallel_for(0, M, 256, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        const int64_t b = m / (ho * wo), yo = m / wo % ho, xo = m % wo;
        for (int64_t i = 0; i < kh; ++i)
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t pixel = (b * h + yo * sh + i * dh) * wd + xo * sw + j * dw;
            std::memcpy(f + m * R + (i * kw + j) * groups, d + pixel * groups, groups);
          }
      }
    });
    return flags;
  }
  const auto zero = zero_flags(x);
  const uint8_t* const z = zero.data_ptr<uint8_t>();
  at::parallel_for(0, M, 256, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const int64_t b = m / (ho * wo), yo = m / wo % ho, xo = m % wo;
      const uint8_t* corner = z + ((b * h + yo * sh) * wd + xo * sw) * c;
      for (int64_t r = 0; r < R; ++r) {
        bool dead = true;
        for (int64_t k = r * kRun; k < std::min(K, (r + 1) * kRun) && dead; ++k) {
          const int64_t tap = k / c, i = tap / kw, j = tap % kw;
          dead = corner[(i * dh * wd + j * dw) * c + k % c] != 0;
        }
        f[m * R + r] = dead;
      }
    }
  });
  return flags;
}

void zero_where_zero(torch::Tensor& grad, const torch::Tensor& x) {
  TORCH_CHECK(grad.device().is_cpu() && x.device().is_cpu() &&
                  grad.scalar_type() == torch::kFloat32 && x.scalar_type() == torch::kFloat32 &&
                  grad.is_contiguous() && x.is_contiguous() && grad.sizes() == x.sizes(),
              "appmult-fx: expected contiguous float32 tensors of one shape on the CPU, got ",
              grad.sizes(), " and ", x.sizes());
  float* const g = grad.data_ptr<float>();
  const float* const v = x.data_ptr<float>();
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    float* __restrict__ out = g;
    const float* __restrict__ in = v;
    for (int64_t i = begin; i < end; ++i) out[i] = in[i] == 0.0f ? 0.0f : out[i];
  });
}
