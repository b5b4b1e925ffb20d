// Loads and stores of fp16, bf16 and fp32 through fp32, and dispatch on the dtype code.
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

// Calls f(T{}) with T the C++ type of `dtype`; an unknown code is an invalid value.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F16: return f(__half{});
    case DType::BF16: return f(__nv_bfloat16{});
    case DType::F32: return f(float{});
  }
  return cudaErrorInvalidValue;
}

// Enough blocks of `threads` to cover n work items, capped at a few waves of the current device.
inline int grid_for(int64_t n, int threads) {
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) == cudaSuccess)
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  int64_t blocks = (n + threads - 1) / threads;
  int64_t cap = int64_t(sms) * 8;
  return int(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
}

}  // namespace fastdiff
