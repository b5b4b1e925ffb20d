// fastdiff C++ API: plain device pointers, element counts, a dtype code and a cudaStream_t.
// No libtorch. Every function returns cudaSuccess or the CUDA error of its launch.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace fastdiff {

// The element type of a buffer; the values are the codes the Python binding passes.
enum class DType : int { F16 = 0, BF16 = 1, F32 = 2 };

}  // namespace fastdiff
