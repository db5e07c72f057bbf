// Torch side of the narrow-column fast path: table rows prepared for the register permutes,
// operands made contiguous, the kernels of lut_gemm_cpu_narrow.cpp called.
#include "lut_gemm_cpu_narrow.h"

#include <ATen/Parallel.h>

#include "lut_gemm_cpu.h"

namespace appmult_narrow {
namespace {

constexpr int64_t kWidth = 16;  // codes of the column operand one register row holds
constexpr int64_t kRows = 256;  // rows of the prepared tables: every uint8 row code is inside

// [kRows, kWidth] zeros of `dtype` with `table` [na, nb] in the top-left corner (+ extra rows).
torch::Tensor padded_rows(const torch::Tensor& table, torch::Dtype dtype, int64_t extra) {
  auto rows = torch::zeros({kRows + extra, kWidth}, table.options().dtype(dtype));
  rows.narrow(0, 0, table.size(0)).narrow(1, 0, table.size(1)).copy_(table);
  return rows;
}

}  // namespace

bool serves(int64_t cols) {
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  return cols <= kWidth;
#else
  return false;
#endif
}

namespace {

// rt: row u = the 16 low bytes, then the 16 high bytes of T[u][:] - offset (little-endian
// int16); rows past the table and row 256 zero.
torch::Tensor row_tables(const torch::Tensor& table, int64_t offset) {
  const auto entries = (table.to(torch::kInt64) - offset).to(torch::kInt16);
  return padded_rows(entries, torch::kInt16, 1)
      .view(torch::kUInt8)
      .view({kRows + 1, kWidth, 2})
      .permute({0, 2, 1})
      .contiguous();
}

}  // namespace

torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& w, const torch::Tensor& table,
                      int64_t offset, int32_t start) {
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = w.size(2);
  auto y = torch::empty({B, M, N}, a.options().dtype(torch::kInt32));
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  const auto rt = row_tables(table, offset);
  const auto ac = a.contiguous(), wc = w.contiguous();
  appmult_cpu_narrow::lut_fwd(ac.data_ptr<uint8_t>(), wc.data_ptr<uint8_t>(),
                              rt.data_ptr<uint8_t>(), B, M, K, N, start, y.data_ptr<int32_t>(),
                              at::get_num_threads());
#endif
  return y;
}

torch::Tensor forward_windows(const appmult_rows::Windows& a, int64_t M, int64_t K,
                              const torch::Tensor& w, const torch::Tensor& table, int64_t offset,
                              int32_t start) {
  const int64_t N = w.size(2);
  auto y = torch::empty({1, M, N}, w.options().dtype(torch::kInt32));
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  const auto rt = row_tables(table, offset);
  const auto wc = w.contiguous();
  appmult_cpu_narrow::lut_fwd_windows(a, wc.data_ptr<uint8_t>(), rt.data_ptr<uint8_t>(), M, K, N,
                                      start, y.data_ptr<int32_t>(), at::get_num_threads());
#endif
  return y;
}

torch::Tensor grad_a(const torch::Tensor& g, const torch::Tensor& a, const torch::Tensor& w,
                     const torch::Tensor& ga) {
  auto da = torch::empty(a.sizes(), g.options());
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  const auto gr = padded_rows(ga, torch::kFloat32, 0);
  const auto gc = g.contiguous(), ac = a.contiguous(), wc = w.contiguous();
  appmult_cpu_narrow::lut_grad_a(gc.data_ptr<float>(), ac.data_ptr<uint8_t>(),
                                 wc.data_ptr<uint8_t>(), gr.data_ptr<float>(), a.size(0),
                                 a.size(1), a.size(2), w.size(2), da.data_ptr<float>(),
                                 at::get_num_threads());
#endif
  return da;
}

torch::Tensor grad_w(const torch::Tensor& g, const torch::Tensor& a, const torch::Tensor& w,
                     const torch::Tensor& gw) {
  auto dw = torch::empty(w.sizes(), g.options());
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  const auto gr = padded_rows(gw, torch::kFloat32, 0);
  const auto gc = g.contiguous(), ac = a.contiguous(), wc = w.contiguous();
  appmult_cpu_narrow::lut_grad_w(gc.data_ptr<float>(), ac.data_ptr<uint8_t>(),
                                 wc.data_ptr<uint8_t>(), gr.data_ptr<float>(), a.size(0),
                                 a.size(1), a.size(2), w.size(2), dw.data_ptr<float>(),
                                 at::get_num_threads());
#endif
  return dw;
}

}  // namespace appmult_narrow
