// Attention on tensor cores (mma.sync m16n8k16, fp32 accumulation), sm_80 and later; fastest
// for short key/value sequences (cross-attention to text), correct for any.
//
// A block takes 64 queries of one (batch, head): four warps of 16 rows. It stages Q, then as many
// keys of K and V as fit its shared-memory budget (all of them for text conditioning: 77 keys at
// head dim 160 fit; longer sequences stream through in chunks), zero-padded to the MMA tile so no
// masked copy is ever made in memory. Each warp computes S = Q K^T over 32 keys at a time, keeps
// the softmax exact with a running fp32 max and sum (one pass, no score matrix in memory), and
// accumulates P V in fp32 registers.
// V is staged transposed so both MMAs read their B operand as one 32-bit word per register.
//
// Blocks are numbered linearly, query tile fastest, on grid axis x (2^31 - 1 blocks at most),
// spilling to axis y only past that, so any batch x heads x query tiles launches.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "device.cuh"
#include "dtype.cuh"
#include "fastdiff/attention.h"
#include "launch.cuh"

namespace fastdiff {
namespace {

constexpr int kWarps = 4, kRows = 16 * kWarps;  // queries per block
constexpr int kSub = 32;                        // keys per softmax step
// Speed policy: K and V chunks no larger than lets two blocks share an SM (see
// DeviceLimits::smem_budget: 113 KiB on sm_90, 81 KiB on sm_80).
constexpr int kBlocksPerSM = 2;
constexpr int64_t kMaxGridX = (int64_t(1) << 31) - 1, kMaxGridY = 65535;

// Two fp32 values as one register of T pairs, the lower index in the lower 16 bits.
template <typename T> struct Mma;
template <> struct Mma<__half> {
  __device__ static uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <> struct Mma<__nv_bfloat16> {
  __device__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

__device__ __forceinline__ uint32_t word(const void* p) { return *reinterpret_cast<const uint32_t*>(p); }

// rows x DP elements of a (seq, head_dim) slice into shared memory, zero beyond valid_rows and
// head_dim; row-major with row pitch `pitch`, or transposed (dst[d * pitch + row]).
template <typename T, int DP, bool TRANSPOSE> __device__ void stage(T* dst, int pitch, const T* src, int64_t row_stride,
                                                                    int rows, int valid_rows, int head_dim, bool vec) {
  if (vec) {  // 16-byte loads; head_dim is a multiple of 8
    constexpr int U = DP / 8;
    for (int u = threadIdx.x; u < rows * U; u += blockDim.x) {
      const int r = u / U, d = (u % U) * 8;
      Vec<T, 8> val{};
      if (r < valid_rows && d < head_dim) val = *reinterpret_cast<const Vec<T, 8>*>(src + r * row_stride + d);
      if (TRANSPOSE) {
#pragma unroll
        for (int e = 0; e < 8; ++e) dst[(d + e) * pitch + r] = val.v[e];
      } else {
        *reinterpret_cast<Vec<T, 8>*>(dst + r * pitch + d) = val;
      }
    }
  } else {
    for (int u = threadIdx.x; u < rows * DP; u += blockDim.x) {
      const int r = u / DP, d = u % DP;
      T val = r < valid_rows && d < head_dim ? src[r * row_stride + d] : from_f32<T>(0.f);
      dst[TRANSPOSE ? d * pitch + r : r * pitch + d] = val;
    }
  }
}

template <typename T, int DP> __global__ void __launch_bounds__(kWarps * 32)
    attention_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                     int heads, int seq_q, int seq_k, int head_dim, Strides3 qs, Strides3 ks, Strides3 vs,
                     float scale_log2, int chunk, int q_tiles, int64_t blocks, bool vec) {
  constexpr int QP = DP + 8;  // row pitches padded by 16 bytes: fragment reads hit distinct banks
  float4* smem = dynamic_smem();
  const int kp = DP + 8, vp = chunk + 8;
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = Qs + kRows * QP;
  T* Vt = Ks + chunk * kp;

  // block = (b * heads + h) * q_tiles + tile; the last grid row's blocks past `blocks` have no work
  const int64_t block = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  if (block >= blocks) return;  // the whole block leaves, before any barrier
  const int tile = int(block % q_tiles);
  const int64_t bh = block / q_tiles, b = bh / heads, h = bh % heads;
  const int q0 = tile * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  q += b * qs.batch + h * qs.head + int64_t(q0) * qs.seq;
  k += b * ks.batch + h * ks.head;
  v += b * vs.batch + h * vs.head;

  stage<T, DP, false>(Qs, QP, q, qs.seq, kRows, seq_q - q0, head_dim, vec);

  float o[DP / 8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  uint32_t qa[DP / 16][4];
  for (int c0 = 0; c0 < seq_k; c0 += chunk) {
    __syncthreads();  // the previous chunk is consumed
    stage<T, DP, false>(Ks, kp, k + int64_t(c0) * ks.seq, ks.seq, chunk, seq_k - c0, head_dim, vec);
    stage<T, DP, true>(Vt, vp, v + int64_t(c0) * vs.seq, vs.seq, chunk, seq_k - c0, head_dim, vec);
    __syncthreads();
    if (c0 == 0) {
      const T* qw = Qs + (warp * 16 + g) * QP + 2 * t;
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk)
        qa[kk][0] = word(qw + kk * 16), qa[kk][1] = word(qw + 8 * QP + kk * 16), qa[kk][2] = word(qw + kk * 16 + 8),
        qa[kk][3] = word(qw + 8 * QP + kk * 16 + 8);
    }
    for (int k0 = 0; k0 < chunk && c0 + k0 < seq_k; k0 += kSub) {
      float s[kSub / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk)
#pragma unroll
        for (int nt = 0; nt < kSub / 8; ++nt) {
          const T* kr = Ks + (k0 + nt * 8 + g) * kp + kk * 16 + 2 * t;
          mma_m16n8k16<T>(s[nt], qa[kk], word(kr), word(kr + 8));
        }
      // Scale into log2 units, mask keys past seq_k, and update the running max and sum per row
      // (row g in s[.][0..1], row g + 8 in s[.][2..3]; a row's values span the 4 lanes of a quad).
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kSub / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = c0 + k0 + nt * 8 + 2 * t + (e & 1);
          s[nt][e] = key < seq_k ? s[nt][e] * scale_log2 : -INFINITY;
          mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
        }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(~0u, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(~0u, mx[r], 2));
        const float m_new = fmaxf(m[r], mx[r]);  // finite: every step holds at least one key
        alpha[r] = exp2f(m[r] - m_new);
        m[r] = m_new;
        l[r] *= alpha[r];
      }
#pragma unroll
      for (int nt = 0; nt < kSub / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[nt][e] = exp2f(s[nt][e] - m[e / 2]);
          l[e / 2] += s[nt][e];
        }
#pragma unroll
      for (int nd = 0; nd < DP / 8; ++nd)
        o[nd][0] *= alpha[0], o[nd][1] *= alpha[0], o[nd][2] *= alpha[1], o[nd][3] *= alpha[1];
      // O += P V: the S accumulators of two key tiles are exactly one A fragment of P.
#pragma unroll
      for (int kk = 0; kk < kSub / 16; ++kk) {
        const uint32_t pa[4] = {Mma<T>::pack(s[2 * kk][0], s[2 * kk][1]), Mma<T>::pack(s[2 * kk][2], s[2 * kk][3]),
                                Mma<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                Mma<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int nd = 0; nd < DP / 8; ++nd) {
          const T* vr = Vt + (nd * 8 + g) * vp + k0 + kk * 16 + 2 * t;
          mma_m16n8k16<T>(o[nd], pa, word(vr), word(vr + 8));
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(~0u, l[r], 1);
    l[r] += __shfl_xor_sync(~0u, l[r], 2);
    const int row = q0 + warp * 16 + g + 8 * r;
    if (row >= seq_q) continue;
    T* dst = out + ((b * seq_q + row) * heads + h) * head_dim;
    const float inv = 1.f / l[r];
#pragma unroll
    for (int nd = 0; nd < DP / 8; ++nd) {
      const int d = nd * 8 + 2 * t;
      const float lo = o[nd][2 * r] * inv, hi = o[nd][2 * r + 1] * inv;
      if (d + 1 < head_dim && head_dim % 2 == 0) {
        *reinterpret_cast<uint32_t*>(dst + d) = Mma<T>::pack(lo, hi);
      } else {
        if (d < head_dim) dst[d] = from_f32<T>(lo);
        if (d + 1 < head_dim) dst[d + 1] = from_f32<T>(hi);
      }
    }
  }
}

template <typename T, int DP>
Status launch(const AttentionArgs& a, Strides3 qs, Strides3 ks, Strides3 vs, float scale, cudaStream_t stream) {
  auto q = static_cast<const T*>(a.q), k = static_cast<const T*>(a.k), v = static_cast<const T*>(a.v);
  auto out = static_cast<T*>(a.out);
  // Keys per staged chunk: all of them when they fit the budget, else the most that do (a
  // multiple of kSub, so the softmax steps, and hence the numerics, do not depend on it).
  DeviceLimits dev;
  Status st = device_limits(&dev);
  if (!st.ok()) return st;
  const int64_t budget = dev.smem_budget(kBlocksPerSM);
  const int64_t fixed = int64_t(kRows) * (DP + 8) * sizeof(T), per_key = (2 * DP + 8) * sizeof(T);
  int64_t chunk = (budget - fixed - 8 * DP * int64_t(sizeof(T))) / per_key / kSub * kSub;
  if (chunk < kSub) return Status::invalid("the GPU has too little shared memory per block for this head_dim");
  const int64_t all = (a.seq_k + kSub - 1) / kSub * kSub;
  chunk = chunk < all ? chunk : all;
  const size_t smem = size_t(fixed + chunk * (DP + 8) * sizeof(T) + DP * (chunk + 8) * sizeof(T));
  auto kernel = attention_kernel<T, DP>;
  st = allow_dynamic_smem(kernel, smem, dev);
  if (!st.ok()) return st;
  auto mult8 = [](Strides3 s) { return s.batch % 8 == 0 && s.seq % 8 == 0 && s.head % 8 == 0; };
  const bool vec =
      a.head_dim % 8 == 0 && mult8(qs) && mult8(ks) && mult8(vs) && aligned16(q) && aligned16(k) && aligned16(v);
  const int64_t q_tiles = (a.seq_q + kRows - 1) / kRows, blocks = q_tiles * a.batch * a.heads;
  const int64_t rows = (blocks + kMaxGridX - 1) / kMaxGridX;  // grid y
  if (rows > kMaxGridY) return Status::invalid("batch x heads x ceil(seq_q / 64) must be at most 65535 x (2^31 - 1)");
  const dim3 grid(unsigned((blocks + rows - 1) / rows), unsigned(rows));
  return launch_kernel(kernel, grid, kWarps * 32, smem, stream, q, k, v, out, int(a.heads), int(a.seq_q), int(a.seq_k),
                       int(a.head_dim), qs, ks, vs, scale * 1.4426950408889634f, int(chunk), int(q_tiles), blocks, vec);
}

// Launches the kernel of the smallest padded head dim that holds head_dim.
template <typename T>
Status by_head_dim(const AttentionArgs& a, Strides3 qs, Strides3 ks, Strides3 vs, float scale, cudaStream_t stream) {
#define FD_ATTENTION_CASE(DP) \
  if (a.head_dim <= DP) return launch<T, DP>(a, qs, ks, vs, scale, stream);
  FD_ATTENTION_CASE(48)
  FD_ATTENTION_CASE(64)
  FD_ATTENTION_CASE(80)
  FD_ATTENTION_CASE(96)
  FD_ATTENTION_CASE(128)
  FD_ATTENTION_CASE(160)
#undef FD_ATTENTION_CASE
  return Status::invalid("head_dim must be at most 160");
}

static_assert(kAttentionMaxHeadDim == 160, "by_head_dim instantiates kernels up to head_dim 160");

Strides3 contiguous(int64_t seq, int64_t heads, int64_t head_dim) {
  return {seq * heads * head_dim, heads * head_dim, head_dim};
}

}  // namespace

Status attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.batch < 0 || a.heads < 0 || a.seq_q < 0 || a.seq_k < kAttentionMinSeqK || a.head_dim < kAttentionMinHeadDim ||
      a.head_dim > kAttentionMaxHeadDim)
    return Status::invalid("expected seq_k >= 1 and 1 <= head_dim <= 160");
  if (a.seq_q > kAttentionMaxSeq || a.seq_k > kAttentionMaxSeq)
    return Status::invalid("sequences must be shorter than 2^31");
  if (a.batch == 0 || a.heads == 0 || a.seq_q == 0) return {};
  const Strides3 qs = a.q_strides.value_or(contiguous(a.seq_q, a.heads, a.head_dim));
  const Strides3 ks = a.k_strides.value_or(contiguous(a.seq_k, a.heads, a.head_dim));
  const Strides3 vs = a.v_strides.value_or(contiguous(a.seq_k, a.heads, a.head_dim));
  const float scale = a.scale ? *a.scale : float(1.0 / std::sqrt(double(a.head_dim)));
  return dispatch_dtype16(a.dtype, [&](auto t) { return by_head_dim<decltype(t)>(a, qs, ks, vs, scale, stream); });
}

}  // namespace fastdiff
