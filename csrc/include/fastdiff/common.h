// fastdiff C++ API: one argument struct per op (device pointers, shapes and strides in elements,
// dtypes, options) and a cudaStream_t passed beside it. No libtorch. Every function launches
// asynchronously on `stream`, never synchronizes, allocates nothing, and returns a Status.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

// The version of this API, for `#if FASTDIFF_API_VERSION >= 2`. Bumped by every change to a
// function's signature, an argument struct's fields (added, removed, reordered, renamed, a default
// or a meaning changed) or an enum's values: a program and the libfastdiff.a it links must agree.
//   1: positional arguments.
//   2: argument structs (GroupNormArgs, SamplerStepArgs, AttentionArgs) and enums for options;
//      GroupNorm reads weight and bias in their own dtype; attention's limits as constants.
#define FASTDIFF_API_VERSION 2

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
