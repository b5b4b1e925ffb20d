// Shared device helpers: fp16/bf16/fp32 conversions through fp32 and 16-byte vectors.
// (Host-side launch helpers: dtype dispatch, device limits, grid sizing, live in launch.cuh.)
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "fastdiff/common.h"

namespace fastdiff {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// N elements moved as one aligned access (16 bytes when N = 16 / sizeof(T)).
template <typename T, int N> struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Elements of T in one 16-byte access.
template <typename T> constexpr int kVec = 16 / sizeof(T);

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The widest access, in elements of T (a power of two, at most 16 bytes), that moves runs of `run`
// elements `stride` apart within buffers x and y: channels_last groups of 10, 20 or 30 channels still
// move 4 or 8 bytes at a time instead of one element.
template <typename T> int vector_width(const void* x, const void* y, int64_t run, int64_t stride) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y);
  for (int v = kVec<T>; v > 1; v /= 2)
    if (run % v == 0 && stride % v == 0 && at % (v * sizeof(T)) == 0) return v;
  return 1;
}

// f(std::integral_constant<int, V>) for V = v, one of vector_width's answers.
template <typename T, typename F> auto dispatch_width(int v, F&& f) {
  switch (v) {
    case 8:
      if constexpr (kVec<T> >= 8) return f(std::integral_constant<int, 8>{});
      break;
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
  }
  return f(std::integral_constant<int, 1>{});
}

}  // namespace fastdiff
