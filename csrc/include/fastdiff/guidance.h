// Classifier-free guidance and the fused scheduler update (see fastdiff/ops/guidance.py).
// All buffers are dense and share one memory layout; n counts the elements of x.
#pragma once
#include "fastdiff/common.h"

namespace fastdiff {

// out = uncond + scale * (cond - uncond), n elements, fp32 arithmetic.
Status cfg_combine(const void* uncond, const void* cond, void* out, int64_t n, DType dtype, float scale,
                   cudaStream_t stream);

// (p, q, a, b, c, e) of  d = p x + q m,  x_next = a x + b d + c prev + e noise.
struct SamplerCoeffs {
  float p, q, a, b, c, e;
};

// One scheduler update in one pass: reads x, model_out, prev, noise once, writes x_next and d
// once (all of `dtype` but model_out, which is of `model_dtype`). model_out holds n elements,
// or 2n ([uncond; cond]) when `guided`: then m = uncond + guidance_scale * (cond - uncond).
// prev and noise may be null. When device_coeffs (6 fp32 in device memory) is not null it
// replaces `coeffs`, so a captured CUDA graph can be replayed with new coefficients.
Status sampler_step(const void* x, const void* model_out, DType model_dtype, const void* prev, const void* noise,
                    void* x_next, void* d, int64_t n, DType dtype, SamplerCoeffs coeffs,
                    const float* device_coeffs, bool guided, float guidance_scale, cudaStream_t stream);

}  // namespace fastdiff
