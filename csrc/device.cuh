// The device helpers that have a second definition for the host build (csrc/host/cuda_host.h):
// what the CUDA compiler provides through inline PTX or extern shared arrays. Kernels call these
// and never branch on the build themselves.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fastdiff {

#ifdef __CUDACC__
// The block's dynamic shared memory.
__device__ __forceinline__ float4* dynamic_smem() {
  extern __shared__ float4 fastdiff_dynamic_smem[];
  return fastdiff_dynamic_smem;
}

// c += a b on tensor cores: mma.sync m16n8k16, A row-major, B column-major, fp32 accumulators, in
// the PTX ISA's fragment layout (written out in cuda_host.h's definition).
template <typename T> __device__ void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_m16n8k16<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#else
using cuda_host::dynamic_smem;
using cuda_host::mma_m16n8k16;
#endif

}  // namespace fastdiff
