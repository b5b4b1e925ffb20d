// Shared device helpers: fp16/bf16/fp32 conversions through fp32, 16-byte vectors, dtype
// dispatch and launch sizing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "fastdiff/common.h"

namespace fastdiff {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// N elements moved as one aligned access (16 bytes when N = 16 / sizeof(T)).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Elements of T in one 16-byte access.
template <typename T> constexpr int kVec = 16 / sizeof(T);

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Calls f(T{}) with T the C++ type of `dtype`.
template <typename F>
Status dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F16: return f(__half{});
    case DType::BF16: return f(__nv_bfloat16{});
    case DType::F32: return f(float{});
  }
  return Status::invalid("dtype code must be 0 (f16), 1 (bf16) or 2 (f32)");
}

// The status of the launch just made (launch configuration errors and earlier sticky faults).
inline Status last_launch() { return {cudaGetLastError(), nullptr}; }

// The current device's SM count, queried once per device.
inline Status sm_count(int* sms) {
  static int cache[128] = {};
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return {err, nullptr};
  if (device < 128 && cache[device]) return *sms = cache[device], Status{};
  err = cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return {err, nullptr};
  if (device < 128) cache[device] = *sms;
  return {};
}

// Blocks for a grid-stride loop over `work` items of `threads`: enough to fill every SM a few
// times over, never more than the work needs.
inline Status grid_stride_blocks(int64_t work, int threads, int* blocks) {
  int sms = 0;
  Status s = sm_count(&sms);
  if (!s.ok()) return s;
  int64_t need = (work + threads - 1) / threads, cap = int64_t(sms) * (2048 / threads) * 2;
  *blocks = int(need < 1 ? 1 : (need < cap ? need : cap));
  return {};
}

}  // namespace fastdiff
