// Cross-attention for short key/value sequences (see fastdiff/ops/attention.py).
#pragma once
#include "fastdiff/common.h"

namespace fastdiff {

// Element strides of a (batch, sequence, head, head_dim) tensor over its first three axes; the
// head_dim axis has unit stride.
struct Strides3 {
  int64_t batch, seq, head;
};

// out = softmax(scale * q k^T) v per batch and head. q: (batch, seq_q, heads, head_dim), k and v:
// (batch, seq_k, heads, head_dim), any strides in `*_strides`; out: contiguous
// (batch, seq_q, heads, head_dim). fp16 or bf16; softmax and accumulation in fp32.
// head_dim 1..160. Built for short key sequences (text conditioning, seq_k up to a few hundred):
// one block keeps up to ~96 KiB of K and V in shared memory and streams longer sequences through it.
Status attention(const void* q, const void* k, const void* v, void* out, int64_t batch, int64_t heads, int64_t seq_q,
                 int64_t seq_k, int64_t head_dim, Strides3 q_strides, Strides3 k_strides, Strides3 v_strides,
                 float scale, DType dtype, cudaStream_t stream);

}  // namespace fastdiff
