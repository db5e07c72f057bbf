// Host emulation of the CUDA subset the kernels use, so that their device code compiles as C++
// (g++ -std=c++20 -DAPPMULT_CUDA_HOST_EMULATION) and runs on a CPU for parity tests: the blocks
// of a grid run one after another; the threads of a block run as OS threads that meet at a
// std::barrier for __syncthreads(); `__shared__` variables are process-wide statics (one block
// runs at a time); dynamic shared memory is a fresh buffer per block filled with a poison
// pattern (so a read before write shows); atomics are std::atomic_ref read-modify-writes.
// Not a general CUDA emulator: no warps, shuffles, streams or async copies.
#pragma once
#if defined(__CUDACC__)
#error "cuda_host_shim.h is for host (g++) builds only"
#endif

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
struct alignas(16) float4 {
  float x, y, z, w;
};

inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

using std::max;
using std::min;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
using cudaStream_t = void*;

namespace appmult_emu {

inline thread_local unsigned char* dynamic_smem = nullptr;
inline thread_local std::barrier<>* block_barrier = nullptr;
inline cudaError_t last_error = cudaSuccess;
constexpr size_t kMaxDynamicSmem = 227 * 1024;  // the sm_90 opt-in limit
constexpr unsigned char kPoison = 0xA5;

// The OS threads of one block, kept between blocks and launches (creating 256 threads per block
// would dominate the run time). run(job) calls job(t) on threads t = 0..size-1 and waits.
class ThreadTeam {
 public:
  explicit ThreadTeam(unsigned size) : start_(size + 1), done_(size + 1) {
    for (unsigned t = 0; t < size; ++t) std::thread([this, t] { serve(t); }).detach();
  }
  void run(const std::function<void(unsigned)>& job) {
    job_ = &job;
    start_.arrive_and_wait();
    done_.arrive_and_wait();
  }
  void retire() {  // lets the threads exit; the object itself is never freed (detached threads)
    stop_ = true;
    start_.arrive_and_drop();
  }

 private:
  void serve(unsigned t) {
    for (;;) {
      start_.arrive_and_wait();
      if (stop_) return;
      (*job_)(t);
      done_.arrive_and_wait();
    }
  }
  std::barrier<> start_, done_;
  const std::function<void(unsigned)>* job_ = nullptr;
  bool stop_ = false;
};

inline ThreadTeam& team_of(unsigned size) {
  static ThreadTeam* team = nullptr;
  static unsigned team_size = 0;
  if (team == nullptr || team_size != size) {
    if (team != nullptr) team->retire();
    team = new ThreadTeam(size);
    team_size = size;
  }
  return *team;
}

// Runs kernel(args...) over grid x block: blocks in order, a block's threads concurrently.
// Not thread-safe: one launch at a time per process (the tests launch from one thread).
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args... args) {
  const unsigned nthreads = block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      smem > kMaxDynamicSmem) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  ThreadTeam& team = team_of(nthreads);
  std::vector<unsigned char> buffer(smem + 16);
  unsigned char* base = buffer.data();
  base += (16 - reinterpret_cast<uintptr_t>(base) % 16) % 16;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::fill(buffer.begin(), buffer.end(), kPoison);  // shared memory starts undefined
        std::barrier<> sync(nthreads);
        const std::function<void(unsigned)> job = [&](unsigned t) {
          threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          blockIdx = dim3(bx, by, bz);
          blockDim = block;
          gridDim = grid;
          dynamic_smem = base;
          block_barrier = &sync;
          kernel(args...);
          sync.arrive_and_drop();  // an exited thread no longer holds the others at a barrier
        };
        team.run(job);
      }
}

}  // namespace appmult_emu

inline void __syncthreads() { appmult_emu::block_barrier->arrive_and_wait(); }

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

template <typename T>
inline T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}

inline float __uint_as_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline float __fadd_rn(float a, float b) { return a + b; }

template <typename Kernel>
inline cudaError_t cudaFuncSetAttribute(Kernel, cudaFuncAttribute, int bytes) {
  return bytes <= static_cast<int>(appmult_emu::kMaxDynamicSmem) ? cudaSuccess
                                                                  : cudaErrorInvalidConfiguration;
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t err = appmult_emu::last_error;
  appmult_emu::last_error = cudaSuccess;
  return err;
}

inline const char* cudaGetErrorString(cudaError_t err) {
  return err == cudaSuccess ? "no error" : "emulated CUDA launch error";
}
