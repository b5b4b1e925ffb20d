// GroupNorm with optional fused SiLU (see fastdiff/ops/group_norm.py).
#pragma once
#include <cstddef>

#include "fastdiff/common.h"

namespace fastdiff {

// x and y are dense (n, c, spatial) tensors, spatial being the product of the spatial dims:
// element (i, ch, s) sits at (i * c + ch) * spatial + s (NCHW), or at (i * spatial + s) * c + ch
// when channels_last (NHWC). Statistics per (sample, group) in fp32; weight and bias are c fp32
// values each, or null. y = silu?((x - mean) / sqrt(var + eps) * weight + bias).
//
// A group small enough to stay on chip is read once and normalized from shared memory; larger
// groups take a split reduction whose partial statistics go to `workspace`, which must hold
// group_norm_workspace_size(...) bytes (0 when the group fits on chip; then workspace may be null).
size_t group_norm_workspace_size(int64_t n, int64_t c, int64_t spatial, int64_t groups, DType dtype);

Status group_norm(const void* x, void* y, const float* weight, const float* bias, int64_t n, int64_t c,
                  int64_t spatial, int64_t groups, float eps, bool silu, bool channels_last, DType dtype,
                  void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace fastdiff
