// Classifier-free guidance and the fused scheduler update (see fastdiff/ops/guidance.py).
// All buffers are dense and share one memory layout; n counts the elements of x.
#pragma once
#include <optional>

#include "fastdiff/common.h"

namespace fastdiff {

// out = uncond + scale * (cond - uncond), n elements, fp32 arithmetic.
Status cfg_combine(const void* uncond, const void* cond, void* out, int64_t n, DType dtype, float scale,
                   cudaStream_t stream);

// (p, q, a, b, c, e) of  d = p x + q m,  x_next = a x + b d + c prev + e noise.
struct SamplerCoeffs {
  float p, q, a, b, c, e;
};

// One scheduler update in one pass, fp32 arithmetic: reads x, model_out, prev and noise once,
// writes x_next and d once.
//   m      = model_out, or uncond + guidance_scale * (cond - uncond) when guided
//   d      = p x + q m
//   x_next = a x + b d + c prev + e noise
struct SamplerStepArgs {
  const void* x = nullptr;          // n elements of `dtype`
  const void* model_out = nullptr;  // n elements of `model_dtype`, or 2n ([uncond; cond]) when guided
  const void* prev = nullptr;       // n elements of `dtype`, or null (the c term is dropped)
  const void* noise = nullptr;      // n elements of `dtype`, or null (the e term is dropped)
  void* x_next = nullptr;           // n elements of `dtype`
  void* d = nullptr;                // n elements of `dtype`: the data prediction
  int64_t n = 0;
  DType dtype = DType::F16;
  std::optional<DType> model_dtype;     // unset: dtype
  std::optional<float> guidance_scale;  // set: classifier-free guidance on [uncond; cond]
  SamplerCoeffs coeffs{};
  // 6 fp32 in device memory, read by the kernel in place of `coeffs` when not null, so that a
  // captured CUDA graph replays with new coefficients.
  const float* device_coeffs = nullptr;
};

Status sampler_step(const SamplerStepArgs& args, cudaStream_t stream);

}  // namespace fastdiff
