// GroupNorm with optional fused SiLU (see fastdiff/ops/group_norm.py).
#pragma once
#include <cstddef>
#include <optional>

#include "fastdiff/common.h"

namespace fastdiff {

// Where element (i, ch, s) of a dense (n, c, spatial) tensor sits.
enum class Layout : int {
  NCHW = 0,  // at (i * c + ch) * spatial + s (contiguous)
  NHWC = 1,  // at (i * spatial + s) * c + ch (channels_last)
};

// The function applied to the normalized output.
enum class Activation : int { None = 0, SiLU = 1 };

// y = act((x - mean) / sqrt(var + eps) * weight + bias), statistics per (sample, group) in fp32.
struct GroupNormArgs {
  const void* x = nullptr;       // (n, c, spatial) of `dtype`, dense in `layout`; spatial is the
  void* y = nullptr;             // product of the spatial dims. y: the same shape, dtype and layout.
  const void* weight = nullptr;  // c values of `weight_dtype`, or null (all ones)
  const void* bias = nullptr;    // c values of `weight_dtype`, or null (all zeros)
  int64_t n = 0, c = 0, spatial = 0;
  int64_t groups = 0;  // divides c
  DType dtype = DType::F16;
  std::optional<DType> weight_dtype;  // of weight and bias; unset: dtype. Converted to fp32 on chip.
  Layout layout = Layout::NCHW;
  Activation activation = Activation::None;
  float eps = 1e-5f;
  // Scratch for large groups: group_norm_workspace_size(args) bytes (none when groups fit on chip).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// A group small enough to stay on chip is read once and normalized from shared memory; larger
// groups take a split reduction whose partial statistics go to the workspace. The bytes of
// workspace `args` need (from n, c, spatial, groups and dtype; 0 when the group fits on chip) on
// the current device, whose shared memory decides what fits.
size_t group_norm_workspace_size(const GroupNormArgs& args);

Status group_norm(const GroupNormArgs& args, cudaStream_t stream);

}  // namespace fastdiff
