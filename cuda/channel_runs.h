// Elementwise CPU passes whose parameters vary along one dimension of a contiguous tensor.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace appmult_glue {

constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk

// The element loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (GCC function multiversioning); elsewhere they are compiled once.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define APPMULT_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define APPMULT_VECTOR_CLONES
#endif

// Calls f(begin, end, channel) over the elements [0, numel) of a contiguous tensor in parallel
// chunks split where the channel changes: element i is in channel (i / inner) % channels.
template <typename F>
void for_channel_runs(int64_t numel, int64_t channels, int64_t inner, const F& f) {
  inner = std::max<int64_t>(1, inner);
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t run = i / inner, stop = std::min(end, (run + 1) * inner);
      f(i, stop, run % std::max<int64_t>(1, channels));
      i = stop;
    }
  });
}

}  // namespace appmult_glue
