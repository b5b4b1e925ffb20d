// fastdiff C++ API: plain device pointers, shapes and strides in elements, a dtype code and a
// cudaStream_t. No libtorch. Every function launches asynchronously on `stream`, never
// synchronizes, allocates nothing, and returns a Status.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace fastdiff {

// The element type of a buffer; the values are the codes the Python binding passes.
enum class DType : int { F16 = 0, BF16 = 1, F32 = 2 };

// The outcome of a call: a CUDA error, or cudaErrorInvalidValue with a static message saying
// which argument was wrong.
struct Status {
  cudaError_t error = cudaSuccess;
  const char* message = nullptr;

  bool ok() const { return error == cudaSuccess; }
  const char* what() const { return message ? message : cudaGetErrorString(error); }
  static Status invalid(const char* why) { return {cudaErrorInvalidValue, why}; }
};

}  // namespace fastdiff
