// The CUDA programming model on the CPU, for the kernels in csrc/*.cu compiled by a host C++17
// compiler (see README, "Kernel development without a GPU"). The shim headers beside this one
// (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h) stand in for the toolkit's.
//
// A launch runs its blocks one after another under one lock; a block's threads run at once as
// real threads that meet at real barriers, in warps of 32 that exchange values (shuffles, votes,
// tensor-core fragments) through per-warp barriers. So a missing __syncthreads gives a wrong
// result or a ThreadSanitizer report, and an access past a buffer or past the dynamic shared
// memory an AddressSanitizer report. Static __shared__ variables are function-local statics
// (blocks do not overlap); dynamic shared memory is a fresh allocation of exactly the launch's
// size per block, filled with 0xff bytes (NaN in every float type) so reads of unwritten shared
// memory show. Not modelled: timing, occupancy, the memory model's weaker orderings (every access
// here is sequentially consistent between barriers), and warps that diverge within a shuffle.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- qualifiers and built-in variables ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};

extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

// ---- runtime API ----
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchOutOfResources = 701,
};
using cudaError = cudaError_t;
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaDeviceAttr : int {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrReservedSharedMemoryPerBlock = 111,
};
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <typename T> cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();

namespace cuda_host {
cudaError_t set_max_dynamic_smem(const void* kernel, int bytes);
// Runs body once per thread of every block of the grid; the launch's error, if any, is kept for
// cudaGetLastError as a real launch's is.
void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);
void syncthreads(const char* file, int line);
void syncwarp();
// Each lane of the calling warp offers `bytes` (at most kExchangeBytes) and gets back where all
// 32 lanes' offers lie, lane i's at i * kExchangeBytes, readable until this warp's next exchange.
constexpr size_t kExchangeBytes = 64;
const unsigned char* warp_exchange(const void* mine, size_t bytes);
float4* dynamic_smem();  // the block's dynamic shared memory
}  // namespace cuda_host

template <typename Kernel> cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return cuda_host::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
}

// ---- barriers, shuffles, votes ----
// The file and line name the barrier, so that a test can skip one (FASTDIFF_EMULATE_DROP_BARRIER).
#define __syncthreads() ::cuda_host::syncthreads(__FILE__, __LINE__)
inline void __syncwarp(unsigned = 0xffffffffu) { cuda_host::syncwarp(); }

namespace cuda_host {
template <typename T> T lane_value(const unsigned char* all, int lane) {
  T v;
  std::memcpy(&v, all + size_t(lane) * kExchangeBytes, sizeof(T));
  return v;
}
inline int lane_id() { return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32; }
}  // namespace cuda_host

template <typename T> T __shfl_sync(unsigned, T var, int src, int width = 32) {
  const int lane = cuda_host::lane_id();
  return cuda_host::lane_value<T>(cuda_host::warp_exchange(&var, sizeof(T)), (lane & ~(width - 1)) + (src % width));
}
template <typename T> T __shfl_xor_sync(unsigned, T var, int mask, int width = 32) {
  const int lane = cuda_host::lane_id(), src = lane ^ mask;
  const unsigned char* all = cuda_host::warp_exchange(&var, sizeof(T));
  return src / width == lane / width ? cuda_host::lane_value<T>(all, src) : var;
}
template <typename T> T __shfl_down_sync(unsigned, T var, unsigned delta, int width = 32) {
  const int lane = cuda_host::lane_id(), src = lane + int(delta);
  const unsigned char* all = cuda_host::warp_exchange(&var, sizeof(T));
  return src / width == lane / width ? cuda_host::lane_value<T>(all, src) : var;
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  const unsigned char* all = cuda_host::warp_exchange(&pred, sizeof pred);
  unsigned out = 0;
  for (int i = 0; i < 32; ++i)
    if ((mask >> i & 1) && cuda_host::lane_value<int>(all, i)) out |= 1u << i;
  return out;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// ---- math ----
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
#define FASTDIFF_HOST_MINMAX(T)                    \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
FASTDIFF_HOST_MINMAX(int)
FASTDIFF_HOST_MINMAX(unsigned int)
FASTDIFF_HOST_MINMAX(long long)
FASTDIFF_HOST_MINMAX(unsigned long long)
FASTDIFF_HOST_MINMAX(long)
FASTDIFF_HOST_MINMAX(unsigned long)
#undef FASTDIFF_HOST_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }

// ---- half and bfloat16: storage types with the toolkit's conversions, rounded to nearest even ----
struct __half {
  uint16_t __x;
};
struct __nv_bfloat16 {
  uint16_t __x;
};
struct alignas(4) __half2 {
  __half x, y;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

namespace cuda_host {
inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t half_bits(float f) {
  const uint32_t x = bits_of(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u);   // NaN, quiet
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // 65520 and up (and inf) round to inf
  if (ax < 0x38800000u)  // below 2^-14: a subnormal half, in units of 2^-24 (the scaling is exact)
    return uint16_t(sign | uint32_t(std::nearbyint(float_of(ax) * 16777216.f)));
  const uint32_t r = ax - 0x38000000u;  // rebias the exponent (127 -> 15), then round 23 -> 10 bits
  return uint16_t(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
}
inline float half_value(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return float_of(bits_of(float(m) * 5.9604644775390625e-8f) | sign);  // m * 2^-24
  return float_of(sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112) << 23) | (m << 13)));
}
inline uint16_t bfloat16_bits(float f) {
  const uint32_t x = bits_of(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // NaN, quiet
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
}  // namespace cuda_host

inline float __half2float(__half h) { return cuda_host::half_value(h.__x); }
inline __half __float2half_rn(float f) { return {cuda_host::half_bits(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return cuda_host::float_of(uint32_t(h.__x) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {cuda_host::bfloat16_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline __half2 __floats2half2_rn(float lo, float hi) { return {__float2half_rn(lo), __float2half_rn(hi)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return {__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}

// ---- tensor cores ----
namespace cuda_host {
inline float element(__half, uint16_t bits) { return half_value(bits); }
inline float element(__nv_bfloat16, uint16_t bits) { return float_of(uint32_t(bits) << 16); }

// D = A B + C of mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 for one warp,
// from the fragments the PTX ISA lays out per lane (group g = lane / 4, t = lane % 4):
//   a[0]: A[g][2t..2t+1]      a[1]: A[g+8][2t..2t+1]   a[2]: A[g][2t+8..2t+9]   a[3]: A[g+8][2t+8..2t+9]
//   b0:   B[2t..2t+1][g]      b1:   B[2t+8..2t+9][g]
//   c:    C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]
// (the lower 16 bits of a register hold the lower index). The lanes exchange their fragments;
// each computes its own four outputs, products exact and summed in fp32 in k order.
template <typename T> void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  struct Fragments {
    uint32_t a[4], b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  const unsigned char* all = warp_exchange(&mine, sizeof mine);
  auto half_of = [](uint32_t word, int hi) { return uint16_t(hi ? word >> 16 : word & 0xffffu); };
  auto A = [&](int row, int k) {  // the lane holding A[row][k] and which of its registers
    const Fragments f = lane_value<Fragments>(all, (row % 8) * 4 + (k % 8) / 2);
    return element(T{}, half_of(f.a[(row >= 8) + 2 * (k >= 8)], k & 1));
  };
  auto B = [&](int k, int col) {
    const Fragments f = lane_value<Fragments>(all, col * 4 + (k % 8) / 2);
    return element(T{}, half_of(f.b[k >= 8], k & 1));
  };
  const int lane = lane_id(), g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e / 2), col = 2 * t + (e & 1);
    float acc = c[e];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    c[e] = acc;
  }
}
}  // namespace cuda_host

// ---- launch ----
namespace cuda_host {
// kernel<<<grid, block, smem, stream>>>(args...): the arguments converted to the kernel's
// parameter types once, as a launch copies them, then handed by value to every thread.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t, A&&... args) {
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  run_grid(reinterpret_cast<const void*>(kernel), grid, block, smem, [&] { std::apply(kernel, params); });
}
}  // namespace cuda_host
