// CUDA FP LUT-GEMM: torch binding (checks, casts, stream) of the kernels in
// fp_lut_gemm_cuda_kernels.cuh; bit-identical to appmult_fx/ops/fp_reference.py.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <string>

#include "fp_lut_gemm_cuda_kernels.cuh"

namespace {

torch::Tensor cast(const torch::Tensor& x, int m, bool nearest, cudaStream_t stream) {
  auto xc = x.contiguous();
  auto out = torch::empty_like(xc);
  const cudaError_t err = appmult_fp::launch_fp_cast(
      reinterpret_cast<const uint32_t*>(xc.data_ptr<float>()),
      reinterpret_cast<uint32_t*>(out.data_ptr<float>()), xc.numel(), m, nearest, stream);
  TORCH_CHECK(err == cudaSuccess, "appmult-fx: CUDA FP cast failed: ", cudaGetErrorString(err));
  return out;
}

// operands are cast to (1, 8, m) here (rounding "truncate" or "nearest")
torch::Tensor fp_bmm(torch::Tensor a, torch::Tensor b, torch::Tensor table, int64_t m,
                     const std::string& rounding) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda() && table.is_cuda(), "expected CUDA tensors");
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3, "expected a [B,M,K] and b [B,K,N]");
  TORCH_CHECK(a.scalar_type() == torch::kFloat32 && b.scalar_type() == torch::kFloat32,
              "expected float32 operands");
  TORCH_CHECK(table.scalar_type() == torch::kInt32, "expected an int32 mantissa table");
  TORCH_CHECK(m >= 1 && m <= 11 && table.numel() == (int64_t(1) << (2 * m)),
              "mantissa table size does not match m");
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(1), "batch/inner dimensions differ");
  TORCH_CHECK(rounding == "truncate" || rounding == "nearest", "rounding must be truncate or nearest");
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  auto stream = at::cuda::getCurrentCUDAStream();
  const bool nearest = rounding == "nearest";
  auto ac = cast(a, int(m), nearest, stream), bc = cast(b, int(m), nearest, stream);
  auto tc = table.contiguous();
  auto out = torch::empty({B, M, N}, a.options());
  const cudaError_t err = appmult_fp::launch_fp_bmm(
      reinterpret_cast<const uint32_t*>(ac.data_ptr<float>()),
      reinterpret_cast<const uint32_t*>(bc.data_ptr<float>()), tc.data_ptr<int32_t>(), int(B),
      int(M), int(K), int(N), int(m), out.data_ptr<float>(), stream);
  TORCH_CHECK(err == cudaSuccess, "appmult-fx: CUDA fp_bmm failed: ", cudaGetErrorString(err));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("fp_bmm", &fp_bmm, "FP LUT-GEMM (CUDA): sequential-k float32 sum of LUT products");
}
