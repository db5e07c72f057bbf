// One-pass CPU quantizer: the codes round(clamp(x / s - zp, qmin, qmax)), the clamp mask and
// whether x holds NaN or inf in one read of x, and the straight-through gradient (g / s, 0
// where clamped) in one read of g.
// The same float32 operations in the same order as the composite torch expression
// (ops/quantizers.py), so codes and gradients are bit-identical to it, signed zeros included;
// the composite takes six passes and three temporaries forward, two passes backward.
#include "quantize_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "channel_runs.h"

namespace {

using appmult_glue::for_channel_runs;

// Round half to even for |v| < 2**22 (every clamped code): adding and subtracting 1.5 * 2**23
// rounds in the default mode (no -ffast-math: the compiler keeps both operations); copysign
// keeps torch.round's -0.0 for -0.5 <= v < 0.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;
  return std::copysign((v + kMagic) - kMagic, v);
}

// Per-channel parameters: one value for all of x, or one per index of x's dimension 0.
struct Channels {
  const float* scale;
  const float* zero_point;
  int64_t inner;  // elements per channel
  bool per_channel;
  float s(int64_t c) const { return scale[per_channel ? c : 0]; }
  float zp(int64_t c) const { return zero_point[per_channel ? c : 0]; }
};

Channels channels(const torch::Tensor& x, const torch::Tensor& scale,
                  const torch::Tensor& zero_point) {
  TORCH_CHECK(scale.numel() == zero_point.numel(),
              "appmult-fx: quantizer scale and zero point differ in size");
  const bool per_channel = scale.numel() != 1;
  TORCH_CHECK(!per_channel || (x.dim() >= 1 && scale.numel() == x.size(0)),
              "appmult-fx: expected one quantizer scale, or one per index of dimension 0 (",
              x.dim() ? x.size(0) : 1, "), got ", scale.numel());
  const int64_t inner = per_channel ? x.numel() / std::max<int64_t>(1, x.size(0)) : x.numel();
  return {scale.data_ptr<float>(), zero_point.data_ptr<float>(), std::max<int64_t>(1, inner),
          per_channel};
}

// Codes (and, with Mask, the clamp mask as 0 / 1 bytes) of n elements sharing one channel;
// returns whether any of the n inputs is NaN or inf (all exponent bits set), which the clamp
// would otherwise hide.
template <bool Mask>
APPMULT_VECTOR_CLONES bool quantize_run(const float* __restrict__ x, float* __restrict__ q,
                                        bool* __restrict__ mask, int64_t n, float s, float zp,
                                        float lo, float hi) {
  constexpr uint32_t kExponent = 0x7f800000u;
  uint32_t nonfinite = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, 4);
    nonfinite |= static_cast<uint32_t>((bits & kExponent) == kExponent);
    const float v = x[i] / s - zp;
    const float clamped = std::min(std::max(v, lo), hi);
    if (Mask) mask[i] = clamped != v;
    q[i] = round_half_even(clamped);
  }
  return nonfinite != 0;
}

// g / s, 0 where the mask is set, over n elements sharing one channel.
APPMULT_VECTOR_CLONES void gradient_run(const float* __restrict__ g,
                                        const bool* __restrict__ mask, float* __restrict__ dx,
                                        int64_t n, float s) {
  const auto* m = reinterpret_cast<const uint8_t*>(mask);
  for (int64_t i = 0; i < n; ++i) {  // +0.0 where masked, as masked_fill (a branch-free select)
    const float d = g[i] / s;
    uint32_t bits;
    std::memcpy(&bits, &d, 4);
    bits &= static_cast<uint32_t>(m[i]) - 1u;
    std::memcpy(dx + i, &bits, 4);
  }
}

void check_float(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
              "appmult-fx: expected a contiguous float32 CPU tensor for ", what);
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor, bool> quantize_forward(
    const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero_point,
    double qmin, double qmax, bool with_mask) {
  check_float(x, "x");
  check_float(scale, "scale");
  check_float(zero_point, "zero_point");
  const Channels ch = channels(x, scale, zero_point);
  auto q = torch::empty_like(x);
  auto mask = with_mask ? torch::empty(x.sizes(), x.options().dtype(torch::kBool))
                        : torch::empty({0}, x.options().dtype(torch::kBool));
  // round_half_even is exact below 2**22 only (quantizer ranges are at most 8 bits)
  TORCH_CHECK(qmin <= qmax && qmin > -(1 << 22) && qmax < (1 << 22),
              "appmult-fx: expected a code range within (-2**22, 2**22), got [", qmin, ", ",
              qmax, "]");
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  const float* xp = x.data_ptr<float>();
  float* qp = q.data_ptr<float>();
  bool* mp = with_mask ? mask.data_ptr<bool>() : nullptr;
  const int64_t runs = x.numel() / ch.inner;
  std::atomic<bool> nonfinite{false};
  for_channel_runs(x.numel(), runs, ch.inner, [&](int64_t begin, int64_t end, int64_t c) {
    const bool bad =
        mp != nullptr ? quantize_run<true>(xp + begin, qp + begin, mp + begin, end - begin,
                                           ch.s(c), ch.zp(c), lo, hi)
                      : quantize_run<false>(xp + begin, qp + begin, nullptr, end - begin,
                                            ch.s(c), ch.zp(c), lo, hi);
    if (bad) nonfinite.store(true, std::memory_order_relaxed);
  });
  return {q, mask, nonfinite.load()};
}

torch::Tensor quantize_backward(const torch::Tensor& g, const torch::Tensor& mask,
                                const torch::Tensor& scale) {
  check_float(g, "the gradient");
  check_float(scale, "scale");
  TORCH_CHECK(mask.scalar_type() == torch::kBool && mask.is_contiguous() &&
                  mask.sizes() == g.sizes(),
              "appmult-fx: expected a contiguous bool clamp mask of the gradient's shape");
  const Channels ch = channels(g, scale, scale);
  auto dx = torch::empty_like(g);
  const float* gp = g.data_ptr<float>();
  const bool* mp = mask.data_ptr<bool>();
  float* dp = dx.data_ptr<float>();
  const int64_t runs = g.numel() / ch.inner;
  for_channel_runs(g.numel(), runs, ch.inner, [&](int64_t begin, int64_t end, int64_t c) {
    gradient_run(gp + begin, mp + begin, dp + begin, end - begin, ch.s(c));
  });
  return dx;
}
