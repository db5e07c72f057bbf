// Torch binding of the CUDA LUT-GEMM kernels: checks, table preparation, stream, launch.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <limits>

#include "bit_limits.h"
#include "lut_gemm_cuda.h"

namespace {

int as_int(int64_t v, const char* what) {
  TORCH_CHECK(v <= std::numeric_limits<int>::max(), "appmult-fx: CUDA kernel supports ", what,
              " < 2**31, got ", v);
  return static_cast<int>(v);
}

void check_indices(const torch::Tensor& a, const torch::Tensor& w) {
  TORCH_CHECK(a.is_cuda() && w.is_cuda() && a.device() == w.device(),
              "appmult-fx: CUDA kernel expects a and w on one CUDA device, got ", a.device(),
              " and ", w.device());
  TORCH_CHECK(a.dim() == 3 && w.dim() == 3 && a.size(0) == w.size(0) && a.size(2) == w.size(1),
              "appmult-fx: expected a [B,M,K] and w [B,K,N], got ", a.sizes(), " and ", w.sizes());
  TORCH_CHECK(a.scalar_type() == torch::kUInt8 && w.scalar_type() == torch::kUInt8,
              "appmult-fx: expected uint8 indices, got ", a.scalar_type(), " and ",
              w.scalar_type());
  TORCH_CHECK(a.numel() < std::numeric_limits<int>::max() &&
                  w.numel() < std::numeric_limits<int>::max(),
              "appmult-fx: CUDA kernel supports operands with < 2**31 elements");
}

void check_grad(const torch::Tensor& g, const torch::Tensor& a, const torch::Tensor& w,
                const torch::Tensor& table) {
  TORCH_CHECK(g.is_cuda() && g.device() == a.device() && table.device() == a.device(),
              "appmult-fx: g and the gradient table must be on ", a.device());
  TORCH_CHECK(g.scalar_type() == torch::kFloat32 && table.scalar_type() == torch::kFloat32,
              "appmult-fx: expected float32 g and gradient table, got ", g.scalar_type(), " and ",
              table.scalar_type());
  TORCH_CHECK(g.dim() == 3 && g.size(0) == a.size(0) && g.size(1) == a.size(1) &&
                  g.size(2) == w.size(2),
              "appmult-fx: expected g of shape [", a.size(0), ",", a.size(1), ",", w.size(2),
              "], got ", g.sizes());
}

int num_sms() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

}  // namespace

torch::Tensor lut_bmm(torch::Tensor a, torch::Tensor w, torch::Tensor table) {
  check_indices(a, w);
  TORCH_CHECK(table.scalar_type() == torch::kInt32 && table.device() == a.device(),
              "appmult-fx: expected an int32 table on ", a.device(), ", got ",
              table.scalar_type(), " on ", table.device());
  const auto [bits_a, bits_b] = appmult::table_bits(table);
  const c10::cuda::CUDAGuard guard(a.device());
  a = a.contiguous();
  w = w.contiguous();
  table = table.contiguous();
  // 16-bit shared-memory table when every entry fits in [offset, offset + 65535].
  const auto wide = table.to(torch::kInt64);
  const int64_t lo = wide.min().item<int64_t>(), hi = wide.max().item<int64_t>();
  const bool table16 = hi - lo <= 65535;
  const auto staged = table16 ? (wide - lo).to(torch::kInt32) : table;
  auto y = torch::zeros({a.size(0), a.size(1), w.size(2)}, a.options().dtype(torch::kInt32));
  const cudaError_t err = appmult_cuda::launch_lut_fwd(
      a.data_ptr<uint8_t>(), w.data_ptr<uint8_t>(), staged.data_ptr<int32_t>(), table16,
      static_cast<uint32_t>(lo), bits_a, bits_b, as_int(a.size(0), "B"), as_int(a.size(1), "M"),
      as_int(a.size(2), "K"), as_int(w.size(2), "N"), num_sms(), y.data_ptr<int32_t>(),
      at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "appmult-fx: CUDA lut_bmm failed: ", cudaGetErrorString(err));
  return y;
}

torch::Tensor lut_bmm_grad_a(torch::Tensor g, torch::Tensor a, torch::Tensor w, torch::Tensor ga) {
  check_indices(a, w);
  check_grad(g, a, w, ga);
  const auto [bits_a, bits_b] = appmult::table_bits(ga);
  const c10::cuda::CUDAGuard guard(a.device());
  g = g.contiguous();
  a = a.contiguous();
  w = w.contiguous();
  ga = ga.contiguous();
  auto da = torch::zeros(a.sizes(), g.options());
  const cudaError_t err = appmult_cuda::launch_lut_grad_a(
      g.data_ptr<float>(), a.data_ptr<uint8_t>(), w.data_ptr<uint8_t>(), ga.data_ptr<float>(),
      bits_a, bits_b, as_int(a.size(0), "B"), as_int(a.size(1), "M"), as_int(a.size(2), "K"),
      as_int(w.size(2), "N"), num_sms(), da.data_ptr<float>(), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "appmult-fx: CUDA lut_bmm_grad_a failed: ",
              cudaGetErrorString(err));
  return da;
}

torch::Tensor lut_bmm_grad_w(torch::Tensor g, torch::Tensor a, torch::Tensor w, torch::Tensor gw) {
  check_indices(a, w);
  check_grad(g, a, w, gw);
  const auto [bits_a, bits_b] = appmult::table_bits(gw);
  const c10::cuda::CUDAGuard guard(a.device());
  g = g.contiguous();
  a = a.contiguous();
  w = w.contiguous();
  gw = gw.contiguous();
  auto dw = torch::zeros(w.sizes(), g.options());
  const cudaError_t err = appmult_cuda::launch_lut_grad_w(
      g.data_ptr<float>(), a.data_ptr<uint8_t>(), w.data_ptr<uint8_t>(), gw.data_ptr<float>(),
      bits_a, bits_b, as_int(a.size(0), "B"), as_int(a.size(1), "M"), as_int(a.size(2), "K"),
      as_int(w.size(2), "N"), num_sms(), dw.data_ptr<float>(), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "appmult-fx: CUDA lut_bmm_grad_w failed: ",
              cudaGetErrorString(err));
  return dw;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "appmult-fx CUDA LUT-GEMM kernels";
  m.def("bit_limits", &appmult::bit_limits, "(MIN_BITS, MAX_BITS) the table checks use");
  m.def("lut_bmm", &lut_bmm, "Y = SUM_k T[a, w] (int32, mod 2**32)");
  m.def("lut_bmm_grad_a", &lut_bmm_grad_a, "dA = SUM_n G * GA[a, w]");
  m.def("lut_bmm_grad_w", &lut_bmm_grad_w, "dW = SUM_m G * GW[a, w]");
}
