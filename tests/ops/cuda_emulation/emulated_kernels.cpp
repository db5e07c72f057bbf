// C ABI over the host-emulated CUDA launchers (g++ -DAPPMULT_CUDA_HOST_EMULATION, see
// cuda/cuda_host_shim.h), loaded with ctypes by tests/ops/cuda_emulation/emulated.py.
// Pointers are host pointers to contiguous arrays; outputs must be zero-filled, as on a GPU.
#include "fp_lut_gemm_cuda_kernels.cuh"
#include "lut_gemm_cuda.h"

extern "C" {

int emu_lut_fwd(const uint8_t* a, const uint8_t* w, const int32_t* table, int table16,
                uint32_t offset, int bits_a, int bits_b, int B, int M, int K, int N,
                int num_sms, int32_t* y) {
  return appmult_cuda::launch_lut_fwd(a, w, table, table16 != 0, offset, bits_a, bits_b, B, M, K,
                                      N, num_sms, y, nullptr);
}

int emu_lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const float* ga, int bits_a,
                   int bits_b, int B, int M, int K, int N, int num_sms, float* da) {
  return appmult_cuda::launch_lut_grad_a(g, a, w, ga, bits_a, bits_b, B, M, K, N, num_sms, da,
                                         nullptr);
}

int emu_lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const float* gw, int bits_a,
                   int bits_b, int B, int M, int K, int N, int num_sms, float* dw) {
  return appmult_cuda::launch_lut_grad_w(g, a, w, gw, bits_a, bits_b, B, M, K, N, num_sms, dw,
                                         nullptr);
}

int emu_fp_cast(const uint32_t* src, uint32_t* dst, int64_t n, int m, int nearest) {
  return appmult_fp::launch_fp_cast(src, dst, n, m, nearest != 0, nullptr);
}

int emu_fp_bmm(const uint32_t* a, const uint32_t* b, const int32_t* table, int B, int M, int K,
               int N, int m, float* out) {
  return appmult_fp::launch_fp_bmm(a, b, table, B, M, K, N, m, out, nullptr);
}

}  // extern "C"
