// qk_norm_rope, in place: one block per (batch, seq) token; each warp takes whole heads of q and
// then of k, its lanes pairs of elements (x[2i], x[2i+1]), so a pair's rotation stays within one
// thread. Two passes over a head: the sum of squares (a warp reduction), then normalize, rotate
// and store; the head stays in L1 between them. Every tensor is read through its own strides (q
// and k are views of the fused QKV projection).
#include "dtype.cuh"
#include "fastdiff/qk_norm_rope.h"
#include "launch.cuh"

namespace fastdiff {
namespace {

constexpr int kThreads = 128;

template <typename T> __device__ void norm_rope_head(T* x, int64_t dim_stride, const float* w, const float* cos_row,
                                                     const float* sin_row, int64_t d, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t pairs = (d + 1) / 2;
  float ss = 0.f;
  for (int64_t p = lane; p < pairs; p += 32) {
    const float a = to_f32(x[2 * p * dim_stride]);
    const float b = 2 * p + 1 < d ? to_f32(x[(2 * p + 1) * dim_stride]) : 0.f;
    ss += a * a + b * b;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(~0u, ss, o);
  const float rstd = rsqrtf(ss / d + eps);
  for (int64_t p = lane; p < pairs; p += 32) {
    const int64_t i = 2 * p;
    const bool odd = i + 1 < d;
    float a = to_f32(x[i * dim_stride]) * rstd * w[i];
    float b = odd ? to_f32(x[(i + 1) * dim_stride]) * rstd * w[i + 1] : 0.f;
    if (cos_row) {  // (a, b) -> (a cos - b sin, b cos + a sin)
      const float c = cos_row[i], s = sin_row[i], ra = a * c - b * s;
      b = b * c + a * s;
      a = ra;
    }
    x[i * dim_stride] = from_f32<T>(a);
    if (odd) x[(i + 1) * dim_stride] = from_f32<T>(b);
  }
}

template <typename T> __global__ void __launch_bounds__(kThreads) qk_norm_rope_kernel(QKNormRopeArgs a) {
  const int64_t token = blockIdx.x, b = token / a.seq_len, s = token % a.seq_len;
  const float* cos_row = a.cos ? a.cos + s * a.head_dim : nullptr;
  const float* sin_row = a.sin ? a.sin + s * a.head_dim : nullptr;
  const int warps = blockDim.x / 32;
  for (int64_t u = threadIdx.x / 32; u < 2 * a.heads; u += warps) {  // q's heads, then k's
    const bool is_q = u < a.heads;
    const int64_t head = is_q ? u : u - a.heads;
    const HeadStrides& st = is_q ? a.q_strides : a.k_strides;
    T* x = static_cast<T*>(is_q ? a.q : a.k) + b * st.batch + s * st.seq + head * st.head;
    norm_rope_head(x, st.dim, is_q ? a.q_weight : a.k_weight, cos_row, sin_row, a.head_dim, a.eps);
  }
}

}  // namespace

Status qk_norm_rope(const QKNormRopeArgs& a, cudaStream_t stream) {
  if (a.batch < 0 || a.seq_len < 0 || a.heads < 0 || a.head_dim < 0)
    return Status::invalid("batch, seq_len, heads and head_dim must be >= 0");
  if (!a.q || !a.k || !a.q_weight || !a.k_weight) return Status::invalid("q, k and the weights must not be null");
  if (!a.cos != !a.sin) return Status::invalid("cos and sin go together");
  if (a.cos && a.head_dim % 2) return Status::invalid("the rotation needs an even head_dim");
  const int64_t tokens = a.batch * a.seq_len;
  if (tokens == 0 || a.heads == 0 || a.head_dim == 0) return {};
  if (tokens > 0x7fffffff) return Status::invalid("batch * seq_len must be below 2^31");
  return dispatch_dtype(a.dtype, [&](auto t) {
    using T = decltype(t);
    const int64_t want = 2 * a.heads * 32;  // a warp per head of q and k, at most kThreads
    return launch_kernel(qk_norm_rope_kernel<T>, dim3(unsigned(tokens)), int(want < kThreads ? want : kThreads), 0,
                         stream, a);
  });
}

}  // namespace fastdiff
