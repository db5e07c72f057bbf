// One-pass CPU rescale of exact integer-domain sums: y = float32(double(acc) * scale[c]) and
// its gradient d_acc = double(g) * scale[c] (as acc's dtype), where the composite torch
// expression (ops/int_layers.py) widens, multiplies and narrows in three passes and three
// temporaries each way. Same operations, same rounding: bit-identical results.
#include "rescale_cpu.h"

#include "channel_runs.h"

namespace {

using appmult_glue::for_channel_runs;

template <typename In, typename Out>
APPMULT_VECTOR_CLONES void scale_run(const In* __restrict__ x, Out* __restrict__ y, int64_t n,
                                     double s) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<Out>(static_cast<double>(x[i]) * s);
}

// Elements per channel and channel count of a contiguous tensor whose scale has one value or
// one per index of dimension `dim`.
std::pair<int64_t, int64_t> channel_layout(const torch::Tensor& t, const torch::Tensor& scale,
                                           int64_t dim) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(),
              "appmult-fx: expected a contiguous CPU tensor to rescale");
  TORCH_CHECK(scale.device().is_cpu() && scale.scalar_type() == torch::kFloat64 &&
                  scale.is_contiguous(),
              "appmult-fx: expected a contiguous float64 CPU scale");
  if (scale.numel() == 1) return {t.numel(), 1};
  dim = dim < 0 ? dim + t.dim() : dim;
  TORCH_CHECK(dim >= 0 && dim < t.dim() && scale.numel() == t.size(dim),
              "appmult-fx: expected one scale or one per index of dimension ", dim, " (",
              t.sizes(), "), got ", scale.numel());
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
  return {inner, t.size(dim)};
}

template <typename In, typename Out>
void rescale_into(const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& scale,
                  int64_t inner, int64_t channels) {
  const In* xp = x.data_ptr<In>();
  Out* yp = y.data_ptr<Out>();
  const double* sp = scale.data_ptr<double>();
  const bool per_channel = scale.numel() != 1;
  for_channel_runs(x.numel(), channels, inner, [&](int64_t begin, int64_t end, int64_t c) {
    scale_run<In, Out>(xp + begin, yp + begin, end - begin, sp[per_channel ? c : 0]);
  });
}

}  // namespace

torch::Tensor rescale_forward(const torch::Tensor& acc, const torch::Tensor& scale,
                              int64_t channel_dim) {
  const auto [inner, channels] = channel_layout(acc, scale, channel_dim);
  auto y = torch::empty(acc.sizes(), acc.options().dtype(torch::kFloat32));
  if (acc.scalar_type() == torch::kFloat32)
    rescale_into<float, float>(acc, y, scale, inner, channels);
  else if (acc.scalar_type() == torch::kFloat64)
    rescale_into<double, float>(acc, y, scale, inner, channels);
  else
    TORCH_CHECK(false, "appmult-fx: expected float32 or float64 sums, got ", acc.scalar_type());
  return y;
}

torch::Tensor rescale_backward(const torch::Tensor& g, const torch::Tensor& scale,
                               int64_t channel_dim, bool to_double) {
  TORCH_CHECK(g.scalar_type() == torch::kFloat32, "appmult-fx: expected a float32 gradient");
  const auto [inner, channels] = channel_layout(g, scale, channel_dim);
  const auto dtype = to_double ? torch::kFloat64 : torch::kFloat32;
  auto d = torch::empty(g.sizes(), g.options().dtype(dtype));
  if (to_double)
    rescale_into<float, double>(g, d, scale, inner, channels);
  else
    rescale_into<float, float>(g, d, scale, inner, channels);
  return d;
}
