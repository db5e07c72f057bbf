// Host launchers of the CUDA LUT-GEMM kernels: grid shape, reduction split, shared-memory size.
#include "lut_gemm_cuda.h"
#include "lut_gemm_cuda_kernels.cuh"

namespace appmult_cuda {
namespace {

constexpr int kMaxGridYZ = 65535;

int ceil_div(int x, int y) { return (x + y - 1) / y; }

// Splits of a reduction of length `red` so that the grid has about two blocks per SM, each split
// still covering at least four reduction steps. Returns the split count; *chunk is its length.
int reduction_splits(int tiles, int red, int num_sms, int* chunk) {
  int splits = ceil_div(2 * num_sms, tiles > 0 ? tiles : 1);
  const int most = ceil_div(red, 4 * kStep);
  splits = splits < 1 ? 1 : (splits > most ? most : splits);
  *chunk = kStep * ceil_div(ceil_div(red, splits), kStep);
  return ceil_div(red, *chunk);
}

template <typename Kernel>
cudaError_t set_smem(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes));
}

bool grid_fits(int B, int splits, int rows) {
  return static_cast<int64_t>(B) * splits <= kMaxGridYZ && ceil_div(rows, kTile) <= kMaxGridYZ;
}

}  // namespace

cudaError_t launch_lut_fwd(const uint8_t* a, const uint8_t* w, const int32_t* table, bool table16,
                           uint32_t offset, int bits_a, int bits_b, int B, int M, int K, int N,
                           int num_sms, int32_t* y, cudaStream_t stream) {
  if (B == 0 || M == 0 || N == 0 || K == 0) return cudaSuccess;
  const int tiles = ceil_div(M, kTile) * ceil_div(N, kTile) * B;
  int chunk = 0;
  const int splits = reduction_splits(tiles, K, num_sms, &chunk);
  if (!grid_fits(B, splits, M)) return cudaErrorInvalidConfiguration;
  const dim3 grid(ceil_div(N, kTile), ceil_div(M, kTile), B * splits);
  if (table16) {
    const size_t smem = sizeof(uint16_t) << (bits_a + bits_b);
    cudaError_t err = set_smem(lut_fwd_kernel<true>, smem);
    if (err != cudaSuccess) return err;
    APPMULT_LAUNCH(lut_fwd_kernel<true>, grid, kThreads, smem, stream, a, w, table, bits_a, bits_b,
        M, K, N, splits, chunk, offset, y);
  } else {
    APPMULT_LAUNCH(lut_fwd_kernel<false>, grid, kThreads, 0, stream, a, w, table, bits_a, bits_b,
        M, K, N, splits, chunk, 0u, y);
  }
  return cudaGetLastError();
}

cudaError_t launch_lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const float* ga,
                              int bits_a, int bits_b, int B, int M, int K, int N,
                              int num_sms, float* da,
                              cudaStream_t stream) {
  if (B == 0 || M == 0 || N == 0 || K == 0) return cudaSuccess;
  const int tiles = ceil_div(M, kTile) * ceil_div(K, kTile) * B;
  int chunk = 0;
  const int splits = reduction_splits(tiles, N, num_sms, &chunk);
  if (!grid_fits(B, splits, M)) return cudaErrorInvalidConfiguration;
  const dim3 grid(ceil_div(K, kTile), ceil_div(M, kTile), B * splits);
  if (bits_a + bits_b <= 14) {
    const size_t smem = sizeof(float) << (bits_a + bits_b);
    cudaError_t err = set_smem(lut_grad_a_kernel<true>, smem);
    if (err != cudaSuccess) return err;
    APPMULT_LAUNCH(lut_grad_a_kernel<true>, grid, kThreads, smem, stream, g, a, w, ga, bits_a,
        bits_b, M, K, N, splits, chunk, da);
  } else {
    APPMULT_LAUNCH(lut_grad_a_kernel<false>, grid, kThreads, 0, stream, g, a, w, ga, bits_a, bits_b,
        M, K, N, splits, chunk, da);
  }
  return cudaGetLastError();
}

cudaError_t launch_lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const float* gw,
                              int bits_a, int bits_b, int B, int M, int K, int N,
                              int num_sms, float* dw,
                              cudaStream_t stream) {
  if (B == 0 || M == 0 || N == 0 || K == 0) return cudaSuccess;
  const int tiles = ceil_div(K, kTile) * ceil_div(N, kTile) * B;
  int chunk = 0;
  const int splits = reduction_splits(tiles, M, num_sms, &chunk);
  if (!grid_fits(B, splits, K)) return cudaErrorInvalidConfiguration;
  const dim3 grid(ceil_div(N, kTile), ceil_div(K, kTile), B * splits);
  if (bits_a + bits_b <= 14) {
    const size_t smem = sizeof(float) << (bits_a + bits_b);
    cudaError_t err = set_smem(lut_grad_w_kernel<true>, smem);
    if (err != cudaSuccess) return err;
    APPMULT_LAUNCH(lut_grad_w_kernel<true>, grid, kThreads, smem, stream, g, a, w, gw, bits_a,
        bits_b, M, K, N, splits, chunk, dw);
  } else {
    APPMULT_LAUNCH(lut_grad_w_kernel<false>, grid, kThreads, 0, stream, g, a, w, gw, bits_a, bits_b,
        M, K, N, splits, chunk, dw);
  }
  return cudaGetLastError();
}

}  // namespace appmult_cuda
