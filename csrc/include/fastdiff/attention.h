// Scaled dot-product attention on tensor cores (see fastdiff/ops/attention.py).
#pragma once
#include <optional>

#include "fastdiff/common.h"

namespace fastdiff {

// What the kernel can run (its capability, not a speed policy). Any key count: keys that do not
// fit in shared memory at once stream through it in chunks. It is fastest for short key
// sequences (text conditioning: 77 keys), where all of K and V stay on chip.
constexpr int64_t kAttentionMinHeadDim = 1;
constexpr int64_t kAttentionMaxHeadDim = 160;
constexpr int64_t kAttentionMinSeqK = 1;
constexpr int64_t kAttentionMaxSeq = (int64_t(1) << 31) - 1;  // for seq_q and seq_k
constexpr DType kAttentionDTypes[] = {DType::F16, DType::BF16};
// Also: batch x heads x ceil(seq_q / 64) blocks at most 65535 x (2^31 - 1).

// Element strides of a (batch, sequence, head, head_dim) tensor over its first three axes; the
// head_dim axis has unit stride.
struct Strides3 {
  int64_t batch, seq, head;
};

// out = softmax(scale * q k^T) v per batch and head; softmax and accumulation in fp32.
struct AttentionArgs {
  const void* q = nullptr;  // (batch, seq_q, heads, head_dim)
  const void* k = nullptr;  // (batch, seq_k, heads, head_dim)
  const void* v = nullptr;  // (batch, seq_k, heads, head_dim)
  void* out = nullptr;      // contiguous (batch, seq_q, heads, head_dim)
  int64_t batch = 0, heads = 0, seq_q = 0, seq_k = 0, head_dim = 0;
  // Strides of q, k and v; unset: contiguous. Views of one fused QKV projection are fine.
  std::optional<Strides3> q_strides, k_strides, v_strides;
  std::optional<float> scale;  // unset: 1 / sqrt(head_dim)
  DType dtype = DType::F16;    // one of kAttentionDTypes, for q, k, v and out
};

Status attention(const AttentionArgs& args, cudaStream_t stream);

}  // namespace fastdiff
