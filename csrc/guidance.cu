// cfg_combine and sampler_step: streaming elementwise kernels, one read of each input and one
// write of each output, fp32 arithmetic. When every pointer is 16-byte aligned the body moves
// 16-byte vectors and a scalar loop takes the ragged tail; otherwise the whole range is scalar.
// A grid-stride loop sized to the SM count keeps the grid small for tiny latents.
#include <type_traits>

#include "dtype.cuh"
#include "fastdiff/guidance.h"
#include "launch.cuh"

namespace fastdiff {
namespace {

constexpr int kThreads = 256;

// Runs f(i0, count) over [0, n): vectors of V elements over the aligned body when VEC, scalars
// (count = 1) over the rest.
template <bool VEC, int V, typename F> __device__ __forceinline__ void for_each(int64_t n, F&& f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x, first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  int64_t tail = 0;
  if (VEC) {
    const int64_t nv = n / V;
    for (int64_t v = first; v < nv; v += stride) f(v * V, std::integral_constant<int, V>{});
    tail = nv * V;
  }
  for (int64_t i = tail + first; i < n; i += stride) f(i, std::integral_constant<int, 1>{});
}

template <typename T, bool VEC> __global__ void __launch_bounds__(kThreads)
    cfg_combine_kernel(const T* __restrict__ u, const T* __restrict__ c, T* __restrict__ out, int64_t n, float scale) {
  for_each<VEC, kVec<T>>(n, [&](int64_t i, auto w) {
    constexpr int W = decltype(w)::value;
    Vec<T, W> uv = *reinterpret_cast<const Vec<T, W>*>(u + i), cv = *reinterpret_cast<const Vec<T, W>*>(c + i), o;
#pragma unroll
    for (int j = 0; j < W; ++j) {
      float uf = to_f32(uv.v[j]);
      o.v[j] = from_f32<T>(uf + scale * (to_f32(cv.v[j]) - uf));
    }
    *reinterpret_cast<Vec<T, W>*>(out + i) = o;
  });
}

template <typename T, typename M, bool VEC> __global__ void __launch_bounds__(kThreads)
    sampler_step_kernel(const T* __restrict__ x, const M* __restrict__ m, const T* __restrict__ prev,
                        const T* __restrict__ noise, T* __restrict__ x_next, T* __restrict__ d_out, int64_t n,
                        SamplerCoeffs k, const float* __restrict__ device_coeffs, bool guided, float s) {
  if (device_coeffs)
    k = {device_coeffs[0], device_coeffs[1], device_coeffs[2], device_coeffs[3], device_coeffs[4], device_coeffs[5]};
  for_each<VEC, kVec<T>>(n, [&](int64_t i, auto w) {
    constexpr int W = decltype(w)::value;
    using VT = Vec<T, W>;
    using VM = Vec<M, W>;
    VT xv = *reinterpret_cast<const VT*>(x + i), pv, nv, xo, dout;
    VM mv = *reinterpret_cast<const VM*>(m + i), cv;
    if (guided) cv = *reinterpret_cast<const VM*>(m + n + i);  // [uncond; cond]: cond sits n further
    if (prev) pv = *reinterpret_cast<const VT*>(prev + i);
    if (noise) nv = *reinterpret_cast<const VT*>(noise + i);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      float xf = to_f32(xv.v[j]), mf = to_f32(mv.v[j]);
      if (guided) mf += s * (to_f32(cv.v[j]) - mf);
      float d = k.p * xf + k.q * mf;
      float xn = k.a * xf + k.b * d;
      if (prev) xn += k.c * to_f32(pv.v[j]);
      if (noise) xn += k.e * to_f32(nv.v[j]);
      xo.v[j] = from_f32<T>(xn);
      dout.v[j] = from_f32<T>(d);
    }
    *reinterpret_cast<VT*>(x_next + i) = xo;
    *reinterpret_cast<VT*>(d_out + i) = dout;
  });
}

}  // namespace

Status cfg_combine(const void* uncond, const void* cond, void* out, int64_t n, DType dtype, float scale,
                   cudaStream_t stream) {
  if (n < 0) return Status::invalid("n must be >= 0");
  if (n == 0) return {};
  return dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    int blocks = 0;
    Status st = grid_stride_blocks((n + kVec<T> - 1) / kVec<T>, kThreads, &blocks);
    if (!st.ok()) return st;
    auto u = static_cast<const T*>(uncond), c = static_cast<const T*>(cond);
    auto o = static_cast<T*>(out);
    auto kernel =
        aligned16(u) && aligned16(c) && aligned16(o) ? cfg_combine_kernel<T, true> : cfg_combine_kernel<T, false>;
    return launch_kernel(kernel, blocks, kThreads, 0, stream, u, c, o, n, scale);
  });
}

Status sampler_step(const SamplerStepArgs& a, cudaStream_t stream) {
  if (a.n < 0) return Status::invalid("n must be >= 0");
  if (a.n == 0) return {};
  const int64_t n = a.n;
  const bool guided = a.guidance_scale.has_value();
  const float guidance_scale = a.guidance_scale.value_or(0.f);
  return dispatch_dtype(a.dtype, [&](auto t) {
    using T = decltype(t);
    return dispatch_dtype(a.model_dtype.value_or(a.dtype), [&](auto mt) {
      using M = decltype(mt);
      int blocks = 0;
      Status st = grid_stride_blocks((n + kVec<T> - 1) / kVec<T>, kThreads, &blocks);
      if (!st.ok()) return st;
      auto xp = static_cast<const T*>(a.x), pp = static_cast<const T*>(a.prev), np = static_cast<const T*>(a.noise);
      auto mp = static_cast<const M*>(a.model_out);
      auto xo = static_cast<T*>(a.x_next), dp = static_cast<T*>(a.d);
      // A vector of kVec<T> model elements spans up to 32 bytes; cond (n further) must stay aligned too.
      const uintptr_t mvec = sizeof(M) * kVec<T>;
      bool vec = aligned16(xp) && aligned16(xo) && aligned16(dp) && (!pp || aligned16(pp)) && (!np || aligned16(np)) &&
                 reinterpret_cast<uintptr_t>(mp) % mvec == 0 && (!guided || n % kVec<T> == 0);
      auto kernel = vec ? sampler_step_kernel<T, M, true> : sampler_step_kernel<T, M, false>;
      return launch_kernel(kernel, blocks, kThreads, 0, stream, xp, mp, pp, np, xo, dp, n, a.coeffs, a.device_coeffs,
                           guided, guidance_scale);
    });
  });
}

}  // namespace fastdiff
