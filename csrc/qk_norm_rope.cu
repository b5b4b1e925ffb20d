// qk_norm_rope, in place: one block per (batch, seq) token; each warp takes whole heads of q and
// then of k, its lanes runs of whole pairs (x[2i], x[2i+1]), so a pair's rotation stays within one
// thread: 16-byte vectors of elements when the heads are dense and aligned (the fused QKV
// projection's views are), single pairs through the strides otherwise. Two passes over a head: the
// sum of squares (a warp reduction), then normalize, rotate and store; the head stays in L1
// between them.
#include "dtype.cuh"
#include "fastdiff/qk_norm_rope.h"
#include "launch.cuh"

namespace fastdiff {
namespace {

constexpr int kThreads = 128;

// W elements of a head from element i: one vector (VEC: dense and aligned), else W / 2 pairs
// through the stride, the element past an odd head dim reading as 0.
template <typename T, int W, bool VEC>
__device__ __forceinline__ void load(const T* x, int64_t i, int64_t stride, int64_t d, float (&v)[W]) {
  if constexpr (VEC) {
    Vec<T, W> a = *reinterpret_cast<const Vec<T, W>*>(x + i);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = to_f32(a.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = i + j < d ? to_f32(x[(i + j) * stride]) : 0.f;
  }
}

template <typename T, int W, bool VEC>
__device__ __forceinline__ void store(T* x, int64_t i, int64_t stride, int64_t d, const float (&v)[W]) {
  if constexpr (VEC) {
    Vec<T, W> a;
#pragma unroll
    for (int j = 0; j < W; ++j) a.v[j] = from_f32<T>(v[j]);
    *reinterpret_cast<Vec<T, W>*>(x + i) = a;
  } else {
#pragma unroll
    for (int j = 0; j < W; ++j)
      if (i + j < d) x[(i + j) * stride] = from_f32<T>(v[j]);
  }
}

// One head of d elements, `stride` apart, by one warp: each lane takes runs of W (even) elements.
template <typename T, int W, bool VEC> __device__ void norm_rope_head(T* x, int64_t stride, const float* w,
                                                                      const float* cos_row, const float* sin_row,
                                                                      int64_t d, float eps) {
  const int lane = threadIdx.x % 32;
  float ss = 0.f;
  for (int64_t i = lane * int64_t(W); i < d; i += 32 * W) {
    float v[W];
    load<T, W, VEC>(x, i, stride, d, v);
#pragma unroll
    for (int j = 0; j < W; ++j) ss += v[j] * v[j];
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(~0u, ss, o);
  const float rstd = rsqrtf(ss / d + eps);
  for (int64_t i = lane * int64_t(W); i < d; i += 32 * W) {
    float v[W];
    load<T, W, VEC>(x, i, stride, d, v);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] *= rstd * (i + j < d ? w[i + j] : 0.f);
    if (cos_row) {
#pragma unroll
      for (int j = 0; j < W; j += 2) {  // (a, b) -> (a cos - b sin, b cos + a sin)
        const float c = cos_row[i + j], s = sin_row[i + j], a = v[j], b = v[j + 1];
        v[j] = a * c - b * s;
        v[j + 1] = b * c + a * s;
      }
    }
    store<T, W, VEC>(x, i, stride, d, v);
  }
}

template <typename T, int W, bool VEC> __global__ void __launch_bounds__(kThreads)
    qk_norm_rope_kernel(QKNormRopeArgs a) {
  const int64_t token = blockIdx.x, b = token / a.seq_len, s = token % a.seq_len;
  const float* cos_row = a.cos ? a.cos + s * a.head_dim : nullptr;
  const float* sin_row = a.sin ? a.sin + s * a.head_dim : nullptr;
  const int warps = blockDim.x / 32;
  for (int64_t u = threadIdx.x / 32; u < 2 * a.heads; u += warps) {  // q's heads, then k's
    const bool is_q = u < a.heads;
    const int64_t head = is_q ? u : u - a.heads;
    const HeadStrides& st = is_q ? a.q_strides : a.k_strides;
    T* x = static_cast<T*>(is_q ? a.q : a.k) + b * st.batch + s * st.seq + head * st.head;
    norm_rope_head<T, W, VEC>(x, st.dim, is_q ? a.q_weight : a.k_weight, cos_row, sin_row, a.head_dim, a.eps);
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
    constexpr int V = kVec<T>;
    auto dense = [&](const void* p, const HeadStrides& st) {
      return st.dim == 1 && reinterpret_cast<uintptr_t>(p) % (V * sizeof(T)) == 0 && st.batch % V == 0 &&
             st.seq % V == 0 && st.head % V == 0;
    };
    const bool vec = a.head_dim % V == 0 && dense(a.q, a.q_strides) && dense(a.k, a.k_strides);
    const int64_t want = 2 * a.heads * 32;  // a warp per head of q and k, at most kThreads
    return launch_kernel(vec ? qk_norm_rope_kernel<T, V, true> : qk_norm_rope_kernel<T, 2, false>,
                         dim3(unsigned(tokens)), int(want < kThreads ? want : kThreads), 0, stream, a);
  });
}

}  // namespace fastdiff
