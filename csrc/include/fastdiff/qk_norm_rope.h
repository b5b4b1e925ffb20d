// Per-head RMSNorm of q and k, then the rotary embedding, in place (see fastdiff/ops/qk_norm_rope.py).
#pragma once
#include "fastdiff/common.h"

namespace fastdiff {

// Strides in elements of a (batch, seq, heads, head_dim) tensor.
struct HeadStrides {
  int64_t batch = 0, seq = 0, head = 0, dim = 1;
};

// q <- rope(q / rms(q) * q_weight), k likewise with k_weight, over head_dim for every (batch, seq,
// head); rope rotates each pair (x[2i], x[2i+1]) by the angle whose cos and sin stand at column 2i
// of row `seq` of cos and sin (seq_len, head_dim), fp32; no rotation when cos is null. Statistics
// and arithmetic in fp32. q and k may be views of one fused QKV projection.
struct QKNormRopeArgs {
  void* q = nullptr;
  HeadStrides q_strides{};
  void* k = nullptr;
  HeadStrides k_strides{};
  const float* q_weight = nullptr;  // head_dim values, dense
  const float* k_weight = nullptr;
  const float* cos = nullptr;  // (seq_len, head_dim), dense; null: no rotation
  const float* sin = nullptr;
  int64_t batch = 0, seq_len = 0, heads = 0, head_dim = 0;  // head_dim even with rotation
  DType dtype = DType::F16;                                 // of q and k
  float eps = 1e-6f;
};

Status qk_norm_rope(const QKNormRopeArgs& args, cudaStream_t stream);

}  // namespace fastdiff
