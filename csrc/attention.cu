// Cross-attention for short key/value sequences on tensor cores (mma.sync m16n8k16, fp32
// accumulation), sm_80 and later.
//
// A block takes 64 queries of one (batch, head): four warps of 16 rows. It stages Q, then as many
// keys of K and V as fit its shared-memory budget (all of them for text conditioning: 77 keys at
// head dim 160 fit), zero-padded to the MMA tile so no masked copy is ever made in memory. Each
// warp computes S = Q K^T over 32 keys at a time, keeps the softmax exact with a running fp32
// max and sum (one pass, no score matrix in memory), and accumulates P V in fp32 registers.
// V is staged transposed so both MMAs read their B operand as one 32-bit word per register.
//
// Blocks are numbered linearly, query tile fastest, on grid axis x (2^31 - 1 blocks at most),
// spilling to axis y only past that, so any batch x heads x query tiles launches.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "dtype.cuh"
#include "fastdiff/attention.h"

namespace fastdiff {
namespace {

constexpr int kWarps = 4, kRows = 16 * kWarps;  // queries per block
constexpr int kSub = 32;                        // keys per softmax step
constexpr int kSmemBudget = 96 * 1024;
constexpr int64_t kMaxGridX = (int64_t(1) << 31) - 1, kMaxGridY = 65535;

template <typename T> struct Mma;
template <> struct Mma<__half> {
  __device__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ static uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <> struct Mma<__nv_bfloat16> {
  __device__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

__device__ __forceinline__ uint32_t word(const void* p) { return *reinterpret_cast<const uint32_t*>(p); }

// rows x DP elements of a (seq, head_dim) slice into shared memory, zero beyond valid_rows and
// head_dim; row-major with row pitch `pitch`, or transposed (dst[d * pitch + row]).
template <typename T, int DP, bool TRANSPOSE>
__device__ void stage(T* dst, int pitch, const T* src, int64_t row_stride, int rows, int valid_rows, int head_dim,
                      bool vec) {
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

template <typename T, int DP>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out, int heads,
    int seq_q, int seq_k, int head_dim, Strides3 qs, Strides3 ks, Strides3 vs, float scale_log2, int chunk,
    int q_tiles, int64_t blocks, bool vec) {
  constexpr int QP = DP + 8;  // row pitches padded by 16 bytes: fragment reads hit distinct banks
  extern __shared__ float4 smem[];
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
        qa[kk][0] = word(qw + kk * 16), qa[kk][1] = word(qw + 8 * QP + kk * 16),
        qa[kk][2] = word(qw + kk * 16 + 8), qa[kk][3] = word(qw + 8 * QP + kk * 16 + 8);
    }
    for (int k0 = 0; k0 < chunk && c0 + k0 < seq_k; k0 += kSub) {
      float s[kSub / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk)
#pragma unroll
        for (int nt = 0; nt < kSub / 8; ++nt) {
          const T* kr = Ks + (k0 + nt * 8 + g) * kp + kk * 16 + 2 * t;
          Mma<T>::run(s[nt], qa[kk], word(kr), word(kr + 8));
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
          Mma<T>::run(o[nd], pa, word(vr), word(vr + 8));
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
Status launch(const T* q, const T* k, const T* v, T* out, int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k,
              int64_t head_dim, Strides3 qs, Strides3 ks, Strides3 vs, float scale, cudaStream_t stream) {
  // Keys per staged chunk: all of them when they fit the budget, else the most that do.
  const int64_t fixed = int64_t(kRows) * (DP + 8) * sizeof(T), per_key = (2 * DP + 8) * sizeof(T);
  int64_t chunk = (kSmemBudget - fixed - 8 * DP * int64_t(sizeof(T))) / per_key / kSub * kSub;
  const int64_t all = (seq_k + kSub - 1) / kSub * kSub;
  chunk = chunk < all ? chunk : all;
  const size_t smem = size_t(fixed + chunk * (DP + 8) * sizeof(T) + DP * (chunk + 8) * sizeof(T));
  auto kernel = attention_kernel<T, DP>;
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return {err, nullptr};
  }
  auto mult8 = [](Strides3 s) { return s.batch % 8 == 0 && s.seq % 8 == 0 && s.head % 8 == 0; };
  const bool vec = head_dim % 8 == 0 && mult8(qs) && mult8(ks) && mult8(vs) && aligned16(q) && aligned16(k) &&
                   aligned16(v);
  const int64_t q_tiles = (seq_q + kRows - 1) / kRows, blocks = q_tiles * batch * heads;
  const int64_t rows = (blocks + kMaxGridX - 1) / kMaxGridX;  // grid y
  if (rows > kMaxGridY) return Status::invalid("batch x heads x ceil(seq_q / 64) must be at most 65535 x (2^31 - 1)");
  const dim3 grid(unsigned((blocks + rows - 1) / rows), unsigned(rows));
  kernel<<<grid, kWarps * 32, smem, stream>>>(q, k, v, out, int(heads), int(seq_q), int(seq_k), int(head_dim), qs, ks,
                                             vs, scale * 1.4426950408889634f, int(chunk), int(q_tiles), blocks, vec);
  return last_launch();
}

template <typename T>
Status by_head_dim(const T* q, const T* k, const T* v, T* out, int64_t batch, int64_t heads, int64_t seq_q,
                   int64_t seq_k, int64_t d, Strides3 qs, Strides3 ks, Strides3 vs, float scale, cudaStream_t stream) {
#define FD_ATTENTION_CASE(DP) \
  if (d <= DP) return launch<T, DP>(q, k, v, out, batch, heads, seq_q, seq_k, d, qs, ks, vs, scale, stream);
  FD_ATTENTION_CASE(48)
  FD_ATTENTION_CASE(64)
  FD_ATTENTION_CASE(80)
  FD_ATTENTION_CASE(96)
  FD_ATTENTION_CASE(128)
  FD_ATTENTION_CASE(160)
#undef FD_ATTENTION_CASE
  return Status::invalid("head_dim must be at most 160");
}

}  // namespace

Status attention(const void* q, const void* k, const void* v, void* out, int64_t batch, int64_t heads, int64_t seq_q,
                 int64_t seq_k, int64_t head_dim, Strides3 q_strides, Strides3 k_strides, Strides3 v_strides,
                 float scale, DType dtype, cudaStream_t stream) {
  if (batch < 0 || heads < 0 || seq_q < 0 || seq_k < 1 || head_dim < 1 || head_dim > 160)
    return Status::invalid("expected seq_k >= 1 and 1 <= head_dim <= 160");
  if (seq_q >= (int64_t(1) << 31) || seq_k >= (int64_t(1) << 31))
    return Status::invalid("sequences must be shorter than 2^31");
  if (batch == 0 || heads == 0 || seq_q == 0) return {};
  if (dtype == DType::F16)
    return by_head_dim(static_cast<const __half*>(q), static_cast<const __half*>(k), static_cast<const __half*>(v),
                       static_cast<__half*>(out), batch, heads, seq_q, seq_k, head_dim, q_strides, k_strides,
                       v_strides, scale, stream);
  if (dtype == DType::BF16)
    return by_head_dim(static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(k),
                       static_cast<const __nv_bfloat16*>(v), static_cast<__nv_bfloat16*>(out), batch, heads, seq_q,
                       seq_k, head_dim, q_strides, k_strides, v_strides, scale, stream);
  return Status::invalid("dtype must be f16 or bf16");
}

}  // namespace fastdiff
