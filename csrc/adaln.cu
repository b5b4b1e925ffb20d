// adaln: one block per (batch, row), LayerNorm statistics in fp32 by two passes over the row (the
// mean, then the squared deviations), then the modulation; gated, the first pass computes
// h = residual + gate * x and writes it, and the later passes read h back (each thread reads the
// elements it wrote). The row stays in L1 between passes. When every tensor's columns are dense
// and 16-byte aligned the passes move 16-byte vectors; otherwise single elements through strides.
// The statistics are those of the row minus its first value (the pivot), exact where the row lies
// within a factor 2 of it, so a mean large against the spread loses no digits in the sums.
#include "dtype.cuh"
#include "fastdiff/adaln.h"
#include "launch.cuh"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;

// The sum over the block, returned to every thread.
__device__ float block_sum(float v) {
  __shared__ float warps[32];
  __shared__ float total;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warps[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? warps[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
    if (lane == 0) total = v;
  }
  __syncthreads();
  const float out = total;
  __syncthreads();  // total is reused by the next call
  return out;
}

// W elements from column i of a row (W > 1: dense and aligned columns, one vector).
template <int W, typename T> __device__ __forceinline__ void load(const T* row, int64_t i, int64_t col, float (&v)[W]) {
  if constexpr (W > 1) {
    Vec<T, W> a = *reinterpret_cast<const Vec<T, W>*>(row + i);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = to_f32(a.v[j]);
  } else {
    v[0] = to_f32(row[i * col]);
  }
}

template <int W, typename T> __device__ __forceinline__ void store(T* row, int64_t i, const float (&v)[W]) {
  Vec<T, W> a;
#pragma unroll
  for (int j = 0; j < W; ++j) a.v[j] = from_f32<T>(v[j]);
  *reinterpret_cast<Vec<T, W>*>(row + i) = a;
}

template <typename T, int W, bool GATED> __global__ void __launch_bounds__(kThreads) adaln_kernel(AdaLNArgs a) {
  const int64_t r = blockIdx.x, b = r / a.rows, t = r % a.rows, d = a.dim;
  const RowStrides xs = a.x_strides, rs = a.residual_strides;
  const T* x = static_cast<const T*>(a.x) + b * xs.batch + t * xs.row;
  const T* res = static_cast<const T*>(a.residual) + (GATED ? b * rs.batch + t * rs.row : 0);
  const T* gate = static_cast<const T*>(a.gate) + (GATED ? b * a.gate_strides.batch : 0);
  const T* shift = static_cast<const T*>(a.shift) + b * a.shift_strides.batch;
  const T* scale = static_cast<const T*>(a.scale) + b * a.scale_strides.batch;
  T* h = static_cast<T*>(a.h) + (GATED ? r * d : 0);
  T* y = static_cast<T*>(a.y) + r * d;
  const int64_t step = int64_t(blockDim.x) * W;

  // h (x, or residual + gate * x rounded to T) at column i; with a view of the stored h when gated
  auto value = [&](int64_t i, float (&v)[W], bool first) {
    if (GATED && !first) return load<W>(static_cast<const T*>(h), i, 1, v);
    load<W>(x, i, xs.col, v);
    if (GATED) {
      float rv[W], gv[W];
      load<W>(res, i, rs.col, rv);
      load<W>(gate, i, a.gate_strides.col, gv);
#pragma unroll
      for (int j = 0; j < W; ++j) v[j] = to_f32(from_f32<T>(rv[j] + gv[j] * v[j]));
      store<W>(h, i, v);
    }
  };

  // the pivot, computed alike by every thread (gated: as the first pass computes h there)
  float pivot[1];
  load<1>(x, 0, xs.col, pivot);
  if (GATED) {
    float r0[1], g0[1];
    load<1>(res, 0, rs.col, r0);
    load<1>(gate, 0, a.gate_strides.col, g0);
    pivot[0] = to_f32(from_f32<T>(r0[0] + g0[0] * pivot[0]));
  }
  float sum = 0.f;
  for (int64_t i = threadIdx.x * int64_t(W); i < d; i += step) {
    float v[W];
    value(i, v, true);
#pragma unroll
    for (int j = 0; j < W; ++j) sum += v[j] - pivot[0];
  }
  const float mean = block_sum(sum) / d;  // of the row minus the pivot
  float m2 = 0.f;
  for (int64_t i = threadIdx.x * int64_t(W); i < d; i += step) {
    float v[W];
    value(i, v, false);
#pragma unroll
    for (int j = 0; j < W; ++j) m2 += (v[j] - pivot[0] - mean) * (v[j] - pivot[0] - mean);
  }
  const float rstd = rsqrtf(block_sum(m2) / d + a.eps);
  for (int64_t i = threadIdx.x * int64_t(W); i < d; i += step) {
    float v[W], sh[W], sc[W];
    value(i, v, false);
    load<W>(shift, i, a.shift_strides.col, sh);
    load<W>(scale, i, a.scale_strides.col, sc);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = (v[j] - pivot[0] - mean) * rstd * (1.f + sc[j]) + sh[j];
    store<W>(y, i, v);
  }
}

// Whether the columns of a row at p, rows `row_stride` apart and `col` apart, move as vectors of W.
template <typename T, int W> bool vectorizable(const void* p, int64_t batch, int64_t row, int64_t col) {
  return col == 1 && reinterpret_cast<uintptr_t>(p) % (W * sizeof(T)) == 0 && batch % W == 0 && row % W == 0;
}

}  // namespace

Status adaln(const AdaLNArgs& a, cudaStream_t stream) {
  if (a.batch < 0 || a.rows < 0 || a.dim < 0) return Status::invalid("batch, rows and dim must be >= 0");
  if (!a.x || !a.shift || !a.scale || !a.y) return Status::invalid("x, shift, scale and y must not be null");
  const bool gated = a.gate != nullptr;
  if (gated && (!a.residual || !a.h)) return Status::invalid("a gate needs residual and h");
  const int64_t rows = a.batch * a.rows;
  if (rows == 0 || a.dim == 0) return {};
  if (rows > 0x7fffffff) return Status::invalid("batch * rows must be below 2^31");
  return dispatch_dtype(a.dtype, [&](auto t) {
    using T = decltype(t);
    constexpr int V = kVec<T>;
    bool vec = a.dim % V == 0 && vectorizable<T, V>(a.x, a.x_strides.batch, a.x_strides.row, a.x_strides.col) &&
               vectorizable<T, V>(a.shift, a.shift_strides.batch, 0, a.shift_strides.col) &&
               vectorizable<T, V>(a.scale, a.scale_strides.batch, 0, a.scale_strides.col) && aligned16(a.y);
    if (gated)
      vec = vec && aligned16(a.h) && vectorizable<T, V>(a.gate, a.gate_strides.batch, 0, a.gate_strides.col) &&
            vectorizable<T, V>(a.residual, a.residual_strides.batch, a.residual_strides.row, a.residual_strides.col);
    const int64_t per_thread = vec ? V : 1;
    const int64_t want = (a.dim / per_thread + 31) / 32 * 32;
    const int threads = int(want < kThreads ? want : kThreads);
    auto kernel = vec ? (gated ? adaln_kernel<T, V, true> : adaln_kernel<T, V, false>)
                      : (gated ? adaln_kernel<T, 1, true> : adaln_kernel<T, 1, false>);
    return launch_kernel(kernel, dim3(unsigned(rows)), threads, 0, stream, a);
  });
}

}  // namespace fastdiff
